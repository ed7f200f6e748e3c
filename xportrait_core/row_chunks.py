"""Row-wise work in chunks of bounded memory.

Feed-forwards and short-sequence attention compute every row (token, or batch entry) on its own,
so splitting the rows changes no value. Running them in chunks bounds the temporaries that a
whole X-Portrait window would otherwise hold at once.
"""
from __future__ import annotations

from typing import Callable

import torch


def in_row_chunks(fn: Callable[..., torch.Tensor], tensors: tuple[torch.Tensor, ...], bytes_per_row: int,
                  budget: int) -> torch.Tensor:
    """``fn(*tensors)`` over chunks of the tensors' leading rows, each chunk's temporaries
    (``bytes_per_row`` per row) within ``budget`` bytes; the results are concatenated."""
    rows = tensors[0].shape[0]
    size = max(1, budget // max(1, bytes_per_row))  # a single row over the budget still runs
    if size >= rows:
        return fn(*tensors)
    return torch.cat([fn(*(t[start:start + size] for t in tensors)) for start in range(0, rows, size)])
