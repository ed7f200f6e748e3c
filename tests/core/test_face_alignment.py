"""Clip alignment: official goldens (G6) and the real sample clip."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from xportrait_core.face.alignment import (AlignmentMode, alignment_affine, best_frame_by_landmarks,
                                           choose_alignment, warp_frames)
from xportrait_core.face.resample import resize_matrix, resize_numpy, resize_torch

from harness.paths import SHARED  # noqa: E402  ($XPORTRAIT_SHARED, default ../shared)
ASSETS = SHARED / "assets"


@pytest.fixture(scope="module")
def clip():
    if not (ASSETS / "landmarks.json").exists():
        pytest.skip(f"sample assets not found at {ASSETS} (they sit beside the repository in development and CI)")
    marks = json.loads((ASSETS / "landmarks.json").read_text())
    capture = cv2.VideoCapture(str(ASSETS / "driving_video.mp4"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    entries = marks["driving"]["frames"]
    return {
        "frames": np.stack(frames),
        "source_lmk": np.array(marks["source"]["lmk68"], dtype=np.float64),
        "driving_lmks": np.array([e["lmk68"] for e in entries], dtype=np.float64),
        "found": np.array([e["found"] for e in entries]),
    }


# --- goldens -------------------------------------------------------------------------------

def test_best_frame_auto_matches_golden(g6):
    assert best_frame_by_landmarks(g6["source_landmarks"], g6["driving_landmarks"]) == int(g6["best_frame_auto"][0])


@pytest.mark.parametrize("key,scale", [("affine_256", 1.0), ("affine_512", 2.0)])
def test_affine_matches_golden(g6, key, scale):
    explicit = alignment_affine(g6["source_landmarks"], g6["driving_landmarks"][2], scale=scale)
    auto_frame = best_frame_by_landmarks(g6["source_landmarks"], g6["driving_landmarks"])
    auto = alignment_affine(g6["source_landmarks"], g6["driving_landmarks"][auto_frame], scale=scale)
    assert explicit.dtype == np.float64 and explicit.shape == (2, 3)
    assert np.abs(explicit - g6[key]).max() < 1e-9
    assert np.abs(auto - g6[key + "_auto"]).max() < 1e-9


def test_affine_equals_opencv_three_point_solve(g6):
    source, driving = g6["source_landmarks"], g6["driving_landmarks"][0]
    mine = alignment_affine(source, driving)

    def corners(lmk):
        c, e = lmk.mean(axis=0), (lmk.max(axis=0) - lmk.min(axis=0)) / 2
        return np.float32([[c[0] - e[0], c[1] - e[1]], [c[0] + e[0], c[1] - e[1]], [c[0] - e[0], c[1] + e[1]]])

    reference = cv2.getAffineTransform(corners(driving), corners(source))
    assert np.abs(mine - reference).max() < 1e-9


@pytest.mark.parametrize("key,size,scale", [("warped_256", 256, 1.0), ("warped_512", 512, 2.0)])
def test_cv2_warp_matches_golden(g6, key, size, scale):
    affine = alignment_affine(g6["source_landmarks"], g6["driving_landmarks"][2], scale=scale)
    frames = torch.from_numpy(g6["driving_frames"]).float() / 255.0
    warped = warp_frames(frames, affine, size=size, backend="cv2")
    assert warped.dtype == torch.float32 and warped.shape == g6[key].shape
    assert np.abs(warped.numpy() - g6[key]).max() < 1e-6


@pytest.mark.parametrize("key,size,scale", [("warped_256", 256, 1.0), ("warped_512", 512, 2.0)])
def test_torch_warp_matches_golden(g6, key, size, scale):
    # The torch path samples on OpenCV's 1/32-pixel grid, so it meets the cv2 bound (1e-6),
    # well inside the non-cv2 one (mean 5e-4, max 0.03).
    affine = alignment_affine(g6["source_landmarks"], g6["driving_landmarks"][2], scale=scale)
    frames = torch.from_numpy(g6["driving_frames"]).float() / 255.0
    warped = warp_frames(frames, affine, size=size, backend="torch")
    assert warped.dtype == torch.float32 and warped.shape == g6[key].shape
    assert np.abs(warped.numpy() - g6[key]).max() < 1e-6


def test_no_alignment_is_plain_resize(g6):
    frames = g6["driving_frames"]
    out = warp_frames(frames, None, size=512)
    assert np.array_equal(out.numpy(), (frames / 255.0).astype(np.float32))


# --- resize -------------------------------------------------------------------------------

@pytest.mark.parametrize("n_in,n_out", [(512, 256), (300, 128), (128, 200), (7, 3)])
def test_resize_rows_are_normalised_and_torch_matches_numpy(n_in, n_out):
    matrix = resize_matrix(n_in, n_out)
    assert matrix.shape == (n_out, n_in)
    assert np.allclose(matrix.sum(axis=1), 1.0) and (matrix >= 0).all()
    frames = np.random.default_rng(0).random((2, n_in, n_in + 5, 3))
    exact = resize_numpy(frames, (n_out, n_out + 1))
    batched = resize_torch(torch.from_numpy(frames), (n_out, n_out + 1)).numpy()
    assert exact.shape == (2, n_out, n_out + 1, 3)
    assert np.abs(exact - batched).max() < 1e-12
    assert exact.min() >= frames.min() and exact.max() <= frames.max()


def test_resize_downscale_blurs_before_sampling():
    # A one-pixel checkerboard has no energy left after the anti-alias filter and 2x sampling.
    board = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float64)[None, ..., None]
    out = resize_numpy(board, (32, 32))
    assert np.abs(out - 0.5).max() < 0.05


# --- modes -------------------------------------------------------------------------------

def test_choose_alignment_modes(g6):
    source, driving = g6["source_landmarks"], g6["driving_landmarks"]
    assert choose_alignment(source, driving, best_frame=AlignmentMode.OFF) == (None, None)
    frame, affine = choose_alignment(source, driving, best_frame=AlignmentMode.AUTO)
    assert frame == int(g6["best_frame_auto"][0])
    assert np.abs(affine - g6["affine_256_auto"]).max() < 1e-9
    frame, affine = choose_alignment(source, driving, best_frame=2)
    assert frame == 2 and np.abs(affine - g6["affine_256"]).max() < 1e-9
    missing = np.array([True, True, False, True])
    assert choose_alignment(source, driving, missing, best_frame=2) == (None, None)
    assert choose_alignment(None, driving) == (None, None)
    assert choose_alignment(source, driving, np.zeros(4, bool)) == (None, None)
    with pytest.raises(ValueError, match="best_frame"):
        choose_alignment(source, driving, best_frame=4)
    with pytest.raises(ValueError, match="best_frame"):
        choose_alignment(source, driving, best_frame=-3)


def test_best_frame_skips_frames_without_landmarks_and_first_minimum_wins(g6):
    source = g6["source_landmarks"].astype(np.float64)  # so +1 and -1 tie exactly
    driving = np.stack([source + 5, source + 1, source - 1, source + 1])
    assert best_frame_by_landmarks(source, driving) == 1
    assert best_frame_by_landmarks(source, driving, [True, False, True, True]) == 2
    with pytest.raises(ValueError, match="found"):
        best_frame_by_landmarks(source, driving, [False] * 4)


def test_bad_inputs_raise_clear_errors(g6):
    with pytest.raises(ValueError, match="source_lmk"):
        alignment_affine(np.zeros((5, 2)), g6["source_landmarks"])
    flat = np.tile([[10.0, 20.0]], (68, 1))
    with pytest.raises(ValueError, match="collinear"):
        alignment_affine(g6["source_landmarks"], flat)
    with pytest.raises(ValueError, match="backend"):
        warp_frames(torch.zeros(1, 8, 8, 3), None, 8, backend="pil")
    with pytest.raises(ValueError, match="frames"):
        warp_frames(torch.zeros(8, 8, 3), None, 8)


# --- the real sample clip -------------------------------------------------------------------

def test_real_clip_best_frame_is_l1_argmin(clip):
    reference = np.abs(clip["driving_lmks"] - clip["source_lmk"][None]).sum(axis=(1, 2))
    assert best_frame_by_landmarks(clip["source_lmk"], clip["driving_lmks"], clip["found"]) == int(np.argmin(reference))


def test_real_clip_alignment_moves_face_box_onto_source(clip):
    best, affine = choose_alignment(clip["source_lmk"], clip["driving_lmks"], clip["found"])
    frames = torch.from_numpy(clip["frames"][::4]).float() / 255.0
    warped = warp_frames(frames, affine, size=512, backend="cv2")
    assert warped.shape == (len(frames), 512, 512, 3)
    assert torch.isfinite(warped).all() and warped.min() >= 0 and warped.max() <= 1

    moved = clip["driving_lmks"][best] @ affine[:, :2].T + affine[:, 2]
    source = clip["source_lmk"]
    assert np.allclose(moved.mean(axis=0), source.mean(axis=0), atol=1e-3)
    assert np.allclose(np.ptp(moved, axis=0), np.ptp(source, axis=0), atol=1e-3)

    # The pixels follow the points: a mask of the driving frame's landmark box (centre = mean,
    # half extent = half the range) lands on the source's box.
    def box(lmk):
        centre, half = lmk.mean(axis=0), np.ptp(lmk, axis=0) / 2
        return centre - half, centre + half

    low, high = box(clip["driving_lmks"][best])
    mask = np.zeros((1, 512, 512, 3), np.float32)
    mask[0, int(np.ceil(low[1])):int(high[1]) + 1, int(np.ceil(low[0])):int(high[0]) + 1] = 1
    warped_mask = warp_frames(torch.from_numpy(mask), affine, size=512)[0, ..., 0].numpy() > 0.5
    ys, xs = np.nonzero(warped_mask)
    target_low, target_high = box(source)
    assert abs(xs.min() - target_low[0]) < 2 and abs(xs.max() - target_high[0]) < 2
    assert abs(ys.min() - target_low[1]) < 2 and abs(ys.max() - target_high[1]) < 2


def test_real_clip_torch_path_agrees_with_cv2(clip):
    _, affine = choose_alignment(clip["source_lmk"], clip["driving_lmks"], clip["found"])
    frames = torch.from_numpy(clip["frames"][:3]).float() / 255.0
    error = (warp_frames(frames, affine, backend="torch") - warp_frames(frames, affine, backend="cv2")).abs()
    assert error.max() < 1e-6


def test_one_frame_driver(clip):
    best, affine = choose_alignment(clip["source_lmk"], clip["driving_lmks"][7:8], clip["found"][7:8])
    assert best == 0
    warped = warp_frames(clip["frames"][7:8], affine, size=512)
    assert warped.shape == (1, 512, 512, 3) and torch.isfinite(warped).all()


@pytest.mark.parametrize("angle,zoom,shift", [(0.0, 1.0, (0.0, 0.0)), (17.0, 1.3, (-40.5, 25.25)), (-95.0, 0.6, (300.0, -7.0))])
def test_torch_path_reproduces_opencv_sampling_for_general_affines(angle, zoom, shift):
    frames = torch.rand(2, 96, 96, 3, generator=torch.Generator().manual_seed(1))
    affine = cv2.getRotationMatrix2D((40.0, 50.0), angle, zoom)
    affine[:, 2] += shift
    error = (warp_frames(frames, affine, 96, backend="torch") - warp_frames(frames, affine, 96, backend="cv2")).abs()
    assert error.max() < 1e-6


def test_choose_alignment_scale_gives_the_512_matrix(g6):
    _, affine = choose_alignment(g6["source_landmarks"], g6["driving_landmarks"], best_frame=2, scale=2.0)
    assert np.abs(affine - g6["affine_512"]).max() < 1e-9
