"""Non-finite inputs are refused where they enter, naming the input and the frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xportrait_core.face.driving import FaceLandmarks, encode_driving
from xportrait_core.finite_inputs import nonfinite_frames, require_finite


def test_nonfinite_frames_finds_each_bad_frame():
    x = torch.zeros(6, 3, 4, 4)
    x[1, 0, 0, 0] = float("nan")
    x[4, 2, 3, 3] = float("inf")
    assert nonfinite_frames(x) == [1, 4]
    assert nonfinite_frames(x.numpy()) == [1, 4]
    assert nonfinite_frames(torch.zeros(3, 2, dtype=torch.long)) == []


def test_nonfinite_frames_checks_a_chunk_at_a_time_with_the_same_answer(monkeypatch):
    import xportrait_core.finite_inputs as finite
    rgba = torch.rand(11, 5, 4, 4)
    rgba[0, 1, 0, 0] = float("nan")
    rgba[6, 2, 3, 1] = -float("inf")
    rgba[10, 0, 0, 2] = float("nan")
    rgba[3, 0, 0, 3] = float("nan")  # in the alpha channel: cut off below, so not a bad frame
    rgb = rgba[..., :3]  # non-contiguous, as Encode Driving sees an RGBA batch
    whole = nonfinite_frames(rgb)
    assert whole == [0, 6, 10]
    for frames_per_chunk in (1, 3, 4):
        monkeypatch.setattr(finite, "CHECK_CHUNK_BYTES", frames_per_chunk * rgb[0].numel() * rgb.element_size())
        assert nonfinite_frames(rgb) == whole


def test_require_finite_names_input_frames_and_fix():
    x = torch.zeros(30, 2)
    x[3:25, 0] = float("nan")
    with pytest.raises(ValueError) as error:
        require_finite(x, "driving frames", "check the loader")
    text = str(error.value)
    assert text.startswith("driving frames: frames 3, 4,") and "and 12 more" in text and "check the loader" in text
    require_finite(torch.zeros(2, 2), "fine", "nothing")  # finite: no error


def test_landmarks_refuse_nan_only_where_a_face_was_found():
    points = np.zeros((3, 68, 2), dtype=np.float32)
    points[2] = np.nan
    FaceLandmarks(points, np.array([True, True, False]), (64, 64))  # frame 2 unused: fine
    with pytest.raises(ValueError, match="landmarks: frame 2 contains"):
        FaceLandmarks(points, np.array([True, True, True]), (64, 64))


def test_encode_driving_refuses_nan_frames_before_aligning():
    frames = torch.rand(4, 64, 64, 3)
    frames[2, 10, 10, 1] = float("nan")
    landmarks = FaceLandmarks(np.zeros((4, 68, 2), np.float32), np.zeros(4, bool), (64, 64))
    with pytest.raises(ValueError, match="driving frames: frame 2 contains NaN"):
        encode_driving(frames, landmarks, None, size=64)
