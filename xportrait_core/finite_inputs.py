"""Refusing non-finite inputs before any network sees them.

A single NaN pixel in a driving frame or the portrait spreads through every window of every
step and ends as an all-NaN latent: a black video reported as success. Each input is checked
where it enters, and the error names the input, the frames and what to do.
"""
from __future__ import annotations

import numpy as np
import torch

SHOWN_FRAMES = 10
#: Bytes of input checked at a time. torch.isfinite builds a full-size float temporary (|x|) and
#: several bool masks, about 1.75x its input: for a whole minute-long clip that is gigabytes.
CHECK_CHUNK_BYTES = 64 * 2**20


def nonfinite_frames(values) -> list[int]:
    """Indices along the first axis whose entries are not all finite (tensor or array)."""
    if isinstance(values, torch.Tensor):
        if not values.is_floating_point() or values.shape[0] == 0:
            return []
        count = values.shape[0]
        step = max(1, CHECK_CHUNK_BYTES // max(1, values[0].numel() * values.element_size()))
        # Sliced before the reshape: a non-contiguous input (an RGBA batch cut to RGB) is then
        # copied a chunk at a time, never whole.
        bad = [~torch.isfinite(values[start:start + step].reshape(min(step, count - start), -1)).all(dim=1)
               for start in range(0, count, step)]
        return torch.nonzero(torch.cat(bad)).flatten().tolist()
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
