"""ControlNet residual reuse across overlapping windows: the assembled residuals equal a fresh
computation for every window of the official schedule, each frame is computed once per call, and
the cache never holds more than the frames a later window still needs."""
from __future__ import annotations

import pytest
import torch

from xportrait_core.reference_bank import chunk_runs, position_runs
from xportrait_core.residual_reuse import WindowResidualCache, frames_needed_after
from xportrait_core.windows import official_windows, sliding_windows


def _residuals_of(frames, step):
    """Stand-in for a ControlNet: two residuals per frame, a function of the frame and the step only."""
    f = torch.tensor(frames, dtype=torch.float32).view(-1, 1, 1, 1)
    return [f * 10 + step + torch.zeros(len(frames), 3, 2, 2), -f - step + torch.zeros(len(frames), 5, 1, 1)]


@pytest.mark.parametrize("frames,schedule", [(60, "official"), (29, "official"), (40, "sliding"), (17, "official")])
def test_reuse_equals_fresh_per_window(frames, schedule):
    cache = WindowResidualCache()
    for step in range(3):
        windows = official_windows(frames, (7 * step + 5) % frames) if schedule == "official" else sliding_windows(frames)
        cache.begin(("call", step))
        computed = 0
        for index, window in enumerate(windows):
            fresh_at = cache.missing(window)
            fresh = _residuals_of([window[j] for j in fresh_at], step) if fresh_at else None
            computed += len(fresh_at)
            out = cache.assemble(window, fresh_at, fresh, frames_needed_after(windows, index))
            for got, want in zip(out, _residuals_of(window, step)):
                assert torch.equal(got, want)
            later = frames_needed_after(windows, index)
            seen = {f for w in windows[:index + 1] for f in w}
            assert len(cache) == len(seen & later)
        assert computed == frames, "each frame's residuals are computed once per call"


def test_new_call_forgets_the_previous_one():
    cache = WindowResidualCache()
    windows = official_windows(40, 0)
    cache.begin(1)
    cache.assemble(windows[0], list(range(16)), _residuals_of(windows[0], 0), frames_needed_after(windows, 0))
    assert len(cache) > 0
    cache.begin(2)
    assert cache.missing(windows[1]) == list(range(16))


def test_runs_of_chunks_and_positions():
    assert chunk_runs([1, 0], 32) == [(slice(0, 16), False), (slice(16, 32), True)]
    assert chunk_runs([0, 0, 1], 6) == [(slice(0, 4), True), (slice(4, 6), False)]
    assert position_runs([48, 49, 50, 0, 1, 5]) == [slice(48, 51), slice(0, 2), slice(5, 6)]
    with pytest.raises(ValueError, match="cannot be split"):
        chunk_runs([0, 1], 5)


def test_per_frame_bank_rows_follow_the_window_frames():
    from xportrait_core.reference_bank import per_frame_bank_rows
    assert per_frame_bank_rows(1, [5, 6, 7], 20) is None
    assert per_frame_bank_rows(20, [18, 19, 0, 1], 20) == [18, 19, 0, 1]
    with pytest.raises(ValueError, match="give one reference per driving frame"):
        per_frame_bank_rows(4, [0, 1], 20)
