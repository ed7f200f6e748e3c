"""Refusing non-finite inputs before any network sees them.

A single NaN pixel in a driving frame or the portrait spreads through every window of every
step and ends as an all-NaN latent: a black video reported as success. Each input is checked
where it enters, and the error names the input, the frames and what to do.
"""
from __future__ import annotations

import numpy as np
import torch

SHOWN_FRAMES = 10


def nonfinite_frames(values) -> list[int]:
    """Indices along the first axis whose entries are not all finite (tensor or array)."""
    if isinstance(values, torch.Tensor):
        if values.is_floating_point():
            bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)
            return torch.nonzero(bad).flatten().tolist()
        return []
    array = np.asarray(values)
    if not np.issubdtype(array.dtype, np.floating):
        return []
    return np.flatnonzero(~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)).tolist()


def require_finite(values, what: str, fix: str) -> None:
    """Raise ValueError naming ``what`` and its non-finite frames; ``fix`` says what to change."""
    bad = nonfinite_frames(values)
    if not bad:
        return
    shown = ", ".join(map(str, bad[:SHOWN_FRAMES])) + (f" and {len(bad) - SHOWN_FRAMES} more" if len(bad) > SHOWN_FRAMES else "")
    which = f"frames {shown} contain" if len(bad) > 1 else f"frame {shown} contains"
    raise ValueError(f"{what}: {which} NaN or infinite values; {fix}")
