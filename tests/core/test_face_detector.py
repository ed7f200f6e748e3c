"""Batched S3FD + 2D-FAN landmark detection with stand-in networks, and the weight files."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch import nn

from harness.file_server import FileServer, closed_port_url
from xportrait_core.face.detector import (WEIGHTS, LandmarkDetector, MissingWeightsError, WeightFile, ensure_weights,
                                          load_detector)
from xportrait_core.face.networks import FAN2D, S3FD

SIZE = 256
FACE_ROW = 7  # stride-16 cell row of every stand-in face: prior centre y = 8 + 16 * 7 = 120, side 64


class MarkerS3FD(nn.Module):
    """Stand-in S3FD driven by pixel (0, 0) of each frame: red 255 means one face, on the stride-16
    cell (FACE_ROW, green value) with zero regression, so its box is that cell's 64-pixel prior;
    blue 255 adds a small, stronger face on stride-8 cell (2, 2). Anything else: no face."""

    def forward(self, x):
        frames, _, height, width = x.shape
        bgr = x[:, :, 0, 0] + torch.tensor([104.0, 117.0, 123.0])
        heads = []
        for stride in (4, 8, 16, 32, 64, 128):
            cells = (max(height // stride, 1), max(width // stride, 1))
            logits = torch.zeros(frames, 2, *cells)
            logits[:, 0] = 10.0
            heads.append((logits, torch.zeros(frames, 4, *cells)))
        for n in range(frames):
            if bgr[n, 2] > 250:
                heads[2][0][n, :, FACE_ROW, int(round(bgr[n, 1].item()))] = torch.tensor([0.0, 3.0])
            if bgr[n, 0] > 250:
                heads[1][0][n, :, 2, 2] = torch.tensor([0.0, 8.0])
        return heads


def _frame(face_col: int | None, small_face: bool = False) -> np.ndarray:
    frame = np.full((SIZE, SIZE, 3), 90, np.uint8)
    frame[0, 0] = (255 if face_col is not None else 0, face_col or 0, 255 if small_face else 0)
    return frame


def _expected_box(face_col: int) -> np.ndarray:
    cx, cy = 8 + 16 * face_col, 8 + 16 * FACE_ROW
    return np.array([cx - 32, cy - 32, cx + 32, cy + 32], np.float64)


def _gaussian_maps(points: np.ndarray, size: int = 64, sigma: float = 1.0) -> torch.Tensor:
    grid = np.arange(size, dtype=np.float64)
    gx = np.exp(-0.5 * ((grid[None, :] - points[:, :1]) / sigma) ** 2)
    gy = np.exp(-0.5 * ((grid[None, :] - points[:, 1:]) / sigma) ** 2)
    return torch.from_numpy(gy[:, :, None] * gx[:, None, :]).float()


class FixedHeatmapFAN(nn.Module):
    """Stand-in FAN: the same 68 heatmaps for every crop; counts the crops it sees."""

    def __init__(self, maps: torch.Tensor):
        super().__init__()
        self.register_buffer("maps", maps)
        self.crops_seen = 0

    def forward(self, x):
        assert x.shape[1:] == (3, 256, 256) and 0.0 <= x.min() and x.max() <= 1.0
        self.crops_seen += len(x)
        return self.maps.expand(len(x), -1, -1, -1)


def _image_points(heatmap_points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Where face_alignment puts a heatmap location (cell index + 0.5 convention) in the frame:
    centre lifted by 0.12 box heights, a square window of 200 * (w + h) / 195 pixels."""
    w, h = box[2] - box[0], box[3] - box[1]
    centre = np.array([box[0] + w / 2, box[1] + h / 2 - 0.12 * h])
    side = 200.0 * (w + h) / 195.0
    return (heatmap_points + 0.5) * side / 64.0 + centre - side / 2


def test_stand_in_heatmaps_come_back_as_frame_points():
    rng = np.random.default_rng(0)
    # Peaks a quarter cell off a grid point: the package's quarter-cell refinement is then exact.
    points = rng.integers(4, 60, size=(68, 2)) + rng.choice([-0.25, 0.25], size=(68, 2))
    fan = FixedHeatmapFAN(_gaussian_maps(points))
    detector = LandmarkDetector(fan, MarkerS3FD(), "cpu", flip_input=False, integer_coords=False, batch_size=2)
    frames = np.stack([_frame(7), _frame(None), _frame(9)])
    landmarks, found, boxes = detector.detect(frames)
    assert landmarks.shape == (3, 68, 2) and landmarks.dtype == np.float32
    assert found.tolist() == [True, False, True]
    assert np.isnan(landmarks[1]).all() and np.isnan(boxes[1]).all()
    for i, col in ((0, 7), (2, 9)):
        assert np.allclose(boxes[i, :4], _expected_box(col), atol=1e-3)
        assert boxes[i, 4] == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-5)
        assert np.allclose(landmarks[i], _image_points(points, _expected_box(col)), atol=1e-3)
    assert fan.crops_seen == 2  # only frames with a face reach the FAN

    whole = LandmarkDetector(fan, MarkerS3FD(), flip_input=False).detect(frames)[0]
    assert np.array_equal(whole[found], np.trunc(landmarks[found]))  # package default: whole pixels


def test_mirrored_crop_is_mapped_back_before_adding():
    # A FAN that "sees" the crop: every heatmap is the crop's brightness pooled to 64x64, so the
    # mirrored crop's maps are mirrored; flip averaging must then leave the peak where it was.
    class BrightnessFAN(nn.Module):
        def forward(self, x):
            return nn.functional.avg_pool2d(x.sum(1, keepdim=True), 4).expand(-1, 68, -1, -1)

    frame = _frame(7)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    spot = (140.0, 130.0)  # inside the face window, right of its vertical axis
    frame[..., 1] = np.clip(90 + 160 * np.exp(-((xx - spot[0]) ** 2 + (yy - spot[1]) ** 2) / 18.0), 0, 255)
    frame[0, 0, 1] = 7
    plain = LandmarkDetector(BrightnessFAN(), MarkerS3FD(), flip_input=False, integer_coords=False).detect(frame[None])
    flipped = LandmarkDetector(BrightnessFAN(), MarkerS3FD(), flip_input=True, integer_coords=False).detect(frame[None])
    assert np.allclose(plain[0], flipped[0], atol=1e-4)
    cell = 200.0 * 128 / 195.0 / 64.0  # frame pixels per heatmap cell for the 64-pixel box
    assert np.abs(flipped[0][0] - np.array(spot)).max() < cell


def test_face_choice_and_missing_index():
    fan = FixedHeatmapFAN(_gaussian_maps(np.full((68, 2), 30.25)))
    detector = LandmarkDetector(fan, MarkerS3FD(), flip_input=False)
    frames = _frame(10, small_face=True)[None]
    large = detector.detect(frames, face="largest")[2][0]
    strong = detector.detect(frames, face="strongest")[2][0]
    assert np.allclose(large[:4], _expected_box(10))
    assert np.allclose(strong[:4], [20 - 16, 20 - 16, 20 + 16, 20 + 16])  # stride-8 prior at cell (2, 2)
    assert np.allclose(detector.detect(frames, face=1)[2][0], large)
    _, found, _ = detector.detect(frames, face=2)
    assert not found[0]
    with pytest.raises(ValueError, match="face must be"):
        detector.detect(frames, face="biggest")


def test_inputs_float_or_uint8_and_validated():
    fan = FixedHeatmapFAN(_gaussian_maps(np.full((68, 2), 30.25)))
    detector = LandmarkDetector(fan, MarkerS3FD(), flip_input=False)
    frames = np.stack([_frame(6), _frame(None)])
    as_uint8 = detector.detect(frames)
    as_float = detector.detect(torch.from_numpy(frames.astype(np.float32) / 255.0))
    assert np.array_equal(as_uint8[1], as_float[1])
    assert np.allclose(as_uint8[0][0], as_float[0][0])
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        detector.detect(frames[0])
    with pytest.raises(ValueError, match="dtype"):
        detector.detect(frames.astype(np.int32))


def test_random_weight_networks_run_end_to_end():
    torch.manual_seed(0)
    frames = np.random.default_rng(1).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    boxes = LandmarkDetector(FixedHeatmapFAN(torch.zeros(68, 64, 64)), S3FD(), batch_size=2).face_boxes(frames)
    assert len(boxes) == 3 and all(b.ndim == 2 and b.shape[1] == 5 for b in boxes)
    landmarks, found, chosen = LandmarkDetector(FAN2D(stacks=1), MarkerS3FD(), flip_input=False).detect(
        np.stack([_frame(5), _frame(None)]))
    assert found.tolist() == [True, False]
    assert landmarks.shape == (2, 68, 2) and np.isfinite(landmarks[0]).all() and chosen.shape == (2, 5)


def _registry(base_url: str, digests: dict[str, str | None]) -> dict[str, WeightFile]:
    return {"fan": WeightFile("fan-test.zip", f"{base_url}/fan-test.zip", digests.get("fan"), 100,
                              alternatives=("fan-test.pth.tar",)),
            "s3fd": WeightFile("s3fd-test.pth", f"{base_url}/s3fd-test.pth", digests.get("s3fd"), 100)}


def test_registry_names_carry_their_sha256_prefix():
    for weight in WEIGHTS.values():
        prefix = weight.name.split("-")[-1].split(".")[0]
        assert len(prefix) == 10 and weight.sha256.startswith(prefix)
        assert weight.url.endswith("/" + weight.name) and weight.url.startswith("https://")


def test_missing_weights_name_files_urls_and_folder(tmp_path):
    folder = tmp_path / "models" / "xportrait" / "face"
    registry = _registry(closed_port_url(""), {})
    for allow in (False, True):
        with pytest.raises(MissingWeightsError) as error:
            ensure_weights(folder, allow_download=allow, weights=registry)
        message = str(error.value)
        assert str(folder) in message
        assert all(w.name in message and w.url in message for w in registry.values())
    with pytest.raises(MissingWeightsError) as error:
        load_detector(folder)
    assert all(w.name in str(error.value) and w.url in str(error.value) for w in WEIGHTS.values())


@pytest.fixture
def served():
    """Both stand-in weight files on a local HTTP server: (its base URL, the files' bytes)."""
    payloads = {"fan": b"fan weights " * 1000, "s3fd": b"s3fd weights " * 900}
    with FileServer({"/fan-test.zip": payloads["fan"], "/s3fd-test.pth": payloads["s3fd"]}) as files:
        yield files.url(""), payloads


def test_download_checks_hashes_and_keeps_present_files(served, tmp_path):
    url, payloads = served
    digests = {role: hashlib.sha256(data).hexdigest() for role, data in payloads.items()}
    folder = tmp_path / "face"
    paths = ensure_weights(folder, allow_download=True, weights=_registry(url, digests))
    assert {role: p.read_bytes() for role, p in paths.items()} == payloads
    assert paths["fan"].parent == folder

    bad = tmp_path / "bad"
    with pytest.raises(MissingWeightsError, match="sha256") as error:
        ensure_weights(bad, allow_download=True, weights=_registry(url, {**digests, "s3fd": "0" * 64}))
    assert "s3fd-test.pth" in str(error.value) and not (bad / "s3fd-test.pth").exists()

    other = tmp_path / "other"
    other.mkdir()
    (other / "fan-test.pth.tar").write_bytes(b"the other release")
    (other / "s3fd-test.pth").write_bytes(b"local")
    paths = ensure_weights(other, allow_download=False, weights=_registry(url, digests))
    assert paths["fan"].name == "fan-test.pth.tar" and paths["s3fd"].read_bytes() == b"local"
