"""Row chunks: the same values as one call, in as many calls as the byte budget asks for."""
from __future__ import annotations

import torch

from xportrait_core.row_chunks import in_row_chunks


def test_row_chunks_give_the_whole_result_within_the_budget():
    torch.manual_seed(0)
    a, b = torch.randn(11, 3), torch.randn(11, 3)
    calls = []

    def rowwise(x, y):
        calls.append(x.shape[0])
        return x * y + x.sum(dim=1, keepdim=True)

    whole = rowwise(a, b)
    for budget, most_rows in ((10**9, 11), (40, 4), (16, 1), (1, 1)):
        calls.clear()
        out = in_row_chunks(rowwise, (a, b), bytes_per_row=10, budget=budget)
        assert torch.equal(out, whole)
        assert sum(calls) == 11 and max(calls) <= most_rows, (budget, calls)
        assert max(calls) * 10 <= max(budget, 10), "a chunk's temporaries stay within the budget"
