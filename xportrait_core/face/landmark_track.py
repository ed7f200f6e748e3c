"""Per-frame landmark tracks: fill frames without a face, optional temporal smoothing.

The official code crashes on a driving frame without a detectable face; the pack instead
interpolates that frame's landmarks from its nearest detected neighbours (linear in time,
carried over at the clip ends). A clip with no face at all has no track: the caller then skips
alignment and uses all -1 local hints.
"""

from __future__ import annotations

import math

import numpy as np


def _track(landmarks) -> np.ndarray:
    array = np.asarray(landmarks, dtype=np.float64)
    if array.ndim != 3 or array.shape[1:] != (68, 2) or array.shape[0] < 1:
        raise ValueError(f"landmarks must be a [N, 68, 2] per-frame array with N >= 1, got shape {array.shape}")
    return array


def fill_missing_landmarks(landmarks, found) -> tuple[np.ndarray, np.ndarray] | None:
    """(filled [N, 68, 2] float64, filled flag [N] bool) or None when no frame has a face.

    Values of frames marked not found are ignored (they may be NaN or zeros).
    """
    track = _track(landmarks)
    n = track.shape[0]
    mask = np.asarray(found, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"found must be a boolean mask of shape ({n},), got shape {mask.shape}")
    if not mask.any():
        return None
    known = np.flatnonzero(mask)
    if not np.isfinite(track[known]).all():
        raise ValueError("landmarks of frames marked found must be finite; mark bad frames not found")
    frames = np.arange(n)
    # Nearest known frame at or after each frame, and the one before it; clamped at the ends so
    # frames outside the detected span copy the first / last detection.
    after = np.clip(np.searchsorted(known, frames), 0, len(known) - 1)
    before = np.clip(after - 1, 0, len(known) - 1)
    after_frame, before_frame = known[after], known[before]
    exact = after_frame == frames
    before_frame = np.where(exact | (frames > after_frame), after_frame, before_frame)
    span = after_frame - before_frame
    weight = np.where(span > 0, (frames - before_frame) / np.maximum(span, 1), 0.0)[:, None, None]
    filled = (1.0 - weight) * track[before_frame] + weight * track[after_frame]
    filled[mask] = track[mask]
    return filled, ~mask


def smooth_landmarks(landmarks, strength: float) -> np.ndarray:
    """Centred Gaussian smoothing over time, sigma = `strength` frames; 0 returns an exact copy.

    Clip ends are padded by repeating the end frames, so a still track stays still.
    """
    track = _track(landmarks)
    if not (strength >= 0 and math.isfinite(strength)):
        raise ValueError(f"strength must be a finite number >= 0 (0 = off), got {strength}")
    if strength == 0:
        return track.copy()
    radius = max(1, int(math.ceil(3.0 * strength)))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / strength) ** 2)
    kernel /= kernel.sum()
    n = track.shape[0]
    taps = np.clip(np.arange(n)[:, None] + offsets[None, :], 0, n - 1)
    return np.einsum("k,nkpc->npc", kernel, track[taps])
