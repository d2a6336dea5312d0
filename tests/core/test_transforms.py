import numpy as np
import pytest

from explorer.core.geometry import box_from_points
from explorer.core.landmarks import IBUG68
from explorer.core.transforms import Augmentation, AugmentationConfig

IMAGE_SIZE = 220
CROP_SIZE = 128
BLOB_SIGMA = 1.5
WINDOW_RADIUS = 5


def grid_points() -> np.ndarray:
    """68 points on a 9 x 8 grid, 13.5 px apart, with sub-pixel offsets."""
    columns, rows = np.meshgrid(np.arange(9), np.arange(8))
    points = np.stack([columns.ravel(), rows.ravel()], axis=1)[:68] * 13.5 + [56.3, 61.7]
    return points.astype(np.float64)


def blob_image(points: np.ndarray) -> np.ndarray:
    """RGB uint8 image, black with one Gaussian dot (sigma 1.5 px) at each point."""
    rows, columns = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    intensity = np.zeros((IMAGE_SIZE, IMAGE_SIZE))
    for x, y in points:
        intensity += np.exp(-((columns - x) ** 2 + (rows - y) ** 2) / (2 * BLOB_SIGMA**2))
    grey = np.clip(np.rint(intensity * 255), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def dot_errors(crop: np.ndarray, crop_points: np.ndarray) -> np.ndarray:
    """Distance from each crop point to the intensity-weighted centroid of the dot around it.

    Points whose window is not fully inside the crop are NaN.
    """
    grey = crop[:, :, 0].astype(np.float64)
    errors = np.full(len(crop_points), np.nan)
    for index, (x, y) in enumerate(crop_points):
        column, row = int(round(x)), int(round(y))
        if not (WINDOW_RADIUS <= column < CROP_SIZE - WINDOW_RADIUS and WINDOW_RADIUS <= row < CROP_SIZE - WINDOW_RADIUS):
            continue
        window = grey[row - WINDOW_RADIUS : row + WINDOW_RADIUS + 1, column - WINDOW_RADIUS : column + WINDOW_RADIUS + 1]
        rows, columns = np.mgrid[row - WINDOW_RADIUS : row + WINDOW_RADIUS + 1, column - WINDOW_RADIUS : column + WINDOW_RADIUS + 1]
        centroid = np.array([(window * columns).sum(), (window * rows).sum()]) / window.sum()
        errors[index] = np.hypot(*(centroid - (x, y)))
    return errors


GEOMETRIC_KINDS = {
    "flip": AugmentationConfig.geometric_only(flip_probability=1.0, rotation_degrees=0.0, scale_range=(1.0, 1.0), translation_fraction=0.0),
    "rotation": AugmentationConfig.geometric_only(flip_probability=0.0, rotation_degrees=30.0, scale_range=(1.0, 1.0), translation_fraction=0.0),
    "scale": AugmentationConfig.geometric_only(flip_probability=0.0, rotation_degrees=0.0, scale_range=(0.8, 1.25), translation_fraction=0.0),
    "translation": AugmentationConfig.geometric_only(flip_probability=0.0, rotation_degrees=0.0, scale_range=(1.0, 1.0), translation_fraction=0.1),
    "combined": AugmentationConfig.geometric_only(flip_probability=0.5, rotation_degrees=30.0, scale_range=(0.9, 1.1), translation_fraction=0.05),
}


@pytest.mark.parametrize("kind", list(GEOMETRIC_KINDS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_augmentation_keeps_points_on_dots(kind, seed):
    points = grid_points()
    augmentation = Augmentation(GEOMETRIC_KINDS[kind])
    crop, crop_points, _ = augmentation(blob_image(points), points, box_from_points(points), CROP_SIZE, np.random.default_rng(seed))
    errors = dot_errors(crop, crop_points)
    checked = errors[~np.isnan(errors)]
    assert len(checked) >= 40, f"only {len(checked)} points inside the crop"
    assert checked.max() < 0.5


@pytest.mark.parametrize("kind", list(GEOMETRIC_KINDS))
def test_augmentation_points_follow_matrix(kind):
    # Crop point k is the image point perm[k] after a flip, point k otherwise.
    points = grid_points()
    augmentation = Augmentation(GEOMETRIC_KINDS[kind])
    _, crop_points, geometry = augmentation(blob_image(points), points, box_from_points(points), CROP_SIZE, np.random.default_rng(4))
    source = points[list(IBUG68.flip_permutation)] if geometry.is_mirrored else points
    assert np.abs(geometry.to_image(crop_points.astype(np.float64)) - source).max() < 1e-3


def test_flip_moves_right_eye_corner_to_left_mirror():
    points = grid_points()
    config = GEOMETRIC_KINDS["flip"]
    _, crop_points, geometry = Augmentation(config)(blob_image(points), points, box_from_points(points), CROP_SIZE, np.random.default_rng(0))
    mirrored_left_corner = geometry.to_crop(points[45])
    assert np.allclose(crop_points[36], mirrored_left_corner, atol=1e-4)


def test_flip_twice_restores_points():
    points = grid_points()
    config = GEOMETRIC_KINDS["flip"]
    augmentation = Augmentation(config)
    box = box_from_points(points)
    crop, crop_points, _ = augmentation(blob_image(points), points, box, CROP_SIZE, np.random.default_rng(0))
    # Flip the flipped crop again, with a crop that covers it exactly.
    _, back, second = augmentation(crop, crop_points, [0, 0, CROP_SIZE - 1, CROP_SIZE - 1], CROP_SIZE, np.random.default_rng(0), context=CROP_SIZE / (CROP_SIZE - 1))
    plain = Augmentation(AugmentationConfig.geometric_only(flip_probability=0.0, rotation_degrees=0.0, scale_range=(1.0, 1.0), translation_fraction=0.0))
    _, expected, _ = plain(blob_image(points), points, box, CROP_SIZE, np.random.default_rng(0))
    assert second.is_mirrored
    assert np.abs(back - expected).max() < 1e-3


def test_augmentation_is_reproducible():
    points = grid_points()
    image = blob_image(points)
    augmentation = Augmentation()
    first = augmentation(image, points, box_from_points(points), CROP_SIZE, np.random.default_rng(7))
    second = augmentation(image, points, box_from_points(points), CROP_SIZE, np.random.default_rng(7))
    assert np.array_equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])


def test_augmentation_output_types():
    points = grid_points()
    crop, crop_points, geometry = Augmentation()(blob_image(points), points, box_from_points(points), CROP_SIZE, np.random.default_rng(0))
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    assert crop.dtype == np.uint8
    assert crop_points.dtype == np.float32
    assert geometry.size == CROP_SIZE


def test_photometric_off_is_identity():
    image = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    augmentation = Augmentation(AugmentationConfig.geometric_only())
    assert np.array_equal(augmentation.apply_photometric(image, np.random.default_rng(0)), image)


def test_photometric_changes_pixels():
    image = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    config = AugmentationConfig(blur_probability=1.0, occlusion_probability=1.0)
    changed = Augmentation(config).apply_photometric(image, np.random.default_rng(0))
    assert changed.dtype == np.uint8
    assert not np.array_equal(changed, image)


def test_flip_unknown_count_needs_permutation():
    points = grid_points()[:10]
    augmentation = Augmentation(GEOMETRIC_KINDS["flip"])
    with pytest.raises(ValueError, match="pass flip_permutation"):
        augmentation(blob_image(points), points, box_from_points(points), CROP_SIZE, np.random.default_rng(0))


def test_custom_permutation_length_checked():
    points = grid_points()
    augmentation = Augmentation(GEOMETRIC_KINDS["flip"], flip_permutation=(1, 0))
    with pytest.raises(ValueError, match="2 entries but the sample has 68"):
        augmentation(blob_image(points), points, box_from_points(points), CROP_SIZE, np.random.default_rng(0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"flip_probability": 1.5}, "flip_probability"),
        ({"rotation_degrees": -1.0}, "rotation_degrees"),
        ({"scale_range": (1.2, 0.8)}, "scale_range"),
        ({"contrast": 2.0}, "contrast"),
        ({"occlusion_size_range": (0.1, 1.5)}, "occlusion_size_range"),
    ],
    ids=["probability", "rotation", "scale-order", "contrast", "occlusion-size"],
)
def test_config_rejects_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentationConfig(**kwargs)
