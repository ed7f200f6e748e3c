"""Reuse of per-frame ControlNet residuals across the overlapping windows of one model call.

The motion ControlNets have no temporal layers: a frame's residuals depend only on that frame's
noisy latent, its hint, the timestep and the text context, never on which window the frame sits
in. The official schedule runs every window through them anyway, so at 16/4 windows a quarter
of their work repeats a result already computed in the same step. This cache keeps the
residuals of the frames that a later window of the same call still needs, and drops each one as
soon as no later window needs it, so it holds only the overlaps still ahead.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import torch


class WindowResidualCache:
    """Per-frame residual lists of the current model call, keyed by frame index."""

    def __init__(self):
        self._call: Hashable | None = None
        self._rows: dict[int, list[torch.Tensor]] = {}

    def begin(self, call: Hashable) -> None:
        """Start (or continue) the model call ``call``; a new call forgets everything."""
        if call != self._call:
            self._call, self._rows = call, {}

    def clear(self) -> None:
        self._call, self._rows = None, {}

    def __len__(self) -> int:
        return len(self._rows)

    def missing(self, frames: Sequence[int]) -> list[int]:
        """Positions in ``frames`` whose residuals must still be computed."""
        return [j for j, frame in enumerate(frames) if frame not in self._rows]

    def assemble(self, frames: Sequence[int], fresh_positions: Sequence[int],
                 fresh: Sequence[torch.Tensor] | None, needed_later: set[int]) -> list[torch.Tensor]:
        """The residuals of ``frames`` in window order: rows ``fresh_positions`` come from
        ``fresh`` (one tensor per residual, one row per fresh frame), the rest from the cache.

        Afterwards the cache keeps exactly the frames seen so far that are in ``needed_later``.
        """
        fresh_index = {j: i for i, j in enumerate(fresh_positions)}
        if fresh is None and fresh_index:
            raise ValueError("residual reuse: fresh frames were listed but no fresh residuals given")
        # Consecutive positions from the same source become one slice or one stack: no index
        # tensor is built, so nothing is copied from the host to the GPU.
        segments: list[tuple[bool, list[int]]] = []
        for j in range(len(frames)):
            from_fresh = j in fresh_index
            if segments and segments[-1][0] == from_fresh and (
                    not from_fresh or fresh_index[j] == fresh_index[segments[-1][1][-1]] + 1):
                segments[-1][1].append(j)
            else:
                segments.append((from_fresh, [j]))
        count = len(fresh) if fresh is not None else len(self._rows[frames[0]])
        out = []
        for i in range(count):
            pieces = []
            for from_fresh, positions in segments:
                if from_fresh:
                    first = fresh_index[positions[0]]
                    pieces.append(fresh[i][first:first + len(positions)])
                else:
                    pieces.append(torch.stack([self._rows[frames[j]][i] for j in positions]))
            out.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces))
        # Keep only rows a later window reads (earlier windows' too: circular windows can wrap
        # onto the first window), as own copies: a view would pin the whole batch.
        kept = {frame: rows for frame, rows in self._rows.items() if frame in needed_later}
        for j, frame in enumerate(frames):
            if frame in needed_later and frame not in kept:
                kept[frame] = [r[j].clone() for r in out]
        self._rows = kept
        return out


def frames_needed_after(windows: Sequence[Sequence[int]], index: int) -> set[int]:
    """Frames that any window after ``windows[index]`` covers."""
    return {frame for window in windows[index + 1:] for frame in window}
