"""Frame windows along a clip: which frames each temporal-module window sees, and how the
per-window predictions are merged back into one value per frame.

The temporal modules only see 16 frames at a time, so a longer clip is sampled as overlapping
windows whose predictions are averaged per frame. Two schedules are offered:

* ``official_windows``: the official "prompt travelling" schedule. A random offset per step
  rotates windows around the clip, which wraps (the last frames share a window with the first).
  Its bugs for short clips are fixed: at most ``length`` frames give one window of the clip in
  order, so no frame repeats and a clip no longer than the overlap still gets a prediction.
* ``sliding_windows``: a deterministic, non-wrapping schedule whose windows are spread evenly
  from the clip start to the clip end, for use with ``blend_weights`` cross-fades.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch

from .host_values import to_device

WINDOW_LENGTH = 16
WINDOW_OVERLAP = 4
BLEND_KINDS = ("flat", "linear")


def _check_schedule(n_frames: int, length: int, overlap: int) -> None:
    if n_frames < 1:
        raise ValueError(f"frame windows: n_frames={n_frames}; the clip needs at least one frame")
    if length < 1 or not 0 <= overlap < length:
        raise ValueError(
            f"frame windows: length={length}, overlap={overlap}; need length >= 1 and 0 <= overlap < length"
        )


def official_windows(
    n_frames: int, offset: int, length: int = WINDOW_LENGTH, overlap: int = WINDOW_OVERLAP
) -> list[list[int]]:
    """The official schedule for one step: windows start at ``offset, offset + (length - overlap),
    ...`` while ``start < offset + n_frames - overlap`` and take frames ``(start + j) % n_frames``.
    A clip of at most ``length`` frames is one window ``0..n_frames-1`` (the official code repeats
    frames there, or produces no window at all when ``n_frames <= overlap``)."""
    _check_schedule(n_frames, length, overlap)
    if not 0 <= offset < n_frames:
        raise ValueError(f"frame windows: offset={offset} must lie in 0..{n_frames - 1} (a frame of the clip)")
    if n_frames <= length:
        return [list(range(n_frames))]
    starts = range(offset, offset + n_frames - overlap, length - overlap)
    return [[(start + j) % n_frames for j in range(length)] for start in starts]


def official_offsets(seed: int, n_frames: int, steps: int) -> list[int]:
    """One window offset per sampling step, drawn like the official ``random.randint(0, N-1)``.

    The official code draws from Python's global generator; here a generator seeded from the
    sampler seed is used instead, so a run with the same seed reproduces its windows exactly.
    """
    if n_frames < 1 or steps < 0:
        raise ValueError(f"window offsets: n_frames={n_frames} must be >= 1 and steps={steps} >= 0")
    rng = random.Random(seed)
    return [rng.randint(0, n_frames - 1) for _ in range(steps)]


def sliding_windows(n_frames: int, length: int = WINDOW_LENGTH, overlap: int = WINDOW_OVERLAP) -> list[list[int]]:
    """Non-wrapping windows covering every frame: the first starts at frame 0, the last ends on
    the last frame, and the starts in between are spread evenly, so neighbours share at least
    ``overlap`` frames and the fewest windows that allow it are used."""
    _check_schedule(n_frames, length, overlap)
    if n_frames <= length:
        return [list(range(n_frames))]
    stride = length - overlap
    count = -(-(n_frames - overlap) // stride)  # ceil: fewest windows with overlaps >= overlap
    span = n_frames - length
    gaps = count - 1
    # Integer round-half-up of i * span / gaps keeps the schedule exact and platform-independent.
    starts = [(2 * i * span + gaps) // (2 * gaps) for i in range(count)]
    return [list(range(start, start + length)) for start in starts]


def blend_weights(
    windows: Sequence[Sequence[int]], n_frames: int, overlap: int = WINDOW_OVERLAP, kind: str = "linear"
) -> list[list[float]]:
    """Per-window, per-frame weights for the weighted average over windows.

    ``flat``: every weight is 1 (the official plain average). ``linear``: a window's frames that
    it shares with other windows at its leading (trailing) end ramp up (down) over at most
    ``overlap`` frames, as ``1/(r+1), 2/(r+1), ...``, so neighbouring windows cross-fade and the
    frames a window sees with one-sided context count less. Frames no other window covers keep
    weight 1, and no weight is ever zero.
    """
    if kind not in BLEND_KINDS:
        raise ValueError(f"blend weights: kind={kind!r} is not one of {BLEND_KINDS}")
    _check_windows(windows, n_frames)
    if kind == "flat":
        return [[1.0] * len(window) for window in windows]
    coverage = Counter(frame for window in windows for frame in window)
    weights = []
    for window in windows:
        shared = [coverage[frame] > 1 for frame in window]
        ramp_in = min(_leading_true(shared), overlap)
        ramp_out = min(_leading_true(shared[::-1]), overlap)
        size = len(window)
        weights.append([min(1.0, (j + 1) / (ramp_in + 1), (size - j) / (ramp_out + 1)) for j in range(size)])
    return weights


def _leading_true(flags: Sequence[bool]) -> int:
    count = 0
    for flag in flags:
        if not flag:
            break
        count += 1
    return count


def _check_windows(windows: Sequence[Sequence[int]], n_frames: int) -> None:
    if not windows:
        raise ValueError("frame windows: the schedule has no window")
    covered: set[int] = set()
    for index, window in enumerate(windows):
        if not window:
            raise ValueError(f"frame windows: window {index} is empty")
        if len(set(window)) != len(window):
            raise ValueError(f"frame windows: window {index} repeats a frame: {list(window)}")
        outside = [f for f in window if not 0 <= f < n_frames]
        if outside:
            raise ValueError(f"frame windows: window {index} has frames {outside} outside 0..{n_frames - 1}")
        covered.update(window)
    uncovered = sorted(set(range(n_frames)) - covered)
    if uncovered:
        raise ValueError(f"frame windows: frames {uncovered} are in no window; every frame needs a prediction")


@dataclass(frozen=True)
class WindowPlan:
    """The frames of each window and the weight each window's prediction gets for each frame."""

    windows: tuple[tuple[int, ...], ...]
    weights: tuple[tuple[float, ...], ...]

    @classmethod
    def build(
        cls, windows: Sequence[Sequence[int]], n_frames: int, overlap: int = WINDOW_OVERLAP, kind: str = "linear"
    ) -> "WindowPlan":
        weights = blend_weights(windows, n_frames, overlap, kind)
        return cls(tuple(tuple(w) for w in windows), tuple(tuple(w) for w in weights))

    @classmethod
    def official(
        cls, n_frames: int, offset: int, length: int = WINDOW_LENGTH, overlap: int = WINDOW_OVERLAP
    ) -> "WindowPlan":
        """One step of the official schedule with its plain (equal-weight) average."""
        return cls.build(official_windows(n_frames, offset, length, overlap), n_frames, overlap, "flat")

    @classmethod
    def sliding(
        cls, n_frames: int, length: int = WINDOW_LENGTH, overlap: int = WINDOW_OVERLAP, kind: str = "linear"
    ) -> "WindowPlan":
        return cls.build(sliding_windows(n_frames, length, overlap), n_frames, overlap, kind)


def average_over_windows(
    outputs_per_window: Sequence[torch.Tensor], plan: WindowPlan, n_frames: int
) -> torch.Tensor:
    """Merge window outputs ``[len(window), ...]`` into ``[n_frames, ...]``:
    ``sum(weight * output) / sum(weight)`` per frame. Accumulates in float32 (float64 for float64
    inputs) and returns the inputs' dtype; with flat weights this is the official plain average."""
    if len(outputs_per_window) != len(plan.windows):
        raise ValueError(
            f"window average: got {len(outputs_per_window)} outputs for a plan of {len(plan.windows)} windows"
        )
    _check_windows(plan.windows, n_frames)
    trailing = outputs_per_window[0].shape[1:]
    for index, (output, window) in enumerate(zip(outputs_per_window, plan.windows)):
        if output.shape[0] != len(window) or output.shape[1:] != trailing:
            raise ValueError(
                f"window average: output {index} has shape {tuple(output.shape)}, expected "
                f"[{len(window)}, {', '.join(map(str, trailing))}] (one row per window frame)"
            )
    stacked = torch.cat(list(outputs_per_window))
    accumulate = torch.float64 if stacked.dtype == torch.float64 else torch.float32
    device = stacked.device
    frame_index = to_device([f for window in plan.windows for f in window], device)
    weight = to_device([w for row in plan.weights for w in row], device, accumulate)
    broadcast = (-1,) + (1,) * len(trailing)
    total = torch.zeros((n_frames, *trailing), dtype=accumulate, device=device)
    total.index_add_(0, frame_index, stacked.to(accumulate) * weight.view(broadcast))
    weight_sum = torch.zeros(n_frames, dtype=accumulate, device=device).index_add_(0, frame_index, weight)
    return (total / weight_sum.view(broadcast)).to(stacked.dtype)
