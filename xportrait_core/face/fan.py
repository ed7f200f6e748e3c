"""The 2D-FAN landmark pipeline around the network, with `face_alignment`'s conventions.

Face box [x0, y0, x1, y1] -> centre (box centre moved up by 0.12 box heights) and scale
((w + h) / 195 for S3FD boxes) -> a square window of 200 * scale pixels cut out with integer
corners, zero-padded and resized to 256x256 -> network -> 68 heatmaps of 64x64 -> argmax per
heatmap, a quarter-cell step towards the higher neighbour, minus half a cell -> back to image
pixels through the inverse window transform, truncated to integers like the package does.

Only the geometry is here. The FAN and S3FD networks are callables supplied by the caller.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import cv2
import numpy as np
import torch

WINDOW_PER_SCALE = 200.0  # the window side, in image pixels, per unit of scale
S3FD_REFERENCE_SCALE = 195.0
CENTRE_LIFT = 0.12
CROP_RESOLUTION = 256
HEATMAP_RESOLUTION = 64


def _mirror_order() -> list[int]:
    """Index of each point's left-right mirror partner in the 68-point iBUG layout."""
    order = list(range(68))

    def swap(a: Sequence[int], b: Sequence[int]) -> None:
        for i, j in zip(a, b):
            order[i], order[j] = j, i

    swap(range(0, 8), range(16, 8, -1))        # jaw
    swap(range(17, 22), range(26, 21, -1))     # brows
    swap(range(31, 33), range(35, 33, -1))     # nose base
    swap([36, 37, 38, 39, 40, 41], [45, 44, 43, 42, 47, 46])  # eye corners and lids
    swap(range(48, 51), range(54, 51, -1))     # outer upper lip
    swap(range(55, 57), range(59, 57, -1))     # outer lower lip
    swap(range(60, 62), range(64, 62, -1))     # inner upper lip
    swap([65], [67])                           # inner lower lip
    return order


MIRROR_ORDER = _mirror_order()


class FaceBoxDetector(Protocol):
    """Finds faces in an RGB uint8 [H, W, 3] image: [K, 4] or [K, 5] (x0, y0, x1, y1[, score])."""

    def __call__(self, image: np.ndarray) -> np.ndarray: ...


def _boxes(boxes) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4))
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] not in (4, 5):
        raise ValueError(f"face boxes must be [K, 4] or [K, 5] (x0, y0, x1, y1[, score]), got shape {array.shape}")
    return array


class StaticFaceBoxDetector:
    """Stand-in detector that reports the same boxes for every image (tests, known crops)."""

    def __init__(self, boxes) -> None:
        self.boxes = _boxes(boxes)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.boxes.copy()


def centre_and_scale(box, reference_scale: float = S3FD_REFERENCE_SCALE) -> tuple[np.ndarray, float]:
    """FAN crop centre (x, y) and scale for a detector box (x0, y0, x1, y1[, score])."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64)[:4])
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box must have x1 > x0 and y1 > y0, got {box}")
    centre = np.array([x1 - (x1 - x0) / 2.0, y1 - (y1 - y0) / 2.0 - (y1 - y0) * CENTRE_LIFT])
    return centre, (x1 - x0 + y1 - y0) / reference_scale


def window_transform(centre, scale: float, resolution: float) -> np.ndarray:
    """3x3 map from image pixels to a `resolution` grid over the 200*scale window."""
    side = WINDOW_PER_SCALE * scale
    return np.array([
        [resolution / side, 0.0, resolution * (-centre[0] / side + 0.5)],
        [0.0, resolution / side, resolution * (-centre[1] / side + 0.5)],
        [0.0, 0.0, 1.0],
    ])


def _to_image(points: np.ndarray, centre, scale: float, resolution: float) -> np.ndarray:
    inverse = np.linalg.inv(window_transform(centre, scale, resolution))
    homogeneous = np.concatenate([points, np.ones(points.shape[:-1] + (1,))], axis=-1)
    return homogeneous @ inverse[:2].T


def crop_window(centre, scale: float, resolution: int = CROP_RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    """Integer corners (ul, br) of the pixel window the crop copies: rows ul_y..br_y-1,
    columns ul_x..br_x-1 (the package maps grid points 1 and `resolution` and truncates)."""
    corners = _to_image(np.array([[1.0, 1.0], [resolution, resolution]]), centre, scale, resolution)
    truncated = np.trunc(corners).astype(np.int64)
    return truncated[0], truncated[1]


def crop_for_fan(image: np.ndarray, centre, scale: float, resolution: int = CROP_RESOLUTION) -> np.ndarray:
    """uint8 [res, res, 3] network input: the window, zero-padded, resized bilinearly (OpenCV)."""
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an RGB uint8 [H, W, 3] array, got {image.dtype} {image.shape}")
    ul, br = crop_window(centre, scale, resolution)
    height, width = image.shape[:2]
    window = np.zeros((br[1] - ul[1], br[0] - ul[0], image.shape[2]), dtype=np.uint8)
    src_x = slice(max(ul[0], 0), min(br[0], width))
    src_y = slice(max(ul[1], 0), min(br[1], height))
    if src_x.start < src_x.stop and src_y.start < src_y.stop:
        window[src_y.start - ul[1]:src_y.stop - ul[1], src_x.start - ul[0]:src_x.stop - ul[0]] = image[src_y, src_x]
    return cv2.resize(window, (resolution, resolution), interpolation=cv2.INTER_LINEAR)


def decode_heatmaps(heatmaps, centre=None, scale: float | None = None, integer_coords: bool = True):
    """Heatmaps [B, C, H, W] -> (heatmap coords [B, C, 2], image coords [B, C, 2] or None,
    peak scores [B, C]).

    The quarter-cell refinement applies only away from the border (1 <= x, y <= 62 on the
    64 grid, as in the package). `integer_coords` truncates image coordinates to integers
    like the package; False keeps the sub-pixel value.
    """
    hm = np.asarray(heatmaps, dtype=np.float32)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be [B, C, H, W], got shape {hm.shape}")
    batch, channels, height, width = hm.shape
    flat = hm.reshape(batch, channels, height * width)
    peak = flat.argmax(axis=-1)
    scores = np.take_along_axis(flat, peak[..., None], axis=-1)[..., 0]
    px, py = peak % width, peak // width
    b, c = np.meshgrid(np.arange(batch), np.arange(channels), indexing="ij")
    interior = (px > 0) & (px < HEATMAP_RESOLUTION - 1) & (py > 0) & (py < HEATMAP_RESOLUTION - 1)
    # Neighbour lookups on clipped indices; border peaks keep a zero step via `interior`.
    xl, xr = np.clip(px - 1, 0, width - 1), np.clip(px + 1, 0, width - 1)
    yu, yd = np.clip(py - 1, 0, height - 1), np.clip(py + 1, 0, height - 1)
    step_x = np.sign(hm[b, c, py, xr] - hm[b, c, py, xl])
    step_y = np.sign(hm[b, c, yd, px] - hm[b, c, yu, px])
    coords = np.stack([px, py], axis=-1).astype(np.float32) + 0.5
    coords += np.where(interior[..., None], np.stack([step_x, step_y], axis=-1) * np.float32(0.25), 0)
    if centre is None or scale is None:
        return coords, None, scores
    image = _to_image(coords.astype(np.float64), centre, scale, height)
    if integer_coords:
        image = np.trunc(image)
    return coords, image.astype(np.float32), scores


def mirror_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """Heatmaps of the left-right flipped image, expressed for the unflipped point order."""
    return heatmaps[:, MIRROR_ORDER].flip(-1)


def detect_landmarks(image: np.ndarray, detector: FaceBoxDetector,
                     network: Callable[[torch.Tensor], torch.Tensor], flip_input: bool = True,
                     reference_scale: float = S3FD_REFERENCE_SCALE,
                     integer_coords: bool = True) -> list[np.ndarray]:
    """68 landmarks [68, 2] float32 for each face the detector finds in an RGB uint8 image.

    `network` takes [B, 3, 256, 256] floats in [0, 1] and returns [B, 68, 64, 64] heatmaps;
    with `flip_input` the heatmaps of the mirrored crop are added (the official setting).
    An empty list means no face.
    """
    landmarks = []
    for box in _boxes(detector(image)):
        centre, scale = centre_and_scale(box, reference_scale)
        crop = crop_for_fan(image, centre, scale)
        batch = torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
        with torch.no_grad():
            heatmaps = network(batch).float()
            if flip_input:
                heatmaps = heatmaps + mirror_heatmaps(network(batch.flip(-1)).float())
        _, points, _ = decode_heatmaps(heatmaps.cpu().numpy(), centre, scale, integer_coords)
        landmarks.append(points[0])
    return landmarks
