"""Training augmentation: one affine warp for the geometry, then photometric changes on the crop.

Horizontal flip, rotation, scale and translation are folded into a single
:class:`~explorer.core.geometry.CropGeometry`, so each sample is warped once
and its points follow the same matrix as its pixels. Brightness,
contrast, saturation, gamma, blur and occlusion then act on the crop only and
never move a point.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from explorer.core.geometry import DEFAULT_CONTEXT, CropGeometry, crop_from_box
from explorer.core.landmarks import scheme_for_count

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AugmentationConfig:
    """Ranges of the random augmentation. Each value is drawn uniformly from its range.

    Geometric:
        flip_probability: chance of a horizontal flip (left and right points swap).
        rotation_degrees: rotation drawn from [-r, r] degrees about the box centre.
        scale_range: zoom drawn from [min, max]; 1.1 shows the face 10% larger.
        translation_fraction: shift of the face in x and y, each drawn from
            [-t, t] times the crop side.
        border: OpenCV border mode for crop pixels outside the photo.

    Photometric (on the crop, values in [0, 1]):
        brightness: offset added to every channel, drawn from [-b, b].
        contrast: factor in [1 - c, 1 + c] that scales the distance from the mean grey.
        saturation: factor in [1 - s, 1 + s] that scales the distance from each pixel's grey.
        gamma_range: exponent applied to the values, drawn from [min, max].
        blur_probability: chance of a Gaussian blur with sigma drawn from
            ``blur_sigma_range`` (crop pixels).
        occlusion_probability: chance of one rectangle of random colour. Its
            sides are drawn from ``occlusion_size_range`` times the crop side.
    """

    flip_probability: float = 0.5
    rotation_degrees: float = 30.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    translation_fraction: float = 0.05
    border: int = cv2.BORDER_CONSTANT

    brightness: float = 0.2
    contrast: float = 0.3
    saturation: float = 0.3
    gamma_range: tuple[float, float] = (0.8, 1.25)
    blur_probability: float = 0.2
    blur_sigma_range: tuple[float, float] = (0.5, 1.5)
    occlusion_probability: float = 0.3
    occlusion_size_range: tuple[float, float] = (0.1, 0.4)

    def __post_init__(self) -> None:
        # Ranges read from JSON arrive as lists; store tuples of floats.
        for name in ("scale_range", "gamma_range", "blur_sigma_range", "occlusion_size_range"):
            value = getattr(self, name)
            if len(value) != 2:
                raise ValueError(f"{name} must be a (min, max) pair, got {value!r}")
            object.__setattr__(self, name, (float(value[0]), float(value[1])))

        for name in ("flip_probability", "blur_probability", "occlusion_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        for name in ("rotation_degrees", "translation_fraction", "brightness"):
            value = getattr(self, name)
            if not value >= 0.0:
                raise ValueError(f"{name} must be >= 0 (it is the half-width of a symmetric range), got {value!r}")
        for name in ("contrast", "saturation"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] so the factor 1 +- {name} stays >= 0, got {value!r}")

        # Ranges must be ordered, and positive where the value divides or is an exponent.
        for name in ("scale_range", "gamma_range", "blur_sigma_range", "occlusion_size_range"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {(low, high)!r}")
        if self.occlusion_size_range[1] > 1.0:
            raise ValueError(
                f"occlusion_size_range max must be <= 1 (a fraction of the crop side), got {self.occlusion_size_range[1]!r}"
            )

    @classmethod
    def geometric_only(cls, **overrides: float) -> AugmentationConfig:
        """Return a config with every photometric change switched off."""
        values = dict(
            brightness=0.0,
            contrast=0.0,
            saturation=0.0,
            gamma_range=(1.0, 1.0),
            blur_probability=0.0,
            occlusion_probability=0.0,
        )
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class GeometricParameters:
    """One draw of the geometric augmentation, in the units of :func:`crop_from_box`."""

    flip: bool
    rotation: float
    scale: float
    shift: tuple[float, float]


class Augmentation:
    """Random crop augmentation for landmark training.

    Args:
        config: the augmentation ranges.
        flip_permutation: left-right permutation of the points. When None, it
            comes from the built-in scheme with the sample's point count, and
            samples of any other count may not be flipped.
    """

    def __init__(self, config: AugmentationConfig | None = None, flip_permutation: tuple[int, ...] | None = None) -> None:
        self.config = config if config is not None else AugmentationConfig()
        self.flip_permutation = tuple(flip_permutation) if flip_permutation is not None else None

    def __repr__(self) -> str:
        return f"Augmentation({self.config!r})"

    def sample_geometry(self, rng: np.random.Generator) -> GeometricParameters:
        """Draw flip, rotation, scale and shift from the configured ranges."""
        config = self.config

        # Draw every value even when its range is empty, so that one setting
        # does not change the random stream of the others.
        flip = bool(rng.random() < config.flip_probability)
        rotation = float(rng.uniform(-config.rotation_degrees, config.rotation_degrees))
        scale = float(rng.uniform(*config.scale_range))
        shift_x, shift_y = rng.uniform(-config.translation_fraction, config.translation_fraction, size=2)
        return GeometricParameters(flip=flip, rotation=rotation, scale=scale, shift=(float(shift_x), float(shift_y)))

    def _permutation_for(self, count: int) -> tuple[int, ...]:
        if self.flip_permutation is not None:
            if len(self.flip_permutation) != count:
                raise ValueError(
                    f"flip_permutation has {len(self.flip_permutation)} entries but the sample has {count} points"
                )
            return self.flip_permutation
        try:
            return scheme_for_count(count).flip_permutation
        except ValueError as error:
            raise ValueError(
                f"cannot flip a sample with {count} points: pass flip_permutation to Augmentation "
                "or set flip_probability=0"
            ) from error

    def __call__(
        self,
        image: np.ndarray,
        points: np.ndarray,
        box: np.ndarray,
        size: int,
        rng: np.random.Generator,
        context: float = DEFAULT_CONTEXT,
    ) -> tuple[np.ndarray, np.ndarray, CropGeometry]:
        """Augment one face.

        Args:
            image: (H, W, 3) uint8 RGB photo.
            points: (K, 2) image points.
            box: ``[x0, y0, x1, y1]`` face box in image pixels.
            size: crop side in pixels.
            rng: the sample's random generator.
            context: crop side / longer box side before scaling.

        Returns:
            ``(crop, crop_points, geometry)``: the (size, size, 3) uint8 crop,
            (K, 2) float32 points in crop pixels (flipped samples have their
            left and right points swapped) and the image -> crop geometry.
        """
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"points must have shape (K, 2), got {points.shape}")

        # Geometry: one warp for crop, flip, rotation, scale and translation.
        parameters = self.sample_geometry(rng)
        geometry = crop_from_box(
            box,
            size,
            context=context,
            rotation=parameters.rotation,
            scale=parameters.scale,
            shift=parameters.shift,
            flip=parameters.flip,
        )
        crop = geometry.warp(image, border=self.config.border)
        crop_points = geometry.to_crop(points.astype(np.float64))

        # After a mirror the subject's right eye sits where the left one was,
        # so point k of the flipped sample is the mirrored point perm[k].
        if parameters.flip:
            crop_points = crop_points[list(self._permutation_for(len(crop_points)))]

        crop = self.apply_photometric(crop, rng)
        return crop, crop_points.astype(np.float32), geometry

    def apply_photometric(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply colour jitter, gamma, blur and occlusion to a (S, S, 3) uint8 crop."""
        config = self.config
        values = crop.astype(np.float32) / 255.0

        # Draw all values up front, in a fixed order, for reproducible streams.
        brightness = rng.uniform(-config.brightness, config.brightness)
        contrast = rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)
        saturation = rng.uniform(1.0 - config.saturation, 1.0 + config.saturation)
        gamma = rng.uniform(*config.gamma_range)
        blur = rng.random() < config.blur_probability
        sigma = rng.uniform(*config.blur_sigma_range)
        occlude = rng.random() < config.occlusion_probability
        occlusion_size = rng.uniform(*config.occlusion_size_range, size=2)
        occlusion_corner = rng.random(2)
        occlusion_colour = rng.random(3).astype(np.float32)

        # Luma weights of ITU-R BT.601, the ones cv2.COLOR_RGB2GRAY uses.
        grey = values @ np.array([0.299, 0.587, 0.114], dtype=np.float32)

        # Saturation blends each pixel with its own grey, contrast with the mean grey.
        values = grey[..., None] + saturation * (values - grey[..., None])
        values = grey.mean() + contrast * (values - grey.mean())
        values = np.clip(values + brightness, 0.0, 1.0)
        values = values ** np.float32(gamma)

        # A kernel of 3 sigma on each side contains 99.7% of the Gaussian's weight.
        if blur:
            radius = max(1, int(np.ceil(3.0 * sigma)))
            values = cv2.GaussianBlur(values, (2 * radius + 1, 2 * radius + 1), sigma)

        # One rectangle of flat random colour, fully inside the crop.
        if occlude:
            side = crop.shape[0]
            width, height = (occlusion_size * side).astype(int).clip(1, side)
            x0 = int(occlusion_corner[0] * (side - width + 1))
            y0 = int(occlusion_corner[1] * (side - height + 1))
            values[y0 : y0 + height, x0 : x0 + width] = occlusion_colour

        return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
