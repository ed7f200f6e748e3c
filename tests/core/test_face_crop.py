"""Face crops out of a portrait and feathered paste-back."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from xportrait_core.face.crop import CropInfo, crop_face, face_crop_box, feather_mask, paste_back, select_face

from harness.paths import ASSETS  # noqa: E402  ($XPORTRAIT_SHARED, default ../shared)


@pytest.fixture(scope="module")
def portrait():
    if not (ASSETS / "landmarks.json").exists():
        pytest.skip(f"sample assets not found at {ASSETS} (they sit beside the repository in development and CI)")
    image = cv2.cvtColor(cv2.imread(str(ASSETS / "source_image.png")), cv2.COLOR_BGR2RGB)
    marks = json.loads((ASSETS / "landmarks.json").read_text())
    return torch.from_numpy(image).float() / 255.0, np.array(marks["source"]["lmk68"])


def _bands(info: CropInfo, feather: float):
    mask = feather_mask(info, feather)
    return mask == 0, (mask > 0) & (mask < 1), mask == 1


def test_box_is_square_around_the_face(portrait):
    image, lmk = portrait
    x0, y0, x1, y1 = face_crop_box(lmk, image.shape[:2], scale=1.5, lift=0.0)
    side = x1 - x0
    assert side == y1 - y0 == round(np.ptp(lmk, axis=0).max() * 1.5)
    assert x0 <= lmk[:, 0].min() and lmk[:, 0].max() <= x1
    assert y0 <= lmk[:, 1].min() and lmk[:, 1].max() <= y1
    lifted = face_crop_box(lmk, image.shape[:2], scale=1.5, lift=0.1)
    assert lifted[1] < y0 and lifted[0] == x0


def test_unscaled_crop_copies_pixels_and_pads_outside():
    image = torch.rand(40, 50, 3, generator=torch.Generator().manual_seed(0))
    crop, info = crop_face(image, (-5, 10, 25, 40), size=30)
    assert crop.shape == (1, 30, 30, 3) and info.zoom == 1.0 and info.image_hw == (40, 50)
    assert torch.allclose(crop[0, :, 5:], image[10:40, 0:25], atol=1e-5)
    assert crop[0, :, :5].abs().max() < 1e-5
    border, _ = crop_face(image, (-5, 10, 25, 40), size=30, padding="border")
    assert torch.allclose(border[0, :, :5], image[10:40, 0:1].expand(30, 5, 3), atol=1e-5)


def test_scaled_crop_maps_box_onto_crop():
    # A bright square filling the middle of the box fills the middle of the crop.
    image = torch.zeros(100, 100, 3)
    image[40:60, 40:60] = 1.0
    crop, _ = crop_face(image, (30, 30, 70, 70), size=160)
    inside = crop[0, ..., 0] > 0.5
    ys, xs = torch.nonzero(inside, as_tuple=True)
    assert (xs.min().item(), xs.max().item(), ys.min().item(), ys.max().item()) == (40, 119, 40, 119)


def test_round_trip_at_native_size_is_exact_within_rounding(portrait):
    image, lmk = portrait
    box = face_crop_box(lmk, image.shape[:2])
    crop, info = crop_face(image, box, size=box[2] - box[0])
    restored = paste_back(image, crop, info, feather=16)[0]
    outside, band, inner = _bands(info, 16)
    error = (restored - image).abs().amax(dim=-1)
    assert torch.equal(restored[outside], image[outside])
    assert error[band].max() < 1e-4 and error[inner].max() < 1e-4


def test_round_trip_through_512_crop(portrait):
    image, lmk = portrait
    box = face_crop_box(lmk, image.shape[:2], scale=1.4)
    crop, info = crop_face(image, box, size=512)
    restored = paste_back(image, crop, info, feather=24)[0]
    outside, band, inner = _bands(info, 24)
    error = (restored - image).abs().amax(dim=-1)
    assert torch.equal(restored[outside], image[outside])
    # Resampling up and back down blurs sharp cartoon edges a little; on average it is tiny.
    assert error[band].mean() < 0.01 and error[inner].mean() < 0.01


def test_paste_back_puts_generated_frames_inside_the_box():
    portrait = torch.zeros(64, 80, 3)
    info = CropInfo((10, 4, 50, 44), (64, 80), 40)
    generated = torch.stack([torch.full((128, 128, 3), 0.25), torch.full((128, 128, 3), 1.0)])
    out = paste_back(portrait, generated, info, feather=8)
    assert out.shape == (2, 64, 80, 3)
    assert torch.allclose(out[:, 12:36, 18:42], generated[:, :24, :24, :], atol=1e-5)
    assert (out[:, :4] == 0).all() and (out[:, :, 50:] == 0).all()
    row = out[1, 24, 10:18, 0]
    assert (row[1:] >= row[:-1]).all() and 0 < row[0] < 0.1 and 0.9 < row[-1] <= 1.0


def test_feather_zero_is_a_hard_edge():
    mask = feather_mask(CropInfo((2, 2, 6, 6), (8, 8), 4), 0)
    expected = torch.zeros(8, 8)
    expected[2:6, 2:6] = 1
    assert torch.equal(mask, expected)


def test_select_face():
    boxes = [(0, 0, 10, 10), (5, 5, 40, 30, 0.9), (0, 0, 20, 20)]
    assert select_face(boxes, by="largest") == 1
    assert select_face(boxes, by="index", index=2) == 2
    small = np.random.default_rng(0).random((68, 2)) * 10
    assert select_face([small, small * 3 + 5], by="largest") == 1
    with pytest.raises(ValueError, match="no face"):
        select_face([])
    with pytest.raises(ValueError, match="out of range"):
        select_face(boxes, by="index", index=3)
    with pytest.raises(ValueError, match="by"):
        select_face(boxes, by="smallest")


def test_bad_inputs_raise_clear_errors():
    image = torch.rand(20, 20, 3)
    with pytest.raises(ValueError, match="square"):
        crop_face(image, (0, 0, 10, 12))
    with pytest.raises(ValueError, match="padding"):
        crop_face(image, (0, 0, 10, 10), padding="wrap")
    with pytest.raises(ValueError, match="landmarks"):
        face_crop_box(np.full((68, 2), np.nan), (20, 20))
    _, info = crop_face(image, (0, 0, 10, 10), size=8)
    with pytest.raises(ValueError, match="portrait"):
        paste_back(torch.rand(30, 20, 3), torch.rand(1, 8, 8, 3), info)
    with pytest.raises(ValueError, match="feather"):
        paste_back(image, torch.rand(1, 8, 8, 3), info, feather=-1)
