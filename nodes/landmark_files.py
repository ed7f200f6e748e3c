"""Reading 68-point landmarks from JSON, and drawing them for previews."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import torch

import folder_paths

from ..xportrait_core.face.driving import FaceLandmarks
from ..xportrait_core.finite_inputs import require_finite


def _frame_points(entry) -> tuple[list, bool]:
    if entry is None:
        return [[0.0, 0.0]] * 68, False
    if isinstance(entry, dict):
        if not entry.get("found", entry.get("lmk68") is not None) or entry.get("lmk68") is None:
            return [[0.0, 0.0]] * 68, False
        entry = entry["lmk68"]
    return entry, True


LANDMARK_SUFFIX = ".json"


def landmark_file_choices() -> list[str]:
    """The JSON files in ComfyUI's input folder (what the Load Landmarks combo offers)."""
    folder = folder_paths.get_input_directory()
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder)
                  if name.lower().endswith(LANDMARK_SUFFIX) and os.path.isfile(os.path.join(folder, name)))


def resolve_input_file(name: str, what: str) -> str:
    """The real path of ``name`` inside ComfyUI's input folder; anything that resolves elsewhere
    (``..``, an absolute path, a link pointing out) is refused without being opened."""
    folder = os.path.realpath(folder_paths.get_input_directory())
    outside = ValueError(f"{what} {name!r} is outside ComfyUI's input folder; only files in the input folder can be "
                         "read: copy or upload the file there and pick it from the list")
    try:
        full = os.path.realpath(folder_paths.get_annotated_filepath(name, folder))
    except ValueError:  # ComfyUI's own traversal guard
        raise outside from None
    if os.path.commonpath([full, folder]) != folder:
        raise outside
    if not os.path.isfile(full):
        raise FileNotFoundError(f"{what} {name!r} is not in ComfyUI's input folder; copy or upload it there")
    return full


def read_landmarks_json(path: str, entry: str, image_hw: tuple[int, int], frames: int) -> FaceLandmarks:
    """Landmarks for `frames` images of size `image_hw` from a JSON file in ComfyUI's input folder.

    Accepted layouts: ``{"source": {"lmk68": ...}, "driving": {"frames": [{"found", "lmk68"}, ...]}}``
    (pick ``entry``), or a plain list with one [68,2] list (or null) per frame. Errors never quote
    the file's contents.
    """
    full = resolve_input_file(path, "landmarks_file")
    try:
        with open(full) as f:
            data = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"landmarks_file '{path}' is not valid JSON (line {error.lineno}, column {error.colno})") \
            from None
    if isinstance(data, dict):
        if entry not in data:
            raise ValueError(f"landmarks_file '{path}' has no '{entry}' entry; expected "
                             "{\"source\": {\"lmk68\": ...}, \"driving\": {\"frames\": [...]}} or a list of frames")
        data = data[entry]
        data = data.get("frames", [data]) if isinstance(data, dict) else data
    if not isinstance(data, list):
        raise ValueError(f"landmarks_file '{path}' ({entry}): expected a list of frames")
    rows = [_frame_points(item) for item in data]
    if len(rows) != frames:
        raise ValueError(f"landmarks_file '{path}' ({entry}) has {len(rows)} frames but the images have {frames}")
    points = np.asarray([r[0] for r in rows], dtype=np.float32)
    if points.shape[1:] != (68, 2):
        raise ValueError(f"landmarks_file '{path}': every frame needs 68 (x, y) points, got {list(points.shape[1:])}")
    found = np.array([r[1] for r in rows])
    require_finite(np.where(found[:, None, None], points, 0.0), f"landmarks_file '{path}' ({entry})",
                   "give those frames real coordinates or mark them not found (null)")
    return FaceLandmarks(points, found, image_hw)


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
