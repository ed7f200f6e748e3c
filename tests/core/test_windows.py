"""Frame windows: the official schedule (checked against the official sampler's window lists),
its short-clip fixes, the sliding schedule, blend weights and the weighted average."""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from xportrait_core.windows import (
    WindowPlan,
    average_over_windows,
    blend_weights,
    official_offsets,
    official_windows,
    sliding_windows,
)

from harness.paths import PARITY  # noqa: E402  ($XPORTRAIT_SHARED, default ../shared)
CLIP_LENGTHS = [1, 5, 16, 17, 22, 40]


@pytest.fixture(scope="module")
def sampler_manifest():
    if not PARITY.exists():
        pytest.skip(f"parity fixture not found at {PARITY} (it sits beside the repository in development and CI)")
    return json.loads((PARITY / "manifest.json").read_text())["sampler"]


@pytest.mark.parametrize("run", ["run_a", "run_b"])
def test_official_windows_match_the_official_sampler(sampler_manifest, run):
    record = sampler_manifest[run]
    n_frames, length, overlap = sampler_manifest["n_frames"], sampler_manifest["window"], sampler_manifest["num_mix"]
    assert len(record["window_frames"]) == len(record["offsets"])
    for offset, expected in zip(record["offsets"], record["window_frames"]):
        assert official_windows(n_frames, offset, length, overlap) == expected


def test_official_plan_reproduces_the_plain_average(sampler_manifest):
    n_frames = sampler_manifest["n_frames"]
    plan = WindowPlan.official(n_frames, sampler_manifest["run_a"]["offsets"][0])
    generator = torch.Generator().manual_seed(0)
    outputs = [torch.randn(len(w), 4, 3, 3, generator=generator) for w in plan.windows]
    # The official accumulation: add each window's eps, count, divide.
    total = torch.zeros(n_frames, 4, 3, 3)
    count = torch.zeros(n_frames)
    for window, output in zip(plan.windows, outputs):
        total[list(window)] += output
        count[list(window)] += 1
    torch.testing.assert_close(average_over_windows(outputs, plan, n_frames), total / count.view(-1, 1, 1, 1))


@pytest.mark.parametrize("n_frames", CLIP_LENGTHS)
def test_official_windows_cover_every_frame_once_per_window(n_frames):
    for offset in range(n_frames):
        windows = official_windows(n_frames, offset)
        assert set().union(*windows) == set(range(n_frames))
        for window in windows:
            assert len(window) == min(16, n_frames)
            assert len(set(window)) == len(window)


@pytest.mark.parametrize("n_frames", [1, 4, 16])
def test_short_clips_are_one_window_in_order(n_frames):
    # The official code gives no window at n <= 4 (a black video) and repeats frames below 16.
    assert official_windows(n_frames, n_frames - 1) == [list(range(n_frames))]


def test_offsets_are_reproducible_from_the_seed():
    first = official_offsets(1234, 22, 31)
    assert first == official_offsets(1234, 22, 31)
    assert first != official_offsets(1235, 22, 31)
    assert len(first) == 31 and all(0 <= o < 22 for o in first)
    assert official_offsets(7, 1, 5) == [0] * 5
    assert len(set(official_offsets(0, 22, 200))) == 22  # every offset is reachable


@pytest.mark.parametrize("n_frames", CLIP_LENGTHS)
def test_sliding_windows_cover_the_clip_in_order(n_frames):
    windows = sliding_windows(n_frames)
    assert set().union(*windows) == set(range(n_frames))
    assert windows[0][0] == 0 and windows[-1][-1] == n_frames - 1
    for window in windows:
        assert window == list(range(window[0], window[0] + len(window)))
        assert len(window) == min(16, n_frames)
    for before, after in zip(windows, windows[1:]):
        assert before[0] < after[0]
        assert len(set(before) & set(after)) >= 4
    # The fewest windows: one fewer could not keep every overlap at 4 or more.
    if n_frames > 16:
        assert len(windows) * 12 + 4 >= n_frames > (len(windows) - 1) * 12 + 4


@pytest.mark.parametrize("n_frames", CLIP_LENGTHS + [29])
@pytest.mark.parametrize("schedule", ["sliding", "official"])
def test_blend_weights_are_positive_bounded_and_smooth(n_frames, schedule):
    windows = sliding_windows(n_frames) if schedule == "sliding" else official_windows(n_frames, n_frames // 3)
    weights = blend_weights(windows, n_frames, overlap=4)
    coverage = Counter(f for w in windows for f in w)
    totals = Counter()
    for window, row in zip(windows, weights):
        assert len(row) == len(window)
        assert all(0 < w <= 1 for w in row)
        assert all(abs(a - b) <= 1 / 5 + 1e-12 for a, b in zip(row, row[1:]))
        for frame, w in zip(window, row):
            totals[frame] += w
            if coverage[frame] == 1:
                assert w == 1.0  # a frame only this window predicts keeps its full weight
    assert all(totals[f] > 0 for f in range(n_frames))


@pytest.mark.parametrize("n_frames", [17, 22, 29, 40])
def test_blend_weights_mirror_with_the_schedule(n_frames):
    windows = sliding_windows(n_frames)
    mirrored = [[n_frames - 1 - f for f in reversed(w)] for w in reversed(windows)]
    expected = [list(reversed(row)) for row in reversed(blend_weights(windows, n_frames, 4))]
    assert blend_weights(mirrored, n_frames, 4) == expected


def test_sliding_schedule_is_symmetric_for_forty_frames():
    windows = sliding_windows(40)
    weights = blend_weights(windows, 40, 4)
    assert [[39 - f for f in reversed(w)] for w in reversed(windows)] == windows
    assert [list(reversed(row)) for row in reversed(weights)] == weights
    # Neighbours cross-fade: in a 4-frame overlap the two ramps sum to 1.
    shared = sorted(set(windows[0]) & set(windows[1]))
    for frame in shared:
        pair = weights[0][windows[0].index(frame)] + weights[1][windows[1].index(frame)]
        assert pair == pytest.approx(1.0)


def test_flat_weights_and_unknown_kind():
    windows = sliding_windows(22)
    assert blend_weights(windows, 22, 4, kind="flat") == [[1.0] * 16, [1.0] * 16]
    with pytest.raises(ValueError, match="kind='cosine'"):
        blend_weights(windows, 22, 4, kind="cosine")


@pytest.mark.parametrize("n_frames", CLIP_LENGTHS)
@pytest.mark.parametrize("kind", ["flat", "linear"])
def test_average_matches_a_float64_reference(n_frames, kind):
    plan = WindowPlan.sliding(n_frames, kind=kind) if kind == "linear" else WindowPlan.official(n_frames, 0)
    generator = torch.Generator().manual_seed(n_frames)
    outputs = [torch.randn(len(w), 4, 5, 5, generator=generator) for w in plan.windows]
    numerator = torch.zeros(n_frames, 4, 5, 5, dtype=torch.float64)
    denominator = torch.zeros(n_frames, dtype=torch.float64)
    for window, row, output in zip(plan.windows, plan.weights, outputs):
        for frame, weight, value in zip(window, row, output.double()):
            numerator[frame] += weight * value
            denominator[frame] += weight
    expected = numerator / denominator.view(-1, 1, 1, 1)
    merged = average_over_windows(outputs, plan, n_frames)
    assert merged.dtype == torch.float32
    torch.testing.assert_close(merged.double(), expected, rtol=1e-6, atol=1e-6)
    merged64 = average_over_windows([o.double() for o in outputs], plan, n_frames)
    torch.testing.assert_close(merged64, expected, rtol=1e-12, atol=1e-12)


def test_average_of_a_constant_is_that_constant():
    plan = WindowPlan.sliding(29)
    outputs = [torch.full((len(w), 2), 3.5, dtype=torch.float16) for w in plan.windows]
    merged = average_over_windows(outputs, plan, 29)
    assert merged.dtype == torch.float16
    assert torch.equal(merged, torch.full((29, 2), 3.5, dtype=torch.float16))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="offset=22"):
        official_windows(22, 22)
    with pytest.raises(ValueError, match="overlap=16"):
        sliding_windows(40, length=16, overlap=16)
    with pytest.raises(ValueError, match="n_frames=0"):
        sliding_windows(0)
    with pytest.raises(ValueError, match=r"frames \[4\] are in no window"):
        blend_weights([[0, 1], [2, 3]], 5)
    with pytest.raises(ValueError, match="repeats a frame"):
        blend_weights([[0, 1, 1]], 2)
    plan = WindowPlan.sliding(22)
    with pytest.raises(ValueError, match="2 windows"):
        average_over_windows([torch.zeros(16, 3)], plan, 22)
    with pytest.raises(ValueError, match=r"output 1 has shape \(15, 3\)"):
        average_over_windows([torch.zeros(16, 3), torch.zeros(15, 3)], plan, 22)
