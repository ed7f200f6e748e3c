"""68-point landmarks for a batch of frames: S3FD face boxes, one face per frame, 2D-FAN on the
256x256 crop, heatmaps decoded back to frame pixels (the official `face_alignment` pipeline,
batched over frames on one device).

The geometry (crop window, heatmap decoding, mirrored-input averaging) is `fan.py`'s; this module
runs the networks, picks the face and owns the weight files. A frame without a face is reported
as not found instead of failing the clip; `landmark_track.fill_missing_landmarks` fills it later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..download import DownloadError, Progress, download
from .fan import CROP_RESOLUTION, centre_and_scale, crop_for_fan, decode_heatmaps, mirror_heatmaps
from .networks.fan2d import load_fan
from .networks.s3fd import NMS_THRESHOLD, SCORE_THRESHOLD, decode, load_s3fd, prepare_input

FACE_CHOICES = ("largest", "strongest")


@dataclass(frozen=True)
class WeightFile:
    name: str
    url: str
    sha256: str | None
    approx_bytes: int
    # Other names accepted in the folder for the same network (another release format).
    alternatives: tuple[str, ...] = ()


_ORIGIN = "https://www.adrianbulat.com/downloads/python-fan"
# The hex part of each name is the first 10 digits of the file's sha256 (torch.hub's naming rule;
# face_alignment does not check it). The full digests are those other projects pin for the same
# files, and each begins with its name's prefix.
WEIGHTS: dict[str, WeightFile] = {
    # The TorchScript release face_alignment 1.3 - 1.4 loads (X-Portrait's version). The plain
    # state_dict release of the same network (face_alignment 1.5) is accepted as well.
    "fan": WeightFile("2DFAN4-cd938726ad.zip", f"{_ORIGIN}/2DFAN4-cd938726ad.zip",
                      "cd938726adb1f15f361263cce2db9cb820c42585fa8796ec72ce19107f369a46", 96_316_515,
                      alternatives=("2DFAN4-11f355bf06.pth.tar",)),
    "s3fd": WeightFile("s3fd-619a316812.pth", f"{_ORIGIN}/s3fd-619a316812.pth",
                       "619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543", 89_843_225),
}


class MissingWeightsError(FileNotFoundError):
    """Landmark weights are not in the folder and could not (or may not) be downloaded."""


def _present(folder: Path, weight: WeightFile) -> Path | None:
    for name in (weight.name, *weight.alternatives):
        path = folder / name
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def _missing_message(folder: Path, missing: dict[str, WeightFile], reason: str) -> str:
    lines = [f"  {w.name}  from  {w.url}" for w in missing.values()]
    return (f"the face landmark detector needs {len(missing)} weight file(s) that are not in the folder "
            f"{folder} ({reason}). Download them and put them into that folder:\n" + "\n".join(lines))


def ensure_weights(folder: str | os.PathLike, allow_download: bool, progress: Progress | None = None,
                   weights: dict[str, WeightFile] = WEIGHTS) -> dict[str, Path]:
    """Path of each weight file ({"fan": ..., "s3fd": ...}) in `folder`, downloading and
    hash-checking the missing ones when `allow_download`; MissingWeightsError otherwise or when a
    download fails (its message names the files, their URLs and the folder)."""
    folder = Path(folder)
    paths = {role: _present(folder, w) for role, w in weights.items()}
    missing = {role: weights[role] for role, path in paths.items() if path is None}
    if missing and not allow_download:
        raise MissingWeightsError(_missing_message(folder, missing, "automatic download is off"))
    for role, weight in missing.items():
        try:
            paths[role] = download(weight.url, folder / weight.name, weight.sha256, progress)
        except DownloadError as error:
            raise MissingWeightsError(_missing_message(folder, missing, str(error))) from error
    return paths


def load_detector(folder: str | os.PathLike, device: torch.device | str | None = None,
                  **options) -> "LandmarkDetector":
    """A LandmarkDetector from the weight files in `folder` (no download; see ensure_weights)."""
    paths = ensure_weights(folder, allow_download=False)
    return LandmarkDetector(load_fan(paths["fan"]), load_s3fd(paths["s3fd"]), device, **options)


def as_uint8_frames(images) -> np.ndarray:
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 4 or array.shape[-1] not in (3, 4) or array.shape[0] < 1:
        raise ValueError(f"images must be a batch of RGB frames [N, H, W, 3], got shape {array.shape}")
    array = array[..., :3]
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind != "f":
        raise ValueError(f"images must be uint8 (0..255) or float (0..1), got dtype {array.dtype}")
    # skimage's img_as_ubyte, which the official code applies before detection, rounds.
    return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def _module_dtype(module: nn.Module) -> torch.dtype:
    parameter = next(module.parameters(), None)
    return parameter.dtype if parameter is not None else torch.float32


class LandmarkDetector:
    """S3FD + 2D-FAN on one device. The networks are moved there and put in eval mode.

    `flip_input` adds the heatmaps of the mirrored crop (the official setting); `integer_coords`
    truncates landmarks to whole pixels like face_alignment (False keeps sub-pixel values).
    `batch_size` frames go through each network at once.
    """

    def __init__(self, fan: nn.Module, s3fd: nn.Module, device: torch.device | str | None = None, *,
                 flip_input: bool = True, integer_coords: bool = True, score_threshold: float = SCORE_THRESHOLD,
                 nms_threshold: float = NMS_THRESHOLD, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.fan = fan.to(self.device).eval()
        self.s3fd = s3fd.to(self.device).eval()
        self.flip_input = flip_input
        self.integer_coords = integer_coords
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.batch_size = batch_size

    @torch.inference_mode()
    def face_boxes(self, frames: np.ndarray) -> list[np.ndarray]:
        """Per frame all faces [K, 5] (x0, y0, x1, y1, score), strongest first."""
        boxes: list[np.ndarray] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = torch.from_numpy(frames[start:start + self.batch_size]).to(self.device)
            heads = self.s3fd(prepare_input(chunk).to(_module_dtype(self.s3fd)))
            boxes.extend(decode(heads, self.score_threshold, self.nms_threshold))
        return boxes

    @torch.inference_mode()
    def heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops [M, 256, 256, 3] -> float32 heatmaps [M, 68, 64, 64] (flip-averaged when set)."""
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = torch.from_numpy(crops[start:start + self.batch_size]).to(self.device)
            batch = batch.permute(0, 3, 1, 2).to(_module_dtype(self.fan)) / 255.0
            if self.flip_input:
                both = self.fan(torch.cat([batch, batch.flip(-1)])).float()
                maps = both[:len(batch)] + mirror_heatmaps(both[len(batch):])
            else:
                maps = self.fan(batch).float()
            out.append(maps.cpu().numpy())
        return np.concatenate(out)

    def detect(self, images, face: str | int = "largest") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Landmarks of one face per frame.

        images: [N, H, W, 3] RGB, uint8 or float in [0, 1] (numpy or torch). face: "largest"
        (box area), "strongest" (highest score; the face X-Portrait's code takes), or an index
        into the strongest-first list.
        Returns (landmarks [N, 68, 2] float32 (x, y) frame pixels, NaN where not found;
        found [N] bool; boxes [N, 5] float32 chosen box (x0, y0, x1, y1, score), NaN where not found).
        """
        if not (face in FACE_CHOICES or (isinstance(face, int) and not isinstance(face, bool) and face >= 0)):
            raise ValueError(f"face must be one of {FACE_CHOICES} or a face index >= 0, got {face!r}")
        frames = as_uint8_frames(images)
        count = len(frames)
        chosen = np.full((count, 5), np.nan)
        for i, candidates in enumerate(self.face_boxes(frames)):
            pick = _pick(candidates, face)
            if pick is not None:
                chosen[i] = pick
        found = np.isfinite(chosen[:, 0])
        landmarks = np.full((count, 68, 2), np.nan, np.float32)
        if not found.any():
            return landmarks, found, chosen.astype(np.float32)
        # One network batch at a time: the float heatmaps take 1.1 MB per face (twice that
        # while flipped), so a long clip's whole set would cost more than the clip itself.
        with_face = np.flatnonzero(found)
        for start in range(0, len(with_face), self.batch_size):
            part = with_face[start:start + self.batch_size]
            windows = [centre_and_scale(chosen[i]) for i in part]
            crops = np.stack([crop_for_fan(frames[i], c, s, CROP_RESOLUTION) for i, (c, s) in zip(part, windows)])
            maps = self.heatmaps(crops)
            for row, (i, (centre, scale)) in enumerate(zip(part, windows)):
                _, points, _ = decode_heatmaps(maps[row:row + 1], centre, scale, self.integer_coords)
                landmarks[i] = points[0]
        return landmarks, found, chosen.astype(np.float32)


def _pick(candidates: np.ndarray, face: str | int) -> np.ndarray | None:
    if len(candidates) == 0:
        return None
    if face == "strongest":
        return candidates[0]
    if face == "largest":
        area = (candidates[:, 2] - candidates[:, 0]) * (candidates[:, 3] - candidates[:, 1])
        return candidates[int(np.argmax(area))]
    return candidates[face] if face < len(candidates) else None


# ComfyUI shows an error's type as module.name: a short, readable type instead of the pack's path.
MissingWeightsError.__module__ = "xportrait"
