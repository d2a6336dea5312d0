import cv2
import numpy as np
import pytest
import torch

from explorer.core.geometry import (
    CropGeometry,
    box_from_points,
    crop_from_box,
    crop_to_heatmap,
    heatmap_to_crop,
    heatmap_to_image,
    heatmap_to_image_overlay,
    image_to_heatmap,
)

BOX = np.array([40.0, 60.0, 140.0, 150.0])


def weighted_centroid(image: np.ndarray, x: float, y: float, radius: int) -> np.ndarray:
    """Intensity-weighted centroid of a (H, W) image in a window around (x, y)."""
    column, row = int(round(x)), int(round(y))
    window = image[row - radius : row + radius + 1, column - radius : column + radius + 1].astype(np.float64)
    rows, columns = np.mgrid[row - radius : row + radius + 1, column - radius : column + radius + 1]
    return np.array([(window * columns).sum(), (window * rows).sum()]) / window.sum()


def gaussian_image(height: int, width: int, x: float, y: float, sigma: float) -> np.ndarray:
    rows, columns = np.mgrid[0:height, 0:width]
    return np.exp(-((columns - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_box_from_points_bounds():
    points = np.array([[3.0, 4.0], [10.0, -2.0], [5.0, 7.0]])
    assert np.array_equal(box_from_points(points), [3.0, -2.0, 10.0, 7.0])


def test_box_from_points_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        box_from_points(np.array([[1.0, np.nan]]))


def test_crop_centres_box_centre():
    geometry = crop_from_box(BOX, 128)
    centre = np.array([(BOX[0] + BOX[2]) / 2, (BOX[1] + BOX[3]) / 2])
    assert np.allclose(geometry.to_crop(centre), [63.5, 63.5])


def test_crop_side_is_context_times_longer_side():
    geometry = crop_from_box(BOX, 100, context=1.5)
    assert geometry.scale == pytest.approx(100 / (1.5 * 100))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"rotation": 27.0},
        {"scale": 1.3},
        {"shift": (0.1, -0.05)},
        {"flip": True},
        {"rotation": -15.0, "scale": 0.8, "shift": (-0.03, 0.04), "flip": True},
    ],
    ids=["plain", "rotation", "scale", "shift", "flip", "combined"],
)
def test_crop_image_round_trip(options):
    geometry = crop_from_box(BOX, 128, **options)
    points = np.random.default_rng(0).uniform(-50, 300, size=(68, 2))
    assert np.abs(geometry.to_image(geometry.to_crop(points)) - points).max() < 1e-4


def test_crop_image_round_trip_torch():
    geometry = crop_from_box(BOX, 128, rotation=10.0, flip=True)
    points = torch.rand(4, 68, 2, dtype=torch.float32) * 200
    back = geometry.to_image(geometry.to_crop(points))
    assert back.dtype == torch.float32
    assert torch.allclose(back, points, atol=1e-3)


def test_to_crop_keeps_float32_dtype():
    geometry = crop_from_box(BOX, 64)
    assert geometry.to_crop(np.zeros((3, 2), dtype=np.float32)).dtype == np.float32


def test_flip_is_mirrored():
    assert crop_from_box(BOX, 64, flip=True).is_mirrored


def test_no_flip_is_not_mirrored():
    assert not crop_from_box(BOX, 64, rotation=40.0).is_mirrored


def test_positive_rotation_turns_counter_clockwise():
    # A point right of the centre moves up (smaller y) in the crop.
    geometry = crop_from_box([0, 0, 100, 100], 101, context=1.01, rotation=90.0)
    assert np.allclose(geometry.to_crop(np.array([100.0, 50.0])), [50.0, 0.0], atol=1e-9)


def test_shift_moves_face_right():
    plain = crop_from_box(BOX, 100)
    shifted = crop_from_box(BOX, 100, shift=(0.1, 0.0))
    point = np.array([90.0, 100.0])
    assert np.allclose(shifted.to_crop(point) - plain.to_crop(point), [10.0, 0.0])


def test_warp_puts_pixel_on_mapped_point():
    # context 1 and a box of side 63 give a pure translation onto a 64 px crop.
    image = np.zeros((200, 200), dtype=np.float32)
    image[90, 70] = 1.0
    geometry = crop_from_box([50, 60, 113, 123], 64, context=64 / 63)
    crop = geometry.warp(image)
    expected = geometry.to_crop(np.array([70.0, 90.0]))
    assert np.allclose(expected, np.round(expected), atol=1e-9)
    assert crop[int(round(expected[1])), int(round(expected[0]))] == pytest.approx(1.0)


def test_warp_antialiased_keeps_blob_position():
    # Shrinking 4x takes the INTER_AREA path; a blob must stay on its point.
    image = gaussian_image(800, 800, 413.3, 377.8, sigma=8.0)
    geometry = crop_from_box([100, 100, 700, 700], 128, context=1.0, rotation=12.0)
    assert geometry.scale < 0.5
    crop = geometry.warp(image)
    expected = geometry.to_crop(np.array([413.3, 377.8]))
    found = weighted_centroid(crop, *expected, radius=8)
    assert np.abs(found - expected).max() < 0.1


def test_warp_replicate_border():
    image = np.full((50, 50, 3), 200, dtype=np.uint8)
    crop = crop_from_box([0, 0, 49, 49], 32, context=3.0).warp(image, border=cv2.BORDER_REPLICATE)
    assert crop.min() == 200


def test_warp_constant_border():
    image = np.full((50, 50, 3), 200, dtype=np.uint8)
    crop = crop_from_box([0, 0, 49, 49], 32, context=3.0).warp(image)
    assert crop[0, 0].max() == 0


def test_warp_output_shape():
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    assert crop_from_box([0, 0, 39, 29], 48).warp(image).shape == (48, 48, 3)


@pytest.mark.parametrize("stride", [1.0, 2.0, 4.0, 3.5])
def test_crop_heatmap_round_trip(stride):
    points = np.random.default_rng(2).uniform(0, 128, size=(10, 2))
    assert np.allclose(heatmap_to_crop(crop_to_heatmap(points, stride), stride), points)


def test_heatmap_pixel_centre_in_crop():
    # Heatmap pixel 0 with stride 4 covers crop pixels 0..3, centred at 1.5.
    assert np.allclose(heatmap_to_crop(np.array([0.0, 0.0]), 4), [1.5, 1.5])


def test_crop_to_heatmap_torch():
    points = torch.tensor([[1.5, 5.5]])
    assert torch.allclose(crop_to_heatmap(points, 4), torch.tensor([[0.0, 1.0]]))


def test_image_heatmap_round_trip():
    geometry = crop_from_box(BOX, 128, rotation=20.0, scale=1.1, flip=True)
    points = np.random.default_rng(3).uniform(0, 200, size=(68, 2))
    back = heatmap_to_image(image_to_heatmap(points, geometry, 4), geometry, 4)
    assert np.abs(back - points).max() < 1e-4


def test_overlay_peak_at_image_location():
    geometry = crop_from_box(BOX, 128, rotation=25.0, scale=1.1)
    stride = 4
    peak = np.array([9.0, 21.0])
    heatmap = gaussian_image(32, 32, *peak, sigma=1.0)
    overlay = heatmap_to_image_overlay(heatmap, geometry, stride, (240, 200, 3))
    expected = heatmap_to_image(peak, geometry, stride)
    row, column = np.unravel_index(np.argmax(overlay), overlay.shape)
    assert overlay.shape == (240, 200)
    assert np.hypot(column - expected[0], row - expected[1]) <= stride / 2


def test_overlay_centroid_matches_mapping():
    geometry = crop_from_box(BOX, 128, rotation=-10.0)
    stride = 4
    peak = np.array([14.3, 11.6])
    overlay = heatmap_to_image_overlay(gaussian_image(32, 32, *peak, sigma=1.0), geometry, stride, (240, 200))
    expected = heatmap_to_image(peak, geometry, stride)
    found = weighted_centroid(overlay, *expected, radius=12)
    assert np.abs(found - expected).max() < 0.25


def test_overlay_zero_outside_crop():
    geometry = crop_from_box(BOX, 128)
    overlay = heatmap_to_image_overlay(np.ones((32, 32)), geometry, 4, (240, 200))
    assert overlay[0, 0] == 0.0


def test_overlay_accepts_torch():
    geometry = crop_from_box(BOX, 128)
    overlay = heatmap_to_image_overlay(torch.ones(32, 32), geometry, 4, (240, 200))
    assert overlay.dtype == np.float32


def test_crop_geometry_is_read_only():
    geometry = crop_from_box(BOX, 64)
    with pytest.raises(ValueError):
        geometry.matrix[0, 0] = 5.0


def test_crop_geometry_rejects_singular_matrix():
    with pytest.raises(ValueError, match="singular"):
        CropGeometry(np.zeros((2, 3)), 64)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"box": [0, 0, 10], "size": 64}, "4 finite numbers"),
        ({"box": [10, 0, 0, 10], "size": 64}, "x1 < x0"),
        ({"box": [0, 0, 10, 10], "size": 0}, "positive integer"),
        ({"box": [0, 0, 10, 10], "size": 64, "context": 0}, "context must be > 0"),
        ({"box": [0, 0, 10, 10], "size": 64, "scale": -1}, "scale must be > 0"),
    ],
    ids=["short-box", "inverted-box", "zero-size", "zero-context", "negative-scale"],
)
def test_crop_from_box_rejects_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        crop_from_box(**kwargs)


def test_stride_must_be_positive():
    with pytest.raises(ValueError, match="stride must be > 0"):
        crop_to_heatmap(np.zeros((1, 2)), 0)
