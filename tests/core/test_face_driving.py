"""encode_driving: the official preparation end to end (G6 goldens) and its robustness."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from xportrait_core.face.driving import FaceLandmarks, encode_driving



def _inputs(g6):
    frames = torch.from_numpy(g6["driving_frames"]).float() / 255
    # The fixture's landmarks are in the 256 grid of the 512 frames.
    driving = FaceLandmarks(g6["driving_landmarks"] * 2, np.ones(4, bool), (512, 512))
    source = FaceLandmarks(g6["source_landmarks"][None] * 2, np.ones(1, bool), (512, 512))
    return frames, driving, source


def test_matches_official_preprocessing_goldens(g6):
    frames, driving, source = _inputs(g6)
    out = encode_driving(frames, driving, source, size=512, best_frame=2)
    assert out.best_frame == 2
    assert np.abs(out.affine - g6["affine_512"]).max() < 1e-9
    assert (out.aligned.numpy() - g6["warped_512"]).__abs__().max() < 1e-6
    assert (out.local_hint.numpy() - g6["local_hint"]).__abs__().max() < 1e-6
    assert torch.equal(out.global_hint, out.aligned.permute(0, 3, 1, 2) * 2 - 1)


def test_automatic_best_frame_matches_official(g6):
    frames, driving, source = _inputs(g6)
    out = encode_driving(frames, driving, source, best_frame=-1)
    assert out.best_frame == int(g6["best_frame_auto"][0])
    assert np.abs(out.affine - g6["affine_512_auto"]).max() < 1e-9


def test_alignment_off_only_resizes(g6):
    frames, driving, source = _inputs(g6)
    out = encode_driving(frames, driving, source, best_frame=-2)
    assert out.affine is None and out.best_frame is None
    assert torch.allclose(out.aligned, frames, atol=1e-6)


def test_frames_without_a_face_get_interpolated_landmarks(g6):
    frames, driving, source = _inputs(g6)
    found = np.array([True, False, True, True])
    out = encode_driving(frames, FaceLandmarks(driving.points, found, (512, 512)), source, best_frame=-1)
    assert out.interpolated.tolist() == [False, True, False, False]
    assert any("interpolated" in w for w in out.warnings)
    assert torch.isfinite(out.local_hint).all()
    assert (out.local_hint[1] > -1).any(), "the frame without a detected face still gets eye/mouth windows"
    blank = frames.clone()
    blank[1] = 0.0
    out = encode_driving(blank, FaceLandmarks(driving.points, found, (512, 512)), source, best_frame=-1)
    assert torch.isfinite(out.global_hint).all() and out.frames == 4


def test_clip_without_any_face_falls_back_to_black_local_hints(g6):
    frames, driving, source = _inputs(g6)
    out = encode_driving(frames, FaceLandmarks(driving.points, np.zeros(4, bool), (512, 512)), source)
    assert out.affine is None
    assert torch.equal(out.local_hint, torch.full_like(out.local_hint, -1.0))
    assert any("no face in any driving frame" in w for w in out.warnings)


def test_single_driving_frame_and_other_sizes(g6):
    frames, driving, source = _inputs(g6)
    one = encode_driving(frames[:1], FaceLandmarks(driving.points[:1], np.ones(1, bool), (512, 512)), source)
    assert one.frames == 1 and one.best_frame == 0
    small = encode_driving(frames, driving, source, size=256)
    assert small.aligned.shape == (4, 256, 256, 3) and small.local_hint.shape == (4, 3, 256, 256)
    inside = (small.local_hint > -1).flatten(1).any(1)
    assert inside.all()


def test_bad_inputs_name_the_problem(g6):
    frames, driving, source = _inputs(g6)
    with pytest.raises(ValueError, match="cover 4 frames but the clip has 3"):
        encode_driving(frames[:3], driving, source)
    with pytest.raises(ValueError, match="multiple of 8"):
        encode_driving(frames, driving, source, size=500)
