"""The one mapping between image, crop and heatmap coordinates.

Conventions used everywhere in the project:

* Points are (x, y) in pixels. Pixel (column c, row r) has its centre at
  (c, r), in images, crops and heatmaps alike. ``cv2.warpAffine`` and
  ``cv2.resize`` use the same convention, so an affine matrix built here can
  be handed to OpenCV unchanged.
* image -> crop is one 2x3 affine matrix (:class:`CropGeometry`). Crop,
  rotation, scale, translation and horizontal flip all compose into it, so
  pixels and points of an augmented sample follow the same matrix and the
  photo is interpolated once (after an area pre-shrink when the crop shrinks
  it more than 2x).
* crop <-> heatmap uses the stride ``s = crop_size / heatmap_size``. Heatmap
  pixel (c, r) covers crop pixels ``c*s .. c*s + s - 1``, whose centre is
  ``c*s + (s - 1)/2``, hence::

      heatmap = (crop - (s - 1) / 2) / s
      crop    = heatmap * s + (s - 1) / 2
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
import torch

logger = logging.getLogger(__name__)

# A crop of ground-truth-point boxes: side = 1.25 x the box's longer side, so
# the jaw and brows keep a margin of 12.5% of the face size on each side.
DEFAULT_CONTEXT = 1.25

# warpAffine with bilinear interpolation aliases when it shrinks an image by
# more than 2x. Below this crop-pixels-per-image-pixel ratio, warp() first
# shrinks the image with area interpolation.
_ANTIALIAS_BELOW = 0.5

PointsT = TypeVar("PointsT", np.ndarray, torch.Tensor)


def _check_points(points: np.ndarray | torch.Tensor, name: str = "points") -> None:
    if not isinstance(points, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or torch tensor of shape (..., 2), not {type(points).__name__}")
    if points.ndim < 1 or points.shape[-1] != 2:
        raise ValueError(f"{name} have shape {tuple(points.shape)}; expected (..., 2) with (x, y) in the last axis")


def apply_affine(matrix: np.ndarray, points: PointsT) -> PointsT:
    """Apply a 2x3 affine ``matrix`` to points of shape (..., 2).

    numpy input returns numpy, torch input returns torch on the same device.
    Floating inputs keep their dtype. Integer inputs return float64.
    """
    _check_points(points)
    # A writable copy: torch warns about (and cannot share) read-only arrays.
    matrix = np.array(matrix, dtype=np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"affine matrix has shape {matrix.shape}, expected (2, 3)")

    if isinstance(points, torch.Tensor):
        dtype = points.dtype if points.is_floating_point() else torch.float64
        linear = torch.as_tensor(matrix[:, :2], dtype=dtype, device=points.device)
        offset = torch.as_tensor(matrix[:, 2], dtype=dtype, device=points.device)
        return points.to(dtype) @ linear.T + offset

    # Compute in float64 so that round trips stay well below 1e-4 px.
    dtype = points.dtype if np.issubdtype(points.dtype, np.floating) else np.float64
    result = points.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return result.astype(dtype, copy=False)


def box_from_points(points: np.ndarray | torch.Tensor) -> np.ndarray:
    """Return the bounding box ``[x0, y0, x1, y1]`` (float64) of points of shape (K, 2)."""
    _check_points(points)
    array = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    array = array.reshape(-1, 2).astype(np.float64)
    if array.shape[0] == 0:
        raise ValueError("cannot take the bounding box of zero points")
    if not np.all(np.isfinite(array)):
        raise ValueError("points contain NaN or infinite values; the bounding box needs finite coordinates")
    return np.concatenate([array.min(axis=0), array.max(axis=0)])


@dataclass(frozen=True)
class CropGeometry:
    """A square crop of an image, as the affine map image -> crop.

    Attributes:
        matrix: (2, 3) float64 matrix ``A`` with ``crop = A[:, :2] @ image + A[:, 2]``,
            in the form ``cv2.warpAffine`` takes (no ``WARP_INVERSE_MAP``).
        size: side of the crop in pixels.
    """

    matrix: np.ndarray
    size: int

    def __post_init__(self) -> None:
        matrix = np.array(self.matrix, dtype=np.float64)
        if matrix.shape != (2, 3):
            raise ValueError(f"CropGeometry.matrix has shape {matrix.shape}, expected (2, 3)")
        if not np.all(np.isfinite(matrix)):
            raise ValueError("CropGeometry.matrix contains NaN or infinite values")
        if abs(np.linalg.det(matrix[:, :2])) < 1e-12:
            raise ValueError("CropGeometry.matrix is singular; the crop cannot be mapped back to the image")
        if int(self.size) != self.size or self.size <= 0:
            raise ValueError(f"CropGeometry.size must be a positive integer, got {self.size!r}")

        # Keep a private read-only copy so that a frozen geometry stays frozen.
        matrix.setflags(write=False)
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "size", int(self.size))

    @property
    def inverse_matrix(self) -> np.ndarray:
        """The (2, 3) float64 matrix crop -> image."""
        return cv2.invertAffineTransform(self.matrix)

    @property
    def is_mirrored(self) -> bool:
        """Whether the crop is a mirror image of the photo (a horizontal flip is part of the map)."""
        return bool(np.linalg.det(self.matrix[:, :2]) < 0)

    @property
    def scale(self) -> float:
        """Crop pixels per image pixel (the square root of the map's area scale)."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))

    def to_crop(self, points: PointsT) -> PointsT:
        """Map image points (..., 2) to crop points (..., 2)."""
        return apply_affine(self.matrix, points)

    def to_image(self, points: PointsT) -> PointsT:
        """Map crop points (..., 2) back to image points (..., 2)."""
        return apply_affine(self.inverse_matrix, points)

    def warp(
        self,
        image: np.ndarray,
        border: int = cv2.BORDER_CONSTANT,
        interpolation: int = cv2.INTER_LINEAR,
        border_value: float | tuple[float, ...] = 0,
    ) -> np.ndarray:
        """Resample ``image`` (H, W) or (H, W, C) into the (size, size[, C]) crop.

        ``border`` is an OpenCV border mode: ``cv2.BORDER_CONSTANT`` fills
        pixels outside the image with ``border_value``, ``cv2.BORDER_REPLICATE``
        repeats the edge pixels. Crops that shrink the image by more than 2x
        first shrink it with area interpolation, so fine texture does not alias.
        """
        if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or 0 in image.shape[:2]:
            shape = getattr(image, "shape", None)
            raise ValueError(f"image must be a non-empty numpy array (H, W) or (H, W, C), got shape {shape}")

        matrix = np.array(self.matrix)
        source = image

        # Pre-shrink with INTER_AREA, then fold the resize into the matrix.
        # cv2.resize maps source pixel centre u to (u + 0.5) * f - 0.5.
        if self.scale < _ANTIALIAS_BELOW:
            factor = self.scale / _ANTIALIAS_BELOW
            height, width = image.shape[:2]
            new_width = max(1, round(width * factor))
            new_height = max(1, round(height * factor))
            source = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_AREA)
            fx = new_width / width
            fy = new_height / height
            resize = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5], [0.0, 0.0, 1.0]])
            matrix = matrix @ np.linalg.inv(resize)

        return cv2.warpAffine(
            source,
            matrix,
            (self.size, self.size),
            flags=interpolation,
            borderMode=border,
            borderValue=border_value,
        )


def crop_from_box(
    box: np.ndarray | tuple[float, float, float, float],
    size: int,
    context: float = DEFAULT_CONTEXT,
    rotation: float = 0.0,
    scale: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    flip: bool = False,
) -> CropGeometry:
    """Build the square crop around a face box, with optional augmentation folded in.

    Without augmentation the crop is centred on the box centre and its side
    is ``context`` times the box's longer side. The default 1.25 suits boxes
    around ground-truth points (the 300-W protocol). Face-detector boxes are
    usually looser or tighter than the points, so callers that crop detector
    boxes should pass a ``context`` fitted to their detector.

    Args:
        box: ``[x0, y0, x1, y1]`` in image pixels.
        size: crop side in pixels.
        context: crop side / longer box side, > 0.
        rotation: degrees, about the box centre. Positive values turn the face
            counter-clockwise as displayed, the sign ``cv2.getRotationMatrix2D`` uses.
        scale: zoom factor. 1.1 shows the face 10% larger (the crop covers a
            1.1x smaller image area), 0.9 shows it 10% smaller.
        shift: (dx, dy) translation of the face inside the crop, as fractions
            of the crop side. (0.05, 0) moves the face right by 5% of the side.
        flip: mirror the crop horizontally about its vertical centre line.
            Point indices are not permuted here: callers swap left and right
            points with the scheme's flip permutation.

    Returns:
        The image -> crop geometry.
    """
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise ValueError(f"box must be 4 finite numbers [x0, y0, x1, y1], got {box.tolist()}")
    if box[2] < box[0] or box[3] < box[1]:
        raise ValueError(f"box {box.tolist()} has x1 < x0 or y1 < y0; pass [x0, y0, x1, y1]")
    if int(size) != size or size <= 0:
        raise ValueError(f"crop size must be a positive integer number of pixels, got {size!r}")
    if not context > 0:
        raise ValueError(f"context must be > 0 (crop side / longer box side), got {context!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    if not math.isfinite(rotation):
        raise ValueError(f"rotation must be a finite number of degrees, got {rotation!r}")

    # Crop side in image pixels. A box of zero extent (one point) would give a
    # degenerate crop, so the side is at least one image pixel.
    longer_side = max(box[2] - box[0], box[3] - box[1])
    side = max(context * longer_side / scale, 1.0)
    pixels_per_image_pixel = size / side

    # Centre the box, then rotate, scale and mirror about the origin.
    centre = np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])
    angle = math.radians(rotation)
    cos, sin = math.cos(angle), math.sin(angle)
    linear = pixels_per_image_pixel * np.array([[cos, sin], [-sin, cos]])
    if flip:
        linear = np.diag([-1.0, 1.0]) @ linear

    # Move the origin to the crop centre ((size - 1) / 2 under the pixel-centre
    # convention) plus the requested shift in crop pixels.
    crop_centre = np.full(2, (size - 1) / 2.0) + np.asarray(shift, dtype=np.float64) * size
    offset = crop_centre - linear @ centre

    return CropGeometry(matrix=np.concatenate([linear, offset[:, None]], axis=1), size=int(size))


def _check_stride(stride: float) -> None:
    if not stride > 0:
        raise ValueError(f"stride must be > 0 (crop pixels per heatmap pixel), got {stride!r}")


def crop_to_heatmap(points: PointsT, stride: float) -> PointsT:
    """Map crop points (..., 2) to heatmap points: ``(crop - (stride - 1) / 2) / stride``."""
    _check_points(points)
    _check_stride(stride)
    return (points - (stride - 1) / 2.0) / stride


def heatmap_to_crop(points: PointsT, stride: float) -> PointsT:
    """Map heatmap points (..., 2) to crop points: ``heatmap * stride + (stride - 1) / 2``."""
    _check_points(points)
    _check_stride(stride)
    return points * stride + (stride - 1) / 2.0


def image_to_heatmap(points: PointsT, geometry: CropGeometry, stride: float) -> PointsT:
    """Map image points (..., 2) through the crop to heatmap points."""
    return crop_to_heatmap(geometry.to_crop(points), stride)


def heatmap_to_image(points: PointsT, geometry: CropGeometry, stride: float) -> PointsT:
    """Map heatmap points (..., 2) through the crop back to image points."""
    return geometry.to_image(heatmap_to_crop(points, stride))


def heatmap_to_image_matrix(geometry: CropGeometry, stride: float) -> np.ndarray:
    """Return the (2, 3) float64 affine map heatmap -> image."""
    _check_stride(stride)

    # heatmap -> crop is a scale by `stride` plus a shift of (stride - 1) / 2.
    to_crop = np.array([[stride, 0.0, (stride - 1) / 2.0], [0.0, stride, (stride - 1) / 2.0], [0.0, 0.0, 1.0]])
    crop_to_image = np.vstack([geometry.inverse_matrix, [0.0, 0.0, 1.0]])
    return (crop_to_image @ to_crop)[:2]


def heatmap_to_image_overlay(
    heatmap: np.ndarray | torch.Tensor,
    geometry: CropGeometry,
    stride: float,
    image_shape: tuple[int, ...],
) -> np.ndarray:
    """Warp one heatmap onto the original photo, for overlays.

    Args:
        heatmap: (H, W) heatmap values (logits or probabilities).
        geometry: the crop the heatmap was computed on.
        stride: crop pixels per heatmap pixel.
        image_shape: the photo's shape, (H_img, W_img) or (H_img, W_img, C).

    Returns:
        (H_img, W_img) float32 array. Photo pixels outside the crop are 0, and
        a heatmap peak at heatmap point p lands on ``heatmap_to_image(p)``.
    """
    if isinstance(heatmap, torch.Tensor):
        heatmap = heatmap.detach().to("cpu", torch.float32).numpy()
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2 or 0 in heatmap.shape:
        raise ValueError(f"heatmap must be a non-empty 2-D array (H, W), got shape {heatmap.shape}")
    if len(image_shape) not in (2, 3) or image_shape[0] <= 0 or image_shape[1] <= 0:
        raise ValueError(f"image_shape must be (H, W) or (H, W, C) with H, W > 0, got {tuple(image_shape)}")

    # warpAffine maps source (heatmap) pixel centres to destination (photo)
    # pixel centres with this forward matrix.
    matrix = heatmap_to_image_matrix(geometry, stride)
    height, width = int(image_shape[0]), int(image_shape[1])

    # Replicate the border so the outer half pixel of the heatmap is not
    # blended with zeros, then zero the photo outside the heatmap's extent.
    # Nearest-neighbour warping of ones marks photo pixels whose nearest
    # heatmap pixel exists.
    overlay = cv2.warpAffine(heatmap, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(
        np.ones_like(heatmap),
        matrix,
        (width, height),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    return overlay * inside
