"""Local (eyes + mouth) hint images for the local ControlNet, official rules.

Per aligned frame: three centres from landmarks found on its 256x256 copy, rounded and clipped
in that 256 grid, then scaled to the frame size; the hint is -1 everywhere except three square
windows of side S/4 copied from the frame scaled to [-1, 1]. The windows all copy the same frame
at the same coordinates, so overlapping windows agree and the write order cannot matter.
"""

from __future__ import annotations

import numpy as np
import torch

# Official slices; points 36, 42 and 48 (each contour's first point) are skipped on purpose.
LEFT_EYE = slice(43, 48)
RIGHT_EYE = slice(37, 42)
MOUTH = slice(49, 68)

LANDMARK_GRID = 256
_HALF_EDGE = 32  # in the 256 grid: windows stay inside the frame


def patch_centres(landmarks_256, target_res: int = 512, landmark_res: float = LANDMARK_GRID) -> np.ndarray:
    """int64 [N, 3, 2] ([3, 2] for one frame) window centres: left eye, right eye, mouth (x, y).

    `landmarks_256` is [N, 68, 2] or [68, 2] in a `landmark_res` pixel grid (the official grid
    is 256). Means are taken in float32, as on FAN's float32 output, so .5 ties round alike.
    """
    lmk = np.asarray(landmarks_256, dtype=np.float32)
    single = lmk.ndim == 2
    if single:
        lmk = lmk[None]
    if lmk.ndim != 3 or lmk.shape[1:] != (68, 2):
        raise ValueError(f"landmarks_256 must be [N, 68, 2] or [68, 2], got shape {np.shape(landmarks_256)}")
    if target_res < 8:
        raise ValueError(f"target_res must be at least 8 pixels, got {target_res}")
    if landmark_res != LANDMARK_GRID:
        lmk = lmk * np.float32(LANDMARK_GRID / landmark_res)
    centres = np.stack([lmk[:, part].mean(axis=1) for part in (LEFT_EYE, RIGHT_EYE, MOUTH)], axis=1)
    clipped = np.clip(np.round(centres), _HALF_EDGE, LANDMARK_GRID - 1 - _HALF_EDGE)
    scaled = (clipped * (target_res / LANDMARK_GRID)).astype(np.int32).astype(np.int64)
    return scaled[0] if single else scaled


def local_patch_hint(aligned_frames: torch.Tensor, centres, found=None) -> torch.Tensor:
    """[N, 3, S, S] hint in [-1, 1] from [N, S, S, 3] frames in [0, 1] and [N, 3, 2] centres.

    Window half size is S // 8 (64 at 512, the official size). Frames marked not found get an
    all -1 hint (the official no-face fallback).
    """
    if aligned_frames.ndim != 4 or aligned_frames.shape[-1] != 3:
        raise ValueError(f"aligned_frames must be [N, S, S, 3], got shape {tuple(aligned_frames.shape)}")
    n, height, width, _ = aligned_frames.shape
    if height != width:
        raise ValueError(f"aligned_frames must be square (official hints are S x S), got {height}x{width}")
    centre = torch.as_tensor(np.asarray(centres), dtype=torch.int64, device=aligned_frames.device)
    if centre.shape != (n, 3, 2):
        raise ValueError(f"centres must be [{n}, 3, 2] (one per frame), got shape {tuple(centre.shape)}")
    half = height // 8
    pixels = torch.arange(height, device=aligned_frames.device)
    # [N, 3, S]: which rows / columns each window covers, window = [c - half, c + half).
    in_x = (pixels >= centre[..., 0:1] - half) & (pixels < centre[..., 0:1] + half)
    in_y = (pixels >= centre[..., 1:2] - half) & (pixels < centre[..., 1:2] + half)
    inside = (in_y[..., :, None] & in_x[..., None, :]).any(dim=1)
    if found is not None:
        mask = torch.as_tensor(np.asarray(found, dtype=bool), device=aligned_frames.device)
        if mask.shape != (n,):
            raise ValueError(f"found must be a boolean mask of shape ({n},), got {tuple(mask.shape)}")
        inside = inside & mask[:, None, None]
    scaled = aligned_frames.permute(0, 3, 1, 2) * 2 - 1
    return torch.where(inside[:, None], scaled, torch.full_like(scaled, -1.0))
