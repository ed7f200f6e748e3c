"""Local eye/mouth hints: official goldens (G6), the real clip, other resolutions."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from xportrait_core.face.alignment import alignment_affine, choose_alignment, warp_frames
from xportrait_core.face.local_hints import local_patch_hint, patch_centres

from harness.paths import SHARED  # noqa: E402  ($XPORTRAIT_SHARED, default ../shared)
ASSETS = SHARED / "assets"


def _windows(hint: torch.Tensor) -> int:
    """Number of connected non-(-1) regions in one [3, S, S] hint."""
    inside = (hint != -1).any(dim=0).numpy().astype(np.uint8)
    count, _ = cv2.connectedComponents(inside)
    return count - 1


def test_centres_match_golden(g6):
    centres = patch_centres(g6["aligned_landmarks"])
    assert centres.dtype == np.int64 and centres.shape == (4, 3, 2)
    assert np.array_equal(centres, g6["patch_centres_512"])
    assert np.array_equal(patch_centres(g6["aligned_landmarks"][2]), g6["patch_centres_512"][2])


def test_hint_matches_golden(g6):
    frames = torch.from_numpy(g6["warped_512"])
    hint = local_patch_hint(frames, patch_centres(g6["aligned_landmarks"]))
    assert hint.shape == (4, 3, 512, 512) and hint.dtype == torch.float32
    assert np.abs(hint.numpy() - g6["local_hint"]).max() < 1e-6


def test_hint_from_torch_warp_matches_golden(g6):
    affine = alignment_affine(g6["source_landmarks"], g6["driving_landmarks"][2], scale=2.0)
    frames = warp_frames(torch.from_numpy(g6["driving_frames"]).float() / 255.0, affine, backend="torch")
    hint = local_patch_hint(frames, patch_centres(g6["aligned_landmarks"]))
    assert np.abs(hint.numpy() - g6["local_hint"]).max() < 1e-6


def test_overlapping_windows_are_a_union(g6):
    # Frame 1 of G6 has all three centres clipped to x = 64 and overlapping windows.
    frames = torch.from_numpy(g6["warped_512"][1:2])
    centres = g6["patch_centres_512"][1:2]
    hint = local_patch_hint(frames, centres)[0]
    expected = torch.full_like(hint, -1.0)
    for x, y in centres[0][::-1]:  # reverse order: same result
        expected[:, y - 64:y + 64, x - 64:x + 64] = frames[0, y - 64:y + 64, x - 64:x + 64].permute(2, 0, 1) * 2 - 1
    assert torch.equal(hint, expected)


def test_not_found_frames_get_all_minus_one(g6):
    frames = torch.from_numpy(g6["warped_512"][:2])
    hint = local_patch_hint(frames, g6["patch_centres_512"][:2], found=[True, False])
    assert (hint[1] == -1).all() and (hint[0] != -1).any()


def test_any_resolution_scales_the_official_rule(g6):
    landmarks = g6["aligned_landmarks"]
    assert np.array_equal(patch_centres(landmarks, 512), g6["patch_centres_512"])
    centres_256 = patch_centres(landmarks, target_res=256)
    assert np.array_equal(centres_256 * 2, g6["patch_centres_512"])
    # Landmarks measured on a 512 grid give the same centres as their 256 copies.
    assert np.array_equal(patch_centres(landmarks * 2, 512, landmark_res=512), g6["patch_centres_512"])
    frames = torch.rand(4, 256, 256, 3)
    hint = local_patch_hint(frames, centres_256)
    inside = (hint != -1).any(dim=1)
    for frame, centres in zip(inside, centres_256):
        expected = torch.zeros(256, 256, dtype=torch.bool)
        for x, y in centres:
            expected[y - 32:y + 32, x - 32:x + 32] = True
        assert torch.equal(frame, expected)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="landmarks_256"):
        patch_centres(np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match="centres"):
        local_patch_hint(torch.zeros(2, 64, 64, 3), np.zeros((1, 3, 2), int))
    with pytest.raises(ValueError, match="square"):
        local_patch_hint(torch.zeros(1, 64, 32, 3), np.zeros((1, 3, 2), int))


def test_real_clip_hints_have_three_windows():
    if not (ASSETS / "landmarks.json").exists():
        pytest.skip(f"sample assets not found at {ASSETS} (they sit beside the repository in development and CI)")
    marks = json.loads((ASSETS / "landmarks.json").read_text())
    source = np.array(marks["source"]["lmk68"])
    driving = np.array([f["lmk68"] for f in marks["driving"]["frames"]])
    capture = cv2.VideoCapture(str(ASSETS / "driving_video.mp4"))
    frames = []
    for _ in range(6):
        ok, frame = capture.read()
        assert ok
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    _, affine = choose_alignment(source, driving)
    aligned = warp_frames(np.stack(frames), affine)
    # Landmarks of the aligned frames: the driving points moved by the same affine, on the
    # official 256 grid.
    moved = driving[:6] @ affine[:, :2].T + affine[:, 2]
    centres = patch_centres(moved, landmark_res=512)
    hint = local_patch_hint(aligned, centres)
    assert hint.shape == (6, 3, 512, 512) and hint.min() >= -1 and hint.max() <= 1
    for frame_hint, frame_centres in zip(hint, centres):
        separate = all(np.abs(a - b).max() >= 128 for i, a in enumerate(frame_centres) for b in frame_centres[i + 1:])
        if separate:
            assert _windows(frame_hint) == 3
        outside = torch.ones(512, 512, dtype=torch.bool)
        for x, y in frame_centres:
            outside[y - 64:y + 64, x - 64:x + 64] = False
        assert (frame_hint[:, outside] == -1).all()
