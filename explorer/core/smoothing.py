"""Image-aware label smoothing: blur each landmark's label along the image edges near it.

Annotators disagree most along image edges: a jaw or eyebrow point can slide
along its contour but hardly across it. Following Yang & Yeh, "Heatmap
Regression without Soft-Argmax for Facial Landmark Detection", ICCV 2025, the
label of landmark k becomes a Gaussian N(y_k, Sigma_k) whose covariance comes
from the edges around y_k:

1. edge map: gradient magnitude (Sobel) of the grey crop at heatmap resolution,
   after an optional Gaussian pre-smoothing, divided by a per-image scale;
2. a square window of the edge map around y_k, combined with an isotropic
   Gaussian of standard deviation sigma at y_k;
3. the covariance Sigma_k of that combined weight around y_k, with its
   eigenvalues clamped to [min_std^2, max_std^2];
4. N(y_k, Sigma_k) discretised on the heatmap grid and normalised to sum to 1.

Coordinates: points are (x, y) in heatmap pixels. A crop of side S and a heatmap
of width W have stride s = S / W, and heatmap = (crop - (s - 1) / 2) / s, which
is exactly the centre of the s x s block of crop pixels that area downsampling
averages into one heatmap pixel.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from explorer.core.heatmaps import pixel_grid

logger = logging.getLogger(__name__)

__all__ = [
    "SmoothingParams",
    "edge_map",
    "label_covariances",
    "image_aware_labels",
    "covariance_distributions",
]

# ITU-R BT.601 luma weights for RGB -> grey.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class SmoothingParams:
    """Constants of image-aware label smoothing. Lengths are in heatmap pixels.

    Attributes:
        sigma: standard deviation of the isotropic Gaussian component; a flat
            patch gives Sigma = sigma^2 I. Default 1.0.
        window: half-size R of the square (2R + 1) x (2R + 1) window of edge
            values around each landmark. Default 4.
        edge_sigma: standard deviation of a Gaussian that weights the edge
            values by their distance from the landmark inside the window. It
            keeps edges that pass near the point from dominating the second
            moments over the edge through it; 0 weights the whole window
            equally. Default 2.0.
        edge_weight: weight w in [0, 1] of the edge component. The combined
            weight is (1 - w) * Gaussian + w * edges, where both have peak value 1.
            0 gives sigma^2 I everywhere. Default 0.8.
        smooth_sigma: standard deviation of the Gaussian blur of the grey image
            before the Sobel operator, which suppresses pixel noise; 0 disables
            it. Default 0.5.
        min_edge_scale: floor of the per-image divisor of the edge map, in grey
            levels per heatmap pixel (a unit step between two pixels gives 0.5).
            The edge map is divided by max(its maximum, min_edge_scale), so a
            nearly flat image keeps small edge values instead of amplified
            noise. Default 0.05.
        min_std: floor of the standard deviation along each principal axis,
            which keeps Sigma invertible on a thin edge. Default 0.5.
        max_std: cap of the standard deviation along each principal axis, which
            bounds the spread along a long edge. Default 4.0.
        preserve_area: rescale Sigma so that det(Sigma) = sigma^4, the
            determinant of the isotropic label. The edges then decide only the
            orientation and elongation of the label, not how much it blurs,
            so the label is as sharp as the isotropic one on average.
            Default True.
    """

    sigma: float = 1.0
    window: int = 4
    edge_sigma: float = 2.0
    edge_weight: float = 0.8
    smooth_sigma: float = 0.5
    min_edge_scale: float = 0.05
    min_std: float = 0.5
    max_std: float = 4.0
    preserve_area: bool = True

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0 heatmap pixels, got {self.sigma}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window must be an int >= 1 (half-size in heatmap pixels), got {self.window!r}")
        if not self.edge_sigma >= 0:
            raise ValueError(f"edge_sigma must be >= 0 heatmap pixels (0 weights the window equally), got {self.edge_sigma}")
        if not 0.0 <= self.edge_weight <= 1.0:
            raise ValueError(f"edge_weight must be in [0, 1], got {self.edge_weight}")
        if not self.smooth_sigma >= 0:
            raise ValueError(f"smooth_sigma must be >= 0 heatmap pixels (0 disables blurring), got {self.smooth_sigma}")
        if not self.min_edge_scale > 0:
            raise ValueError(f"min_edge_scale must be > 0, got {self.min_edge_scale}")
        if not 0 < self.min_std <= self.max_std:
            raise ValueError(f"need 0 < min_std <= max_std, got min_std={self.min_std}, max_std={self.max_std}")


def _resolve_params(params: SmoothingParams | None, overrides: dict[str, Any]) -> SmoothingParams:
    if params is not None and not isinstance(params, SmoothingParams):
        raise TypeError(f"params must be a SmoothingParams or None, got {type(params).__name__}")
    base = params if params is not None else SmoothingParams()
    valid = {field.name for field in dataclasses.fields(SmoothingParams)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise TypeError(f"unknown smoothing parameters {unknown}; valid names are {sorted(valid)}")
    return dataclasses.replace(base, **overrides)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (B, 3, H, W) or (B, 1, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [0, 1], got {images.dtype}; divide uint8 images by 255")


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur (B, 1, H, W) with a separable Gaussian of ``sigma`` pixels, truncated at 3 sigma, reflecting at borders."""
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets * offsets) / (2.0 * sigma * sigma))
    kernel = kernel / kernel.sum()

    # Reflect padding needs the pad to be smaller than the side, so fall back to replicate.
    mode = "reflect" if min(images.shape[-2:]) > radius else "replicate"
    padded = F.pad(images, (radius, radius, radius, radius), mode=mode)
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1))
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1))


def edge_map(
    images: torch.Tensor,
    size: tuple[int, int] | None = None,
    smooth_sigma: float = 0.5,
    min_edge_scale: float = 0.05,
) -> torch.Tensor:
    """Compute a normalised gradient-magnitude edge map of the grey images.

    Steps: grey = BT.601 luma of RGB (or the single channel); area-downsample to
    ``size`` when given; Gaussian blur of ``smooth_sigma`` output pixels; Sobel
    derivatives divided by 8, which gives the central-difference derivative in
    grey levels per output pixel, with replicated borders so the image border is
    no edge; magnitude; division by max(per-image maximum, ``min_edge_scale``).

    Args:
        images: (B, 3, S_h, S_w) RGB or (B, 1, S_h, S_w) grey, floats in [0, 1].
        size: output (H, W), which must divide (S_h, S_w) by one integer stride;
            None keeps the input resolution.
        smooth_sigma: blur before the Sobel operator, in output pixels; 0 disables it.
        min_edge_scale: floor of the per-image divisor, in grey levels per output pixel.

    Returns:
        (B, 1, H, W) values in [0, 1], in the images' dtype and device.
    """
    _check_images(images)
    if smooth_sigma < 0:
        raise ValueError(f"smooth_sigma must be >= 0, got {smooth_sigma}")
    if not min_edge_scale > 0:
        raise ValueError(f"min_edge_scale must be > 0, got {min_edge_scale}")

    # Grey image.
    if images.shape[1] == 3:
        luma = images.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
        grey = (images * luma).sum(dim=1, keepdim=True)
    else:
        grey = images

    # Area downsampling: each output pixel is the mean of its stride x stride block.
    if size is not None:
        stride = _crop_stride(images.shape[-2:], size)
        if stride > 1:
            grey = F.avg_pool2d(grey, kernel_size=stride, stride=stride)

    if smooth_sigma > 0:
        grey = _gaussian_blur(grey, smooth_sigma)

    # Sobel / 8 = derivative per pixel, averaged over three rows or columns with weights 1, 2, 1.
    sobel_x = grey.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    grad_x = F.conv2d(padded, sobel_x.view(1, 1, 3, 3))
    grad_y = F.conv2d(padded, sobel_x.t().contiguous().view(1, 1, 3, 3))
    magnitude = torch.sqrt(grad_x * grad_x + grad_y * grad_y)

    # Per-image scale, floored so a nearly flat image is not stretched to [0, 1].
    scale = magnitude.flatten(start_dim=1).amax(dim=1).clamp_min(min_edge_scale)
    return magnitude / scale.view(-1, 1, 1, 1)


def _crop_stride(image_size: torch.Size | tuple[int, int], heatmap_size: tuple[int, int]) -> int:
    image_height, image_width = int(image_size[0]), int(image_size[1])
    height, width = int(heatmap_size[0]), int(heatmap_size[1])
    if height < 1 or width < 1:
        raise ValueError(f"heatmap_size must be positive, got {heatmap_size!r}")
    if image_height % height != 0 or image_width % width != 0 or image_height // height != image_width // width:
        raise ValueError(
            f"the image size (H, W) = ({image_height}, {image_width}) must be the heatmap size "
            f"{(height, width)} times one integer stride"
        )
    return image_height // height


def _parse_heatmap_size(heatmap_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(heatmap_size, int):
        return heatmap_size, heatmap_size
    if len(heatmap_size) != 2:
        raise ValueError(f"heatmap_size must be an int or a pair (H, W), got {heatmap_size!r}")
    return int(heatmap_size[0]), int(heatmap_size[1])


def _gather_windows(edges: torch.Tensor, centres: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut (2R + 1) x (2R + 1) windows of a (B, 1, H, W) map around (B, K, 2) integer (x, y) centres.

    Pixels outside the map read 0. A centre farther than R outside the map gets
    an all-zero window. Returns the windows (B, K, 2R + 1, 2R + 1) and the
    (B, K, 2) centres actually used.
    """
    batch, _, height, width = edges.shape
    num_landmarks = centres.shape[1]

    # Zero padding of 2R lets a centre within R outside the map read a full window.
    padded = F.pad(edges[:, 0], (2 * radius, 2 * radius, 2 * radius, 2 * radius))
    cx = centres[..., 0].clamp(-radius, width - 1 + radius)
    cy = centres[..., 1].clamp(-radius, height - 1 + radius)
    too_far = (cx != centres[..., 0]) | (cy != centres[..., 1])

    offsets = torch.arange(-radius, radius + 1, device=edges.device)
    rows = (cy + 2 * radius)[..., None] + offsets
    cols = (cx + 2 * radius)[..., None] + offsets
    batch_index = torch.arange(batch, device=edges.device).view(batch, 1, 1, 1).expand(batch, num_landmarks, 1, 1)
    windows = padded[batch_index, rows[..., :, None], cols[..., None, :]]

    windows = torch.where(too_far[..., None, None], torch.zeros_like(windows), windows)
    return windows, torch.stack([cx, cy], dim=-1)


def label_covariances(
    images: torch.Tensor,
    points: torch.Tensor,
    heatmap_size: int | tuple[int, int],
    params: SmoothingParams | None = None,
    **overrides: Any,
) -> torch.Tensor:
    """Compute the image-aware label covariance Sigma_k of every landmark.

    With E the edge map (:func:`edge_map` at heatmap resolution), G(p) =
    exp(-|p - y|^2 / (2 sigma^2)) and w = ``edge_weight``, the combined weight is
    c(p) = (1 - w) G(p) + w E(p) and

        Sigma = sum_p c(p) (p - y)(p - y)^T / sum_p c(p).

    The Gaussian part enters through its exact continuous moments (mass
    2 pi sigma^2, second moment 2 pi sigma^4 I), so a flat image gives exactly
    sigma^2 I. The edge part sums over the (2R + 1)^2 pixels of the window around
    the pixel nearest to y, each weighted by exp(-|p - y|^2 / (2 edge_sigma^2)).
    With ``preserve_area`` Sigma is scaled to determinant sigma^4, and its
    eigenvalues are then clamped to [min_std^2, max_std^2]. Because the moments are taken around y, an edge that
    passes inside the window but not through y widens Sigma across that edge too.

    Args:
        images: (B, 3, S, S) network input crops (after augmentation), floats in [0, 1].
        points: (B, K, 2) landmarks (x, y) in heatmap pixels.
        heatmap_size: (H, W) with S = stride * H = stride * W, or an int for a square grid.
        params: constants, see :class:`SmoothingParams`; keyword arguments override fields.

    Returns:
        (B, K, 2, 2) symmetric positive-definite covariances in squared heatmap
        pixels, in the dtype and device of ``points``.
    """
    settings = _resolve_params(params, overrides)
    _check_images(images)
    if not isinstance(points, torch.Tensor) or points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must be a (B, K, 2) tensor of (x, y), got {getattr(points, 'shape', points)!r}")
    if not points.is_floating_point():
        raise TypeError(f"points must be floating point, got {points.dtype}")
    if points.shape[0] != images.shape[0]:
        raise ValueError(
            f"images and points must have the same batch size, got {images.shape[0]} and {points.shape[0]}"
        )
    height, width = _parse_heatmap_size(heatmap_size)
    dtype = points.dtype
    radius = settings.window

    # Edge map at heatmap resolution, then one window per landmark.
    edges = edge_map(images.to(dtype), (height, width), settings.smooth_sigma, settings.min_edge_scale)
    nearest = torch.round(points).long()
    windows, centres = _gather_windows(edges, nearest, radius)

    # Offsets p - y of the window pixels from the exact (sub-pixel) point.
    steps = torch.arange(-radius, radius + 1, dtype=dtype, device=points.device)
    window_x = centres[..., 0:1].to(dtype) + steps - points[..., 0:1]
    window_y = centres[..., 1:2].to(dtype) + steps - points[..., 1:2]
    dx = window_x[..., None, :]
    dy = window_y[..., :, None]

    # Soft restriction of the edges to the neighbourhood of the point.
    if settings.edge_sigma > 0:
        windows = windows * torch.exp(-(dx * dx + dy * dy) / (2.0 * settings.edge_sigma**2))

    # Mass and second moments of the edge component over the window.
    edge_mass = settings.edge_weight * windows.sum(dim=(-2, -1))
    edge_xx = settings.edge_weight * (windows * dx * dx).sum(dim=(-2, -1))
    edge_yy = settings.edge_weight * (windows * dy * dy).sum(dim=(-2, -1))
    edge_xy = settings.edge_weight * (windows * dx * dy).sum(dim=(-2, -1))

    # Gaussian component, exact continuous moments of a peak-1 Gaussian.
    variance = settings.sigma**2
    gauss_mass = (1.0 - settings.edge_weight) * 2.0 * math.pi * variance
    gauss_second = gauss_mass * variance

    # Covariance around y. A window whose total weight is below 1e-6 of a full
    # Gaussian's (edge_weight near 1 on a flat patch, where rounding noise of the
    # edge map would otherwise decide the shape) falls back to sigma^2 I.
    total = gauss_mass + edge_mass
    flat = total < 1e-6 * 2.0 * math.pi * variance
    total = total.clamp_min(torch.finfo(dtype).tiny)
    cov_xx = (gauss_second + edge_xx) / total
    cov_yy = (gauss_second + edge_yy) / total
    cov_xy = edge_xy / total
    cov_xx = torch.where(flat, torch.full_like(cov_xx, variance), cov_xx)
    cov_yy = torch.where(flat, torch.full_like(cov_yy, variance), cov_yy)
    covariance = torch.stack([torch.stack([cov_xx, cov_xy], -1), torch.stack([cov_xy, cov_yy], -1)], -2)

    # Optionally give the label the isotropic label's area, then clamp the
    # spread along each principal axis to [min_std, max_std].
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    if settings.preserve_area:
        area = (eigenvalues[..., 0] * eigenvalues[..., 1]).clamp_min(torch.finfo(dtype).tiny).sqrt()
        eigenvalues = eigenvalues * (variance / area)[..., None]
    eigenvalues = eigenvalues.clamp(settings.min_std**2, settings.max_std**2)
    return (eigenvectors * eigenvalues[..., None, :]) @ eigenvectors.transpose(-1, -2)


def covariance_distributions(
    points: torch.Tensor,
    covariances: torch.Tensor,
    heatmap_size: int | tuple[int, int],
) -> torch.Tensor:
    """Discretise Gaussians N(y_k, Sigma_k) on the heatmap grid, normalised to sum to 1 per landmark.

    Args:
        points: (B, K, 2) means (x, y) in heatmap pixels.
        covariances: (B, K, 2, 2) symmetric positive-definite covariances.
        heatmap_size: (H, W) or an int for a square grid.

    Returns:
        (B, K, H, W) weights, computed as a softmax of -0.5 d^T Sigma^-1 d over the grid.
    """
    if covariances.shape != (*points.shape[:2], 2, 2):
        raise ValueError(
            f"covariances must have shape {(*points.shape[:2], 2, 2)} to match points, got {tuple(covariances.shape)}"
        )
    height, width = _parse_heatmap_size(heatmap_size)
    grid = pixel_grid((height, width), dtype=points.dtype, device=points.device)
    offsets = grid[None, None] - points[:, :, None, :]

    # Mahalanobis distance through the closed-form 2 x 2 inverse.
    a = covariances[..., 0, 0, None]
    b = covariances[..., 0, 1, None]
    c = covariances[..., 1, 1, None]
    det = a * c - b * b
    dx = offsets[..., 0]
    dy = offsets[..., 1]
    mahalanobis = (c * dx * dx - 2.0 * b * dx * dy + a * dy * dy) / det

    weights = torch.softmax(-0.5 * mahalanobis, dim=-1)
    return weights.reshape(*points.shape[:2], height, width)


def image_aware_labels(
    images: torch.Tensor,
    points: torch.Tensor,
    heatmap_size: int | tuple[int, int],
    params: SmoothingParams | None = None,
    **overrides: Any,
) -> torch.Tensor:
    """Build image-aware label distributions q_k = N(y_k, Sigma_k) on the heatmap grid.

    Sigma_k comes from :func:`label_covariances` with the same arguments.

    Returns:
        (B, K, H, W) weights that sum to 1 per landmark, in the dtype and device of ``points``.
    """
    covariances = label_covariances(images, points, heatmap_size, params, **overrides)
    return covariance_distributions(points, covariances, heatmap_size)
