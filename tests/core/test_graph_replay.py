"""GraphReplay off CUDA: every call runs eagerly (the recorded path is checked on the GPU by
bench/sampling_speed.py --cuda-graphs --check-levers, which prints the replayed run's difference)."""
from __future__ import annotations

import torch

from xportrait_core.graph_replay import GraphReplay, _layout


def test_cpu_calls_run_eagerly_and_record_nothing():
    replay = GraphReplay(warmup_calls=0)
    calls = []

    def run(inputs):
        calls.append(1)
        x, extra = inputs
        return x * 2 + extra["bias"]

    for value in (1.0, 2.0, 3.0):
        x = torch.full((2, 3), value)
        out = replay("unet", run, (x, {"bias": torch.ones(3), "note": None}))
        assert torch.equal(out, x * 2 + 1)
    assert len(calls) == 3 and replay.recorded == 0 and replay.replays == 0


def test_layout_tells_apart_everything_a_recording_freezes():
    a = torch.zeros(2, 3)
    assert _layout([a, None, 1]) == _layout([torch.ones(2, 3), None, 1])
    assert _layout([a]) != _layout([torch.zeros(3, 2)])
    assert _layout([a]) != _layout([a.t().contiguous().t()])  # same shape, other strides
    assert _layout([a]) != _layout([a.half()])
    assert _layout([a, 1]) != _layout([a, 2])
