"""The S3FD + 2D-FAN landmark detector inside ComfyUI: weight files in models/xportrait/face/."""
from __future__ import annotations

import functools
import os

import numpy as np
import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..xportrait_core.face.detector import WEIGHTS, as_uint8_frames, ensure_weights
from ..xportrait_core.face.fan_weights import PLAIN_FAN, load_landmark_detector
from ..xportrait_core.face.driving import FaceLandmarks
from ..xportrait_core.face.resample import resize_numpy
from . import model_files

FACE_SUBFOLDER = "face"
OFFICIAL_GRID = 256  # the official code runs FAN on 256x256 copies of the frames
#: Frames turned into the detector's uint8 input at a time. The conversion goes through float
#: copies (float64 for the official resize), which for a whole minute-long clip would cost
#: several times the clip itself; per chunk it costs a few frames, and the uint8 result a quarter
#: of the IMAGE batch (a sixteenth at the official 256x256).
DETECTION_CHUNK = 32


def face_weights_folder(allow_download: bool) -> str:
    """The face/ folder that holds both weight files, fetching them into the first one if allowed."""
    candidates = [os.path.join(p, FACE_SUBFOLDER) for p in folder_paths.get_folder_paths(model_files.FOLDER)]
    for folder in candidates:
        try:
            ensure_weights(folder, allow_download=False)
            return folder
        except FileNotFoundError:
            continue
    target = candidates[0]
    os.makedirs(target, exist_ok=True)
    total = sum(w.approx_bytes for w in WEIGHTS.values())
    bar = comfy.utils.ProgressBar(total)
    ensure_weights(target, allow_download=allow_download, progress=lambda done, size: bar.update_absolute(done, total))
    return target


@functools.lru_cache(maxsize=2)
def _detector(folder: str, device: str, allow_download: bool):
    # An unreadable TorchScript archive falls back to the plain-weights FAN release (fetched into
    # the same folder when downloads are allowed).
    bars: list = []  # made on the first byte, so no empty bar shows when nothing is fetched

    def progress(done: int, size: int | None) -> None:
        total = size or PLAIN_FAN.approx_bytes
        if not bars:
            bars.append(comfy.utils.ProgressBar(total))
        bars[0].update_absolute(done, total)

    return load_landmark_detector(folder, device=torch.device(device), allow_download=allow_download,
                                  progress=progress)


def detect_landmarks(images: torch.Tensor, face: str | int, at_official_size: bool,
                     allow_download: bool) -> FaceLandmarks:
    """68-point landmarks of every image, in the images' own pixels; frames without a face are flagged."""
    detector = _detector(face_weights_folder(allow_download), str(mm.get_torch_device()), allow_download)
    h, w = images.shape[1:3]
    points, found, _ = detector.detect(detector_frames(images, at_official_size), face=face)
    if at_official_size:
        points = points * np.array([w / OFFICIAL_GRID, h / OFFICIAL_GRID], dtype=np.float32)
    points = np.nan_to_num(points, nan=0.0)
    return FaceLandmarks(points, found, (h, w))


def detector_frames(images: torch.Tensor, at_official_size: bool, chunk: int | None = None) -> np.ndarray:
    """The detector's uint8 input [N, h, w, 3] for an IMAGE batch, converted ``chunk`` frames at a time
    (DETECTION_CHUNK by default; each frame on its own, so the chunk size never changes a value)."""
    chunk = chunk or DETECTION_CHUNK
    parts = []
    for start in range(0, images.shape[0], chunk):
        part = images[start:start + chunk, ..., :3].clamp(0, 1).cpu().numpy()
        if at_official_size:
            part = resize_numpy(part, (OFFICIAL_GRID, OFFICIAL_GRID))
        parts.append(as_uint8_frames(part))
    return np.concatenate(parts)
