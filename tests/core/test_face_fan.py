"""FAN landmark geometry: crop window, heatmap decoding, mapping back to image pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xportrait_core.face.fan import (MIRROR_ORDER, StaticFaceBoxDetector, centre_and_scale, crop_for_fan,
                                     crop_window, decode_heatmaps, detect_landmarks, mirror_heatmaps,
                                     window_transform)


def _gaussians(points_index_space: np.ndarray, size: int = 64, sigma: float = 1.0) -> np.ndarray:
    """[1, K, size, size] heatmaps with unit peaks at continuous (x, y) cell positions."""
    grid = np.arange(size, dtype=np.float64)
    gx = np.exp(-0.5 * ((grid[None, :] - points_index_space[:, 0:1]) / sigma) ** 2)
    gy = np.exp(-0.5 * ((grid[None, :] - points_index_space[:, 1:2]) / sigma) ** 2)
    return (gy[:, :, None] * gx[:, None, :])[None].astype(np.float32)


def test_centre_and_scale_follow_face_alignment():
    centre, scale = centre_and_scale([10, 20, 110, 140, 0.99])
    assert np.allclose(centre, [60.0, 80.0 - 0.12 * 120.0])
    assert scale == pytest.approx(220.0 / 195.0)
    with pytest.raises(ValueError, match="face box"):
        centre_and_scale([10, 20, 5, 140])


def test_crop_window_spans_two_hundred_times_scale():
    centre, scale = np.array([120.0, 90.0]), 0.9
    ul, br = crop_window(centre, scale)
    side = 200 * scale
    assert ul.dtype.kind == "i" and br.dtype.kind == "i"
    assert abs((br[0] - ul[0]) - side) <= 2 and abs((br[1] - ul[1]) - side) <= 2
    assert abs(ul[0] - (centre[0] - side / 2)) <= 2 and abs(ul[1] - (centre[1] - side / 2)) <= 2


def test_crop_places_image_content_by_the_window_transform():
    image = np.zeros((300, 260, 3), np.uint8)
    image[150:154, 101:105] = 255  # 4x4 spot centred on (102.5, 151.5)
    centre, scale = np.array([110.0, 140.0]), 0.8
    crop = crop_for_fan(image, centre, scale)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop[..., 0] > 100)
    expected = window_transform(centre, scale, 256) @ np.array([102.5, 151.5, 1.0])
    assert abs(xs.mean() - expected[0]) < 2 and abs(ys.mean() - expected[1]) < 2
    # A window reaching past the image edge is zero-padded, not wrapped.
    edge = crop_for_fan(np.full((50, 50, 3), 200, np.uint8), np.array([5.0, 5.0]), 0.5)
    assert (edge[:100, :100] == 0).all() and (edge[125:235, 125:235] == 200).all()


def test_decode_quarter_step_towards_higher_neighbour():
    cells = np.array([[20.25, 30.0], [40.0, 10.75], [33.0, 33.0], [0.2, 12.0], [63.0, 63.0]])
    coords, image, scores = decode_heatmaps(_gaussians(cells))
    assert image is None and scores.shape == (1, 5) and np.all(scores > 0.8)
    expected = np.array([[20.75, 30.5], [40.5, 11.25], [33.5, 33.5], [0.5, 12.5], [63.5, 63.5]])
    assert np.array_equal(coords[0], expected.astype(np.float32))


def test_decode_maps_back_to_image_and_truncates_like_the_package():
    cells = np.array([[20.25, 30.0], [40.0, 10.75], [33.0, 45.25]])
    centre, scale = np.array([250.0, 180.0]), 1.3
    coords, image, _ = decode_heatmaps(_gaussians(cells), centre, scale, integer_coords=False)
    side = 200 * scale
    expected = (coords[0].astype(np.float64) - 32) * side / 64 + centre
    assert np.allclose(image[0], expected, atol=1e-3)
    _, truncated, _ = decode_heatmaps(_gaussians(cells), centre, scale)
    assert np.array_equal(truncated[0], np.trunc(expected).astype(np.float32))


def test_mirror_order_is_the_left_right_pairing():
    order = np.array(MIRROR_ORDER)
    assert np.array_equal(order[order], np.arange(68))
    for a, b in [(0, 16), (8, 8), (17, 26), (30, 30), (31, 35), (36, 45), (39, 42), (40, 47),
                 (48, 54), (51, 51), (57, 57), (60, 64), (62, 62), (65, 67), (66, 66)]:
        assert order[a] == b and order[b] == a
    cells = np.random.default_rng(0).uniform(2, 60, size=(68, 2))
    mirrored = cells[order].copy()
    mirrored[:, 0] = 63 - mirrored[:, 0]
    assert torch.allclose(mirror_heatmaps(torch.from_numpy(_gaussians(mirrored))), torch.from_numpy(_gaussians(cells)))


def test_pipeline_recovers_known_points_to_sub_pixel_accuracy():
    # Stand-in network: Gaussian heatmaps at known heatmap-grid points (quarter-cell positions
    # the decoder represents exactly); the points' image positions follow from the window.
    rng = np.random.default_rng(1)
    cells = rng.integers(4, 60, size=(68, 2)) + rng.choice([-0.25, 0.0, 0.25], size=(68, 2))
    box = [140.0, 120.0, 330.0, 345.0]
    centre, scale = centre_and_scale(box)
    truth = (cells + 0.5 - 32) * (200 * scale) / 64 + centre
    seen = []

    def network(batch: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(batch.shape))
        return torch.from_numpy(_gaussians(cells)).expand(batch.shape[0], -1, -1, -1)

    image = np.random.default_rng(2).integers(0, 255, size=(480, 420, 3), dtype=np.uint8)
    detector = StaticFaceBoxDetector([box + [0.99]])
    (subpixel,) = detect_landmarks(image, detector, network, flip_input=False, integer_coords=False)
    assert seen == [(1, 3, 256, 256)]
    assert subpixel.shape == (68, 2) and subpixel.dtype == np.float32
    assert np.abs(subpixel - truth).max() < 1e-3
    (official,) = detect_landmarks(image, detector, network, flip_input=False)
    assert np.array_equal(official, np.trunc(official)) and np.abs(official - truth).max() < 1


def test_pipeline_finds_an_image_feature_through_the_real_crop():
    # Stand-in network that looks: every heatmap is the crop's brightness pooled to 64x64, so
    # all 68 points land on the one bright spot; flipping the input is consistent with it.
    spot = np.array([97.3, 88.6])
    ys, xs = np.mgrid[0:200, 0:200]
    blob = np.exp(-0.5 * (((xs - spot[0]) ** 2 + (ys - spot[1]) ** 2) / 1.5 ** 2))
    image = np.repeat((blob * 255).round().astype(np.uint8)[..., None], 3, axis=2)

    def network(batch: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.avg_pool2d(batch.mean(dim=1, keepdim=True), 4)
        return pooled.expand(-1, 68, -1, -1)

    # Box sized so the 200*scale window is 64 pixels: one heatmap cell per image pixel. The
    # package's crop (window from grid point 1, truncated corners) and its decoding (cell i at
    # i + 0.5) disagree by up to about a pixel, which the trained FAN absorbs; a network that
    # merely pools its input therefore lands within 1.5 px, not exactly.
    half = 62.4 / 4
    box = [spot[0] - half, spot[1] - half + 0.12 * 2 * half - 3, spot[0] + half, spot[1] + half + 0.12 * 2 * half - 3]
    (points,) = detect_landmarks(image, StaticFaceBoxDetector(box), network, integer_coords=False)
    assert np.abs(points - spot).max() < 1.5


def test_no_face_gives_no_landmarks_and_bad_boxes_are_rejected():
    image = np.zeros((32, 32, 3), np.uint8)
    assert detect_landmarks(image, StaticFaceBoxDetector([]), lambda x: x) == []
    with pytest.raises(ValueError, match="face boxes"):
        StaticFaceBoxDetector([[1, 2, 3]])
    with pytest.raises(ValueError, match="uint8"):
        crop_for_fan(image.astype(np.float32), np.array([10.0, 10.0]), 0.2)
