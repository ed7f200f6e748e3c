"""Reading 68-point landmarks from JSON, and drawing them for previews."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import torch

import folder_paths

from ..xportrait_core.face.driving import FaceLandmarks


def _frame_points(entry) -> tuple[list, bool]:
    if entry is None:
        return [[0.0, 0.0]] * 68, False
    if isinstance(entry, dict):
        if not entry.get("found", entry.get("lmk68") is not None) or entry.get("lmk68") is None:
            return [[0.0, 0.0]] * 68, False
        entry = entry["lmk68"]
    return entry, True


def read_landmarks_json(path: str, entry: str, image_hw: tuple[int, int], frames: int) -> FaceLandmarks:
    """Landmarks for `frames` images of size `image_hw` from a JSON file.

    Accepted layouts: ``{"source": {"lmk68": ...}, "driving": {"frames": [{"found", "lmk68"}, ...]}}``
    (pick ``entry``), or a plain list with one [68,2] list (or null) per frame.
    """
    full = path if os.path.isabs(path) else os.path.join(folder_paths.get_input_directory(), path)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"landmarks_file '{path}' not found (looked at {full}); give an absolute path or "
                                "a file in ComfyUI's input folder")
    with open(full) as f:
        data = json.load(f)
    if isinstance(data, dict):
        if entry not in data:
            raise ValueError(f"landmarks_file '{path}' has no '{entry}' entry (has: {sorted(data)})")
        data = data[entry]
        data = data.get("frames", [data]) if isinstance(data, dict) else data
    rows = [_frame_points(item) for item in data]
    if len(rows) != frames:
        raise ValueError(f"landmarks_file '{path}' ({entry}) has {len(rows)} frames but the images have {frames}")
    points = np.asarray([r[0] for r in rows], dtype=np.float32)
    if points.shape[1:] != (68, 2):
        raise ValueError(f"landmarks_file '{path}': every frame needs 68 (x, y) points, got {list(points.shape[1:])}")
    return FaceLandmarks(points, np.array([r[1] for r in rows]), image_hw)


def draw_landmarks(images: torch.Tensor, landmarks: FaceLandmarks) -> torch.Tensor:
    """A copy of the images with found points in green and interpolated/missing frames left plain."""
    out = (images[..., :3].clamp(0, 1).cpu().numpy() * 255).astype(np.uint8).copy()
    h, w = out.shape[1:3]
    sy, sx = h / landmarks.image_hw[0], w / landmarks.image_hw[1]
    radius = max(1, round(min(h, w) / 200))
    for i, frame in enumerate(out):
        if not landmarks.found[i]:
            continue
        for x, y in landmarks.points[i]:
            cv2.circle(frame, (int(round(x * sx)), int(round(y * sy))), radius, (0, 255, 0), -1)
    return torch.from_numpy(out).float() / 255
