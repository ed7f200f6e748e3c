"""Whole-clip alignment of the driving video onto the source portrait (official rules).

One affine for the whole clip: the landmark box (centre = mean of the 68 points, half extent =
(max - min) / 2 per axis) of one chosen driving frame is mapped onto the source's box. Every
driving frame is then resized like skimage and warped with that matrix (bilinear, zero fill).
"""

from __future__ import annotations

from enum import IntEnum

import cv2
import numpy as np
import torch

from .resample import resize_numpy, resize_torch


class AlignmentMode(IntEnum):
    """The official `best_frame` sentinels; any value >= 0 is an explicit frame index."""

    AUTO = -1
    OFF = -2


def _landmarks(name: str, value, frames: bool) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    shape_ok = array.shape[-2:] == (68, 2) and array.ndim == (3 if frames else 2)
    if not shape_ok:
        layout = "[N, 68, 2]" if frames else "[68, 2]"
        raise ValueError(f"{name} must be a {layout} (x, y) landmark array, got shape {array.shape}")
    return array


def _found_mask(found, n: int) -> np.ndarray:
    if found is None:
        return np.ones(n, dtype=bool)
    mask = np.asarray(found, dtype=bool)
    if mask.shape != (n,):
        raise ValueError(f"found must be a boolean mask of shape ({n},), got shape {mask.shape}")
    return mask


def best_frame_by_landmarks(source_lmk, driving_lmks, found=None) -> int:
    """Index of the driving frame whose 68 points have the least summed |diff| to the source's.

    The first minimum wins (official strict `<`). Frames without landmarks are excluded; the
    official code scores them against zeros, which can only matter for faces near the origin.
    """
    source = _landmarks("source_lmk", source_lmk, frames=False)
    driving = _landmarks("driving_lmks", driving_lmks, frames=True)
    mask = _found_mask(found, driving.shape[0])
    if not mask.any():
        raise ValueError("no driving frame has landmarks (found is all False); use AlignmentMode.OFF")
    distance = np.abs(driving - source[None]).sum(axis=(1, 2))
    distance[~mask] = np.inf
    return int(np.argmin(distance))


def _box_corners(landmarks: np.ndarray) -> np.ndarray:
    # float32 like the official point arrays; FAN landmarks are float32 and the official
    # centre/extent arithmetic runs in that dtype, which the 1e-9 affine tolerance can see.
    lmk = landmarks.astype(np.float32)
    centre = np.mean(lmk, axis=0)
    extent = (np.max(lmk, axis=0) - np.min(lmk, axis=0)) * 0.5
    corners = [
        [centre[0] - extent[0], centre[1] - extent[1]],
        [centre[0] + extent[0], centre[1] - extent[1]],
        [centre[0] - extent[0], centre[1] + extent[1]],
    ]
    return np.array(corners, dtype=np.float32)


def _three_point_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """[2, 3] matrix mapping the three src points onto the dst points exactly."""
    design = np.concatenate([src.astype(np.float64), np.ones((3, 1))], axis=1)
    if abs(np.linalg.det(design)) < 1e-12:
        raise ValueError("alignment points are collinear (a landmark box has zero width or height)")
    return np.linalg.solve(design, dst.astype(np.float64)).T


def alignment_affine(source_lmk, driving_lmk, scale: float = 1.0) -> np.ndarray:
    """float64 [2, 3] affine taking driving-frame pixels onto the source's landmark box.

    Landmarks and the warped image share one pixel grid; `scale` rescales both boxes' points
    first (the official 512 matrix is the 256 one with points doubled: same linear part,
    translation times two).
    """
    source = _landmarks("source_lmk", source_lmk, frames=False)
    driving = _landmarks("driving_lmk", driving_lmk, frames=False)
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    src_points = _box_corners(source) * np.float32(scale)
    drv_points = _box_corners(driving) * np.float32(scale)
    return _three_point_affine(drv_points, src_points)


def choose_alignment(source_lmk, driving_lmks, found=None, best_frame: int = AlignmentMode.AUTO,
                     scale: float = 1.0):
    """Resolve a `best_frame` choice to (frame index, affine) or (None, None).

    The affine is in the landmarks' pixel grid times `scale` (official: 256-grid landmarks,
    scale 2 for the 512 frames). OFF, a missing source face, no driving face at all, or an explicit frame without landmarks
    all mean "resize only", as in the official fallback.
    """
    best_frame = int(best_frame)
    if best_frame < AlignmentMode.OFF:
        raise ValueError(f"best_frame must be >= 0, -1 (auto) or -2 (off), got {best_frame}")
    if best_frame == AlignmentMode.OFF or source_lmk is None or driving_lmks is None:
        return None, None
    driving = _landmarks("driving_lmks", driving_lmks, frames=True)
    mask = _found_mask(found, driving.shape[0])
    if best_frame == AlignmentMode.AUTO:
        if not mask.any():
            return None, None
        best_frame = best_frame_by_landmarks(source_lmk, driving, mask)
    elif best_frame >= driving.shape[0]:
        raise ValueError(f"best_frame {best_frame} is past the clip's last frame {driving.shape[0] - 1}")
    if not mask[best_frame]:
        return None, None
    return best_frame, alignment_affine(source_lmk, driving[best_frame], scale)


def _check_frames(frames) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3] images, got shape {tuple(frames.shape)}")


def _check_affine(affine) -> np.ndarray | None:
    if affine is None:
        return None
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
        raise ValueError(f"affine must be a finite [2, 3] matrix or None, got {matrix}")
    return matrix


def warp_frames_cv2(frames, affine, size: int = 512) -> torch.Tensor:
    """The official resize-then-warpAffine, computed in float64 with OpenCV; float32 result.

    `frames` is a float tensor in [0, 1] or a uint8 array, [N, H, W, 3]; `affine` is in the
    pixel grid of `size` (None: resize only, the official no-alignment path).
    """
    _check_frames(frames)
    matrix = _check_affine(affine)
    if isinstance(frames, torch.Tensor):
        array = frames.detach().cpu().numpy().astype(np.float64)
    elif frames.dtype == np.uint8:
        array = frames.astype(np.float64) / 255.0
    else:
        array = np.asarray(frames, dtype=np.float64)
    resized = resize_numpy(array, (size, size))
    if matrix is not None:
        resized = np.stack([
            cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            for frame in resized
        ])
    return torch.from_numpy(resized.astype(np.float32))


# OpenCV's warpAffine samples on a 1/32-pixel grid: coordinates go through 10-bit fixed point
# and are rounded to 5 fractional bits. Reproducing that keeps the torch path within float32
# rounding of OpenCV instead of ~0.02 away from it at sharp edges.
_FIXED_BITS = 10
_FRACTION_BITS = 5


def _opencv_sample_grid(affine: np.ndarray, size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Source coordinates of every output pixel, in 1/32 pixel units (int64), as OpenCV has them."""
    forward = np.vstack([affine, [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)[:2]
    scale = float(1 << _FIXED_BITS)
    half_step = 1 << (_FIXED_BITS - _FRACTION_BITS - 1)
    pixels = torch.arange(size, dtype=torch.float64, device=device)

    def fixed(values: torch.Tensor) -> torch.Tensor:
        return torch.round(values * scale).to(torch.int64)

    coords = []
    for row in inverse:
        along_x = fixed(row[0] * pixels)[None, :]
        along_y = fixed(row[1] * pixels + row[2])[:, None] + half_step
        coords.append(torch.div(along_x + along_y, 1 << (_FIXED_BITS - _FRACTION_BITS), rounding_mode="floor"))
    return coords[0], coords[1]


def _bilinear_zero_border(images: torch.Tensor, x_fixed: torch.Tensor, y_fixed: torch.Tensor) -> torch.Tensor:
    """Sample [N, H, W, C] at 1/32-pixel coordinates [S, S]; taps outside the image read 0."""
    n, height, width, channels = images.shape
    unit = 1 << _FRACTION_BITS
    x0, y0 = torch.div(x_fixed, unit, rounding_mode="floor"), torch.div(y_fixed, unit, rounding_mode="floor")
    fx = ((x_fixed - x0 * unit).to(images.dtype) / unit)[None, ..., None]
    fy = ((y_fixed - y0 * unit).to(images.dtype) / unit)[None, ..., None]
    flat = images.reshape(n, height * width, channels)

    def tap(xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        valid = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        index = (yi.clamp(0, height - 1) * width + xi.clamp(0, width - 1)).reshape(-1)
        values = flat[:, index].reshape(n, *xi.shape, channels)
        return values * valid[None, ..., None].to(images.dtype)

    top = tap(x0, y0) * (1 - fx) + tap(x0 + 1, y0) * fx
    bottom = tap(x0, y0 + 1) * (1 - fx) + tap(x0 + 1, y0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def warp_frames_torch(frames: torch.Tensor, affine, size: int = 512) -> torch.Tensor:
    """Batched, device-resident version of `warp_frames_cv2` for float [N, H, W, 3] frames.

    Samples on OpenCV's 1/32-pixel grid; differs from OpenCV by float32 rounding only.
    """
    if not isinstance(frames, torch.Tensor) or not frames.is_floating_point():
        raise ValueError("frames must be a float torch tensor [N, H, W, 3] in [0, 1] for the torch path")
    _check_frames(frames)
    matrix = _check_affine(affine)
    resized = resize_torch(frames, (size, size))
    if matrix is None:
        return resized
    x_fixed, y_fixed = _opencv_sample_grid(matrix, size, frames.device)
    return _bilinear_zero_border(resized, x_fixed, y_fixed)


def warp_frames(frames, affine, size: int = 512, backend: str = "cv2") -> torch.Tensor:
    """Resize [N, H, W, 3] frames to size x size and warp them with `affine` (None: no warp).

    backend "cv2" is bit-compatible with the official code; "torch" stays on the frames' device.
    """
    if backend == "cv2":
        return warp_frames_cv2(frames, affine, size)
    if backend == "torch":
        return warp_frames_torch(frames, affine, size)
    raise ValueError(f"backend must be 'cv2' or 'torch', got {backend!r}")
