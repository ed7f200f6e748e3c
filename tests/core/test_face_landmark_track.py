"""Filling frames without a face and smoothing landmark tracks over time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xportrait_core.face.alignment import choose_alignment
from xportrait_core.face.landmark_track import fill_missing_landmarks, smooth_landmarks
from xportrait_core.face.local_hints import local_patch_hint, patch_centres

from harness.paths import ASSETS  # noqa: E402  ($XPORTRAIT_SHARED, default ../shared)


@pytest.fixture(scope="module")
def real_track():
    if not (ASSETS / "landmarks.json").exists():
        pytest.skip(f"sample assets not found at {ASSETS} (they sit beside the repository in development and CI)")
    marks = json.loads((ASSETS / "landmarks.json").read_text())
    source = np.array(marks["source"]["lmk68"])
    return source, np.array([f["lmk68"] for f in marks["driving"]["frames"]])


def _ramp(n: int) -> np.ndarray:
    base = np.random.default_rng(3).random((68, 2)) * 100
    return base[None] + np.arange(n)[:, None, None] * np.array([2.0, -1.0])


def test_interior_gaps_are_linear_and_ends_carry_over():
    track = _ramp(8)
    found = np.array([False, True, True, False, False, True, True, False])
    damaged = np.where(found[:, None, None], track, np.nan)
    filled, flags = fill_missing_landmarks(damaged, found)
    assert np.array_equal(flags, ~found)
    assert np.allclose(filled[1:7], track[1:7], atol=1e-12)  # the ramp is linear in time
    assert np.array_equal(filled[0], track[1]) and np.array_equal(filled[7], track[6])
    assert np.array_equal(filled[found], track[found])


def test_no_face_anywhere_returns_none():
    assert fill_missing_landmarks(np.zeros((5, 68, 2)), np.zeros(5, bool)) is None


def test_single_found_frame_is_copied_everywhere():
    track = _ramp(4)
    filled, flags = fill_missing_landmarks(track, [False, False, True, False])
    assert np.array_equal(filled, np.repeat(track[2:3], 4, axis=0)) and flags.sum() == 3


def test_smoothing_strength_zero_is_identity_and_stills_stay_still():
    track = _ramp(10) + np.random.default_rng(4).normal(size=(10, 68, 2))
    assert np.array_equal(smooth_landmarks(track, 0.0), track)
    still = np.repeat(_ramp(1), 12, axis=0)
    assert np.allclose(smooth_landmarks(still, 2.5), still, atol=1e-12)
    def jitter(t):
        return np.abs(np.diff(t, n=2, axis=0)).mean()

    assert jitter(smooth_landmarks(track, 1.5)) < 0.5 * jitter(track)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="found"):
        fill_missing_landmarks(np.zeros((3, 68, 2)), [True, False])
    with pytest.raises(ValueError, match="landmarks"):
        fill_missing_landmarks(np.zeros((3, 67, 2)), [True] * 3)
    with pytest.raises(ValueError, match="finite"):
        fill_missing_landmarks(np.full((2, 68, 2), np.nan), [True, True])
    with pytest.raises(ValueError, match="strength"):
        smooth_landmarks(np.zeros((3, 68, 2)), -1.0)


def test_real_clip_with_blank_frames_gets_interpolated_landmarks(real_track):
    source, driving = real_track
    found = np.ones(len(driving), bool)
    blank = [0, 1, 20, 21, 22, len(driving) - 1]
    found[blank] = False
    # What a detector reports on blanked frames: nothing usable.
    detected = np.where(found[:, None, None], driving, 0.0)
    filled, flags = fill_missing_landmarks(detected, found)
    assert np.array_equal(np.flatnonzero(flags), blank)
    assert np.array_equal(filled[0], driving[2]) and np.array_equal(filled[-1], driving[-2])
    for i in (20, 21, 22):
        t = (i - 19) / 4
        assert np.allclose(filled[i], (1 - t) * driving[19] + t * driving[23])
    # The filled track drives alignment and local hints like a fully detected one.
    best, affine = choose_alignment(source, filled)
    assert best is not None and np.isfinite(affine).all()
    centres = patch_centres(filled, landmark_res=512)
    hint = local_patch_hint(torch.rand(len(filled), 512, 512, 3), centres)
    assert ((hint != -1).any(dim=1).flatten(1).any(dim=1)).all()


def test_real_clip_without_any_face_falls_back_to_black_hints(real_track):
    source, driving = real_track
    found = np.zeros(len(driving), bool)
    assert fill_missing_landmarks(driving, found) is None
    assert choose_alignment(source, driving, found) == (None, None)
    frames = torch.rand(3, 512, 512, 3)
    hint = local_patch_hint(frames, np.zeros((3, 3, 2), int), found=found[:3])
    assert (hint == -1).all()
