"""Image resizing that reproduces `skimage.transform.resize` (the official pre-warp resize).

The official pipeline resizes every frame with skimage's defaults before warping: bilinear
(order 1), boundary mode "reflect" (scipy's "mirror": reflection about the edge pixel centre),
pixel-centre aligned sampling, and, when shrinking, a Gaussian anti-alias pre-filter with
sigma = (factor - 1) / 2 truncated at 4 sigma. Both steps are linear and separable, so each axis
becomes one [out, in] float64 matrix; resizing is two matrix products, which runs the same on
numpy (the exact path) and on torch (batched, any device). skimage itself is not a dependency.
"""

from __future__ import annotations

import numpy as np
import torch

_TRUNCATE_SIGMAS = 4.0


def _mirror_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """Fold integer indices into [0, n) by reflecting about the first and last pixel centres."""
    if n == 1:
        return np.zeros_like(indices)
    period = 2 * (n - 1)
    folded = np.mod(indices, period)
    return np.where(folded >= n, period - folded, folded)


def _mirror_coordinates(coords: np.ndarray, n: int) -> np.ndarray:
    """Fold continuous coordinates into [0, n - 1] the same way (scipy applies it before
    interpolating, so a sample left of pixel 0 mixes pixels 0 and 1, not pixel 0 alone)."""
    if n == 1:
        return np.zeros_like(coords)
    period = 2.0 * (n - 1)
    folded = np.mod(coords, period)
    return np.where(folded > n - 1, period - folded, folded)


def _antialias_matrix(n: int, factor: float) -> np.ndarray:
    sigma = max(0.0, (factor - 1.0) / 2.0)
    if sigma <= 1e-15:
        return np.eye(n)
    radius = int(_TRUNCATE_SIGMAS * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    matrix = np.zeros((n, n))
    rows = np.arange(n)[:, None]
    cols = _mirror_indices(rows + offsets[None, :], n)
    # np.add.at: a reflected tap can land on a column another tap already uses.
    np.add.at(matrix, (np.broadcast_to(rows, cols.shape), cols), np.broadcast_to(kernel, cols.shape))
    return matrix


def _linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    factor = n_in / n_out
    coords = _mirror_coordinates((np.arange(n_out) + 0.5) * factor - 0.5, n_in)
    lower = np.floor(coords).astype(np.int64)
    frac = coords - lower
    upper = np.minimum(lower + 1, n_in - 1)
    matrix = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, lower), 1.0 - frac)
    np.add.at(matrix, (rows, upper), frac)
    return matrix


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] float64 operator of skimage's 1-D resize along one axis."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize sizes must be positive, got n_in={n_in}, n_out={n_out}")
    if n_in == n_out:
        return np.eye(n_in)
    factor = n_in / n_out
    return _linear_matrix(n_in, n_out) @ _antialias_matrix(n_in, factor)


def resize_numpy(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize [N, H, W, C] float frames to size (h, w) exactly like skimage (float64 result).

    skimage clips the result to the input's value range; that is done per frame here.
    """
    if frames.ndim != 4:
        raise ValueError(f"frames must be [N, H, W, C], got shape {frames.shape}")
    frames = np.asarray(frames, dtype=np.float64)
    _, h_in, w_in, _ = frames.shape
    if (h_in, w_in) == tuple(size):
        return frames.copy()
    rows = resize_matrix(h_in, size[0])
    cols = resize_matrix(w_in, size[1])
    out = np.einsum("oh,nhwc->nowc", rows, frames)
    out = np.einsum("pw,nowc->nopc", cols, out)
    low = frames.min(axis=(1, 2, 3), keepdims=True)
    high = frames.max(axis=(1, 2, 3), keepdims=True)
    return np.clip(out, low, high)


def resize_torch(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Batched torch version of `resize_numpy` for [N, H, W, C] frames (keeps dtype and device)."""
    if frames.ndim != 4:
        raise ValueError(f"frames must be [N, H, W, C], got shape {tuple(frames.shape)}")
    _, h_in, w_in, _ = frames.shape
    if (h_in, w_in) == tuple(size):
        return frames.clone()
    rows = torch.as_tensor(resize_matrix(h_in, size[0]), dtype=frames.dtype, device=frames.device)
    cols = torch.as_tensor(resize_matrix(w_in, size[1]), dtype=frames.dtype, device=frames.device)
    out = torch.einsum("oh,nhwc->nowc", rows, frames)
    out = torch.einsum("pw,nowc->nopc", cols, out)
    low = frames.amin(dim=(1, 2, 3), keepdim=True)
    high = frames.amax(dim=(1, 2, 3), keepdim=True)
    return torch.maximum(torch.minimum(out, high), low)
