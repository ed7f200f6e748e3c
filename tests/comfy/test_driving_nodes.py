"""Driving-preparation nodes on the real sample clip inside ComfyUI (landmarks from ../shared/assets)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from harness.paths import ASSETS


@pytest.fixture(scope="module")
def sample(comfy):
    if not ASSETS.exists():
        pytest.skip(f"sample assets not found at {ASSETS}")
    capture = cv2.VideoCapture(str(ASSETS / "driving_video.mp4"))
    frames = []
    while len(frames) < 8:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    portrait = cv2.cvtColor(cv2.imread(str(ASSETS / "source_image.png")), cv2.COLOR_BGR2RGB)
    data = json.loads((ASSETS / "landmarks.json").read_text())
    return {"frames": torch.from_numpy(np.stack(frames)).float() / 255,
            "portrait": torch.from_numpy(portrait)[None].float() / 255,
            "driving_points": np.array([f["lmk68"] for f in data["driving"]["frames"][:8]], dtype=np.float32),
            "source_points": np.array([data["source"]["lmk68"]], dtype=np.float32)}


def _landmarks(points, found, hw):
    from xportrait_core.face.driving import FaceLandmarks
    return FaceLandmarks(points, found, hw)


def test_encode_driving_with_blank_frames_runs_through(comfy, sample):
    frames = sample["frames"].clone()
    frames[2:4] = 0.0  # frames without a face
    found = np.ones(8, bool)
    found[2:4] = False
    node = comfy.node_class("XPortraitEncodeDriving")
    out = node.execute(
        driving_frames=frames, driving_landmarks=_landmarks(sample["driving_points"], found, (512, 512)),
        source_landmarks=_landmarks(sample["source_points"], [True], (512, 512)), best_frame=-1,
        landmark_smoothing=1.0, size=512, fps=12000 / 1001)
    driving, fps = out.result
    assert out.ui is not None and "2" in out.ui.as_dict()["text"][0], "the missing frames should show on the node"
    aligned, local = comfy.node_class("XPortraitDrivingPreview").execute(driving=driving).result
    assert driving.frames == 8 and aligned.shape == (8, 512, 512, 3) and local.shape == (8, 512, 512, 3)
    assert torch.equal(local * 2 - 1, driving.local_hint.movedim(1, -1))
    assert torch.isfinite(driving.global_hint).all() and torch.isfinite(driving.local_hint).all()
    assert fps == pytest.approx(11.988, abs=1e-3)
    windows = (driving.local_hint[[0, 5]] > -1).flatten(1).sum(1)
    assert (windows > 0).all(), "frames with a face get eye/mouth windows"
    # Nothing per frame is stored: hints are rebuilt per window from the frames as given.
    assert driving._source[2].source.data_ptr() == frames.data_ptr()
    rows = [1, 6, 7]
    assert torch.equal(driving.rows(0, rows), driving.global_hint[rows])
    assert torch.equal(driving.rows(1, rows), driving.local_hint[rows])


def test_one_frame_driver_and_no_face_at_all(comfy, sample):
    node = comfy.node_class("XPortraitEncodeDriving")
    one = node.execute(driving_frames=sample["frames"][:1],
                       driving_landmarks=_landmarks(sample["driving_points"][:1], [True], (512, 512)),
                       source_landmarks=_landmarks(sample["source_points"], [True], (512, 512)),
                       best_frame=-1, landmark_smoothing=0.0, size=512, fps=24.0).result[0]
    assert one.frames == 1
    none = node.execute(driving_frames=sample["frames"][:3],
                        driving_landmarks=_landmarks(sample["driving_points"][:3], [False] * 3, (512, 512)),
                        source_landmarks=_landmarks(sample["source_points"], [True], (512, 512)),
                        best_frame=-1, landmark_smoothing=0.0, size=512, fps=24.0).result[0]
    assert torch.equal(none.local_hint, torch.full_like(none.local_hint, -1.0))


def test_crop_and_paste_back_nodes_restore_the_portrait_outside_the_face(comfy, sample):
    portrait = torch.nn.functional.pad(sample["portrait"].permute(0, 3, 1, 2), (64, 64, 0, 0), mode="replicate")
    portrait = portrait.permute(0, 2, 3, 1).contiguous()  # a non-square 512x640 portrait
    points = sample["source_points"] + np.array([64, 0], dtype=np.float32)
    face, crop, face_landmarks = comfy.node_class("XPortraitCropFace").execute(
        portrait=portrait, landmarks=_landmarks(points, [True], (512, 640)), size=256, face_scale=1.8).result
    assert face.shape == (1, 256, 256, 3) and face_landmarks.image_hw == (256, 256)
    pasted, mask = comfy.node_class("XPortraitPasteBack").execute(
        portrait=portrait, frames=face.repeat(2, 1, 1, 1), crop=crop, feather=16).result
    assert pasted.shape == (2, 512, 640, 3) and mask.shape == (1, 512, 640)
    assert float(mask.min()) == 0.0 and float(mask.max()) == 1.0
    x0, y0, x1, y1 = crop.box
    outside = torch.ones(512, 640, dtype=torch.bool)
    outside[max(y0, 0):y1, max(x0, 0):x1] = False
    assert torch.equal(pasted[0][outside], portrait[0][outside])
    assert not mask[0][outside].any(), "the mask must be zero outside the crop box"
