"""Square face crops out of a full-resolution portrait, and compositing results back into it.

X-Portrait works on 512x512 head shots; a larger or non-square portrait is cropped around the
face, animated, and the frames are pasted back with a feathered seam. Both directions are one
kornia affine warp, so they run batched on the portrait's device.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.filters as kf
import kornia.geometry.transform as kgt
import numpy as np
import torch

_PADDING_MODES = ("zeros", "border", "reflection")


@dataclass(frozen=True)
class CropInfo:
    """Where a square crop came from: box (x0, y0, x1, y1) in portrait pixels, edges exclusive,
    possibly reaching beyond the image; the portrait's (height, width); the crop's side."""

    box: tuple[int, int, int, int]
    image_hw: tuple[int, int]
    size: int

    @property
    def zoom(self) -> float:
        return self.size / (self.box[2] - self.box[0])

    def matrix(self) -> np.ndarray:
        """[2, 3] float64 map from portrait pixel centres to crop pixel centres (pixel areas
        scale about their corners, so pixel k of a side-`size` box covers [k, k+1) exactly)."""
        zoom = self.zoom
        x0, y0 = self.box[0], self.box[1]
        return np.array([[zoom, 0.0, zoom * (0.5 - x0) - 0.5],
                         [0.0, zoom, zoom * (0.5 - y0) - 0.5]])

    def inverse_matrix(self) -> np.ndarray:
        zoom = self.zoom
        x0, y0 = self.box[0], self.box[1]
        return np.array([[1.0 / zoom, 0.0, x0 + (0.5 / zoom) - 0.5],
                         [0.0, 1.0 / zoom, y0 + (0.5 / zoom) - 0.5]])


def face_crop_box(landmarks, image_hw, scale: float = 1.8, lift: float = 0.1) -> tuple[int, int, int, int]:
    """Square integer box (x0, y0, x1, y1) around a face given by points [K, 2] or a box [4].

    The side is `scale` times the longer side of the points' bounding box; the centre moves up
    by `lift` times the side because the 68 points stop at the brows and miss the forehead.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape == (4,):
        points = points.reshape(2, 2)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 2 or not np.isfinite(points).all():
        raise ValueError(f"landmarks must be finite [K, 2] points (K >= 2) or a box [4], got shape {points.shape}")
    if len(image_hw) != 2 or min(image_hw) < 1:
        raise ValueError(f"image_hw must be (height, width) of the portrait, got {image_hw}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    low, high = points.min(axis=0), points.max(axis=0)
    side = max(1, int(round(float((high - low).max()) * scale)))
    centre_x = (low[0] + high[0]) / 2
    centre_y = (low[1] + high[1]) / 2 - lift * side
    x0 = int(round(centre_x - side / 2))
    y0 = int(round(centre_y - side / 2))
    return x0, y0, x0 + side, y0 + side


def _check_box(box) -> tuple[int, int, int, int]:
    if len(box) != 4:
        raise ValueError(f"box must be (x0, y0, x1, y1), got {box}")
    x0, y0, x1, y1 = (int(v) for v in box)
    if x1 - x0 != y1 - y0 or x1 <= x0:
        raise ValueError(f"box must be a non-empty square (x1 - x0 == y1 - y0 > 0), got {box}; use face_crop_box")
    return x0, y0, x1, y1


def _as_batch(images: torch.Tensor, name: str) -> torch.Tensor:
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3 or not images.is_floating_point():
        raise ValueError(f"{name} must be a float [H, W, 3] or [N, H, W, 3] image, got {tuple(images.shape)}")
    return images


def _warp(images_nhwc: torch.Tensor, matrix: np.ndarray, out_hw: tuple[int, int], shrink: float,
          padding: str) -> torch.Tensor:
    chw = images_nhwc.permute(0, 3, 1, 2)
    if shrink > 1.0:
        # Bilinear sampling aliases when shrinking; blur first (skimage's sigma rule).
        sigma = (shrink - 1.0) / 2.0
        radius = max(1, int(np.ceil(3 * sigma)))
        chw = kf.gaussian_blur2d(chw, (2 * radius + 1, 2 * radius + 1), (sigma, sigma), border_type="replicate")
    batch = torch.as_tensor(matrix, dtype=chw.dtype, device=chw.device).expand(chw.shape[0], 2, 3)
    warped = kgt.warp_affine(chw, batch, out_hw, mode="bilinear", padding_mode=padding, align_corners=True)
    return warped.permute(0, 2, 3, 1)


def crop_face(image: torch.Tensor, box, size: int = 512, padding: str = "zeros") -> tuple[torch.Tensor, CropInfo]:
    """Crop the square `box` out of [H, W, 3] (or [N, H, W, 3]) and resample it to size x size.

    Parts of the box outside the image are filled per `padding` ("zeros", "border",
    "reflection"). Returns ([N, size, size, 3], CropInfo).
    """
    if padding not in _PADDING_MODES:
        raise ValueError(f"padding must be one of {_PADDING_MODES}, got {padding!r}")
    if size < 1:
        raise ValueError(f"size must be a positive pixel count, got {size}")
    batch = _as_batch(image, "image")
    info = CropInfo(_check_box(box), (int(batch.shape[1]), int(batch.shape[2])), int(size))
    crop = _warp(batch, info.matrix(), (size, size), 1.0 / info.zoom, padding)
    return crop, info


def feather_mask(info: CropInfo, feather: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """[H, W] weight of the pasted crop: 1 deep inside the box, smoothstep to 0 over `feather`
    portrait pixels inside its border, 0 outside (feather 0: a hard edge)."""
    if feather < 0:
        raise ValueError(f"feather must be >= 0 pixels, got {feather}")
    height, width = info.image_hw
    x0, y0, x1, y1 = info.box
    xs = torch.arange(width, device=device, dtype=torch.float64) + 0.5
    ys = torch.arange(height, device=device, dtype=torch.float64) + 0.5
    inset_x = torch.minimum(xs - x0, x1 - xs)
    inset_y = torch.minimum(ys - y0, y1 - ys)
    inset = torch.minimum(inset_y[:, None], inset_x[None, :])
    if feather == 0:
        return (inset > 0).to(dtype)
    ramp = (inset / feather).clamp(0.0, 1.0)
    return (ramp * ramp * (3 - 2 * ramp)).to(dtype)


def paste_back(portrait: torch.Tensor, generated: torch.Tensor, crop_info: CropInfo,
               feather: float = 16.0) -> torch.Tensor:
    """Composite [N, S, S, 3] generated crops into the [H, W, 3] portrait -> [N, H, W, 3].

    Outside the crop box the portrait is returned unchanged, bit for bit.
    """
    return paste_back_with_mask(portrait, generated, crop_info, feather)[0]


def paste_back_with_mask(portrait: torch.Tensor, generated: torch.Tensor, crop_info: CropInfo,
                         feather: float = 16.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``paste_back`` and the feathered blend weight it used, ``[H, W]`` in 0..1 (1 = generated)."""
    base = _as_batch(portrait, "portrait")
    if base.shape[0] != 1:
        raise ValueError(f"portrait must be one [H, W, 3] image, got {tuple(portrait.shape)}")
    frames = _as_batch(generated, "generated")
    if frames.shape[1] != frames.shape[2]:
        raise ValueError(f"generated frames must be square, got {tuple(frames.shape)}")
    if tuple(base.shape[1:3]) != crop_info.image_hw:
        raise ValueError(f"portrait is {tuple(base.shape[1:3])} but the crop came from {crop_info.image_hw}")
    frames = frames.to(device=base.device, dtype=base.dtype)
    # Generated frames may differ in size from the original crop (e.g. decoded at 512 from a
    # 256 crop); the box, not the crop size, fixes where they go.
    info = CropInfo(crop_info.box, crop_info.image_hw, int(frames.shape[1]))
    back = _warp(frames, info.inverse_matrix(), crop_info.image_hw, info.zoom, "border")
    mask = feather_mask(info, feather, device=base.device, dtype=base.dtype)
    weight = mask[None, :, :, None]
    return weight * back + (1 - weight) * base, mask


def select_face(candidates, by: str = "largest", index: int = 0) -> int:
    """Pick one face among boxes (x0, y0, x1, y1[, score]) or landmark sets [K, 2].

    by="largest": the biggest box area (first wins ties); by="index": `index` itself.
    """
    items = list(candidates)
    if not items:
        raise ValueError("no face candidates to select from (the detector found no face)")
    if by == "index":
        if not 0 <= index < len(items):
            raise ValueError(f"index {index} is out of range for {len(items)} detected faces")
        return int(index)
    if by != "largest":
        raise ValueError(f"by must be 'largest' or 'index', got {by!r}")
    areas = []
    for item in items:
        array = np.asarray(item, dtype=np.float64)
        if array.ndim == 1 and array.shape[0] in (4, 5):
            width, height = array[2] - array[0], array[3] - array[1]
        elif array.ndim == 2 and array.shape[1] == 2:
            width, height = array.max(axis=0) - array.min(axis=0)
        else:
            raise ValueError(f"each candidate must be a box [4] / [5] or points [K, 2], got shape {array.shape}")
        areas.append(max(width, 0.0) * max(height, 0.0))
    return int(np.argmax(areas))
