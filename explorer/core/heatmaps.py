"""Heatmap rendering, decoders and the heatmaps that soft-argmax cannot tell apart.

Conventions used throughout:

- Points are (x, y) in heatmap pixels. Pixel row ``r``, column ``c`` has its
  centre at (x, y) = (c, r), so a (H, W) grid spans x in [-0.5, W - 0.5].
- Heatmaps are (B, K, H, W) raw logits, as a network outputs them, unless a
  function's documentation states another input.

The failure-case builders (:func:`single_peak`, :func:`two_peaks`,
:func:`plateau`, :func:`ring` and :func:`same_soft_argmax_examples`) illustrate
the argument of Yang & Yeh, "Heatmap Regression without Soft-Argmax for Facial
Landmark Detection", ICCV 2025: heatmaps of very different shapes share one
soft-argmax, so a loss on the soft-argmax cannot tell a confident heatmap from
a confused one.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "decode_argmax",
    "decode_refined",
    "soft_argmax",
    "gaussian_heatmaps",
    "gaussian_distributions",
    "bilinear_distributions",
    "pixel_grid",
    "single_peak",
    "two_peaks",
    "plateau",
    "ring",
    "same_soft_argmax_examples",
]

# Logit given to pixels outside the symmetric support of a failure-case heatmap.
# Its softmax weight is e^-50 (about 2e-22) of the peak's, so it moves the
# soft-argmax of a 256 x 256 grid by less than 1e-15 px.
DEFAULT_MIN_LOGIT = -50.0


def _check_heatmaps(heatmaps: torch.Tensor, name: str = "heatmaps") -> None:
    if not isinstance(heatmaps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(heatmaps).__name__}")
    if heatmaps.dim() != 4:
        raise ValueError(
            f"{name} must have shape (B, K, H, W), got {tuple(heatmaps.shape)}; "
            "add batch or landmark dimensions with unsqueeze"
        )
    if not heatmaps.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {heatmaps.dtype}; convert with .float()")
    if heatmaps.shape[-2] < 1 or heatmaps.shape[-1] < 1:
        raise ValueError(f"{name} must have a non-empty grid, got H, W = {tuple(heatmaps.shape[-2:])}")


def _check_points(points: torch.Tensor) -> None:
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"points must be a torch.Tensor, got {type(points).__name__}")
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (B, K, 2) holding (x, y), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"points must be a floating-point tensor, got {points.dtype}; convert with .float()")


def _parse_size(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        height, width = size, size
    elif isinstance(size, (tuple, list, torch.Size)) and len(size) == 2:
        height, width = int(size[0]), int(size[1])
    else:
        raise ValueError(f"size must be an int or a pair (H, W), got {size!r}")
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got (H, W) = ({height}, {width})")
    return height, width


def _check_sigma(sigma: float) -> float:
    sigma = float(sigma)
    if not sigma > 0.0:
        raise ValueError(f"sigma must be > 0 heatmap pixels, got {sigma}")
    return sigma


def pixel_grid(
    size: int | tuple[int, int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return the (x, y) centres of the pixels of a grid, shape (H * W, 2), in row-major order."""
    height, width = _parse_size(size)
    ys = torch.arange(height, dtype=dtype, device=device)
    xs = torch.arange(width, dtype=dtype, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)


def decode_argmax(heatmaps: torch.Tensor) -> torch.Tensor:
    """Decode each heatmap to the (x, y) pixel centre of its maximum.

    Args:
        heatmaps: (B, K, H, W) logits or probabilities.

    Returns:
        (B, K, 2) integer-valued positions in the input's dtype and device. Ties
        go to the first maximum in row-major order, as ``torch.argmax`` returns it.
    """
    _check_heatmaps(heatmaps)
    width = heatmaps.shape[-1]

    # One argmax over the flattened grid, then row = index // W and column = index % W.
    flat_index = heatmaps.flatten(start_dim=2).argmax(dim=-1)
    rows = torch.div(flat_index, width, rounding_mode="floor")
    cols = flat_index - rows * width

    return torch.stack([cols, rows], dim=-1).to(heatmaps.dtype)


def _quadratic_vertex(
    log_values: torch.Tensor,
    peak_rows: torch.Tensor,
    peak_cols: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a 2-D quadratic to the 3 x 3 stencil around each peak and return its vertex (x, y).

    ``log_values`` is (N, H, W) and the peaks are (N,) long tensors. The stencil
    centre is the peak moved inward by one pixel where the peak sits on a border,
    so every read stays inside the grid. An axis with fewer than 3 pixels, or on
    which the quadratic is not concave, keeps the peak's coordinate.
    """
    count, height, width = log_values.shape
    dtype = log_values.dtype
    batch_index = torch.arange(count, device=log_values.device)

    # Stencil centre, clamped so that centre +- 1 stays inside the grid.
    centre_rows = peak_rows.clamp(1, max(height - 2, 1)) if height >= 3 else peak_rows
    centre_cols = peak_cols.clamp(1, max(width - 2, 1)) if width >= 3 else peak_cols

    def read(d_row: int, d_col: int) -> torch.Tensor:
        return log_values[batch_index, centre_rows + d_row, centre_cols + d_col]

    x = centre_cols.to(dtype)
    y = centre_rows.to(dtype)
    can_fit_x = width >= 3
    can_fit_y = height >= 3

    # Central differences of the log-values give the gradient and Hessian of the
    # quadratic through the stencil. They are exact when the log-values are
    # quadratic, as for a Gaussian of any covariance.
    centre = read(0, 0)
    zero = torch.zeros_like(centre)
    if can_fit_x:
        grad_x = 0.5 * (read(0, 1) - read(0, -1))
        hess_xx = read(0, 1) - 2.0 * centre + read(0, -1)
    else:
        grad_x, hess_xx = zero, zero
    if can_fit_y:
        grad_y = 0.5 * (read(1, 0) - read(-1, 0))
        hess_yy = read(1, 0) - 2.0 * centre + read(-1, 0)
    else:
        grad_y, hess_yy = zero, zero
    if can_fit_x and can_fit_y:
        hess_xy = 0.25 * (read(1, 1) - read(1, -1) - read(-1, 1) + read(-1, -1))
    else:
        hess_xy = zero

    # Newton step to the vertex, -Hess^-1 grad, where the quadratic is concave in
    # 2-D (negative definite Hessian). Elsewhere fall back to one 1-D parabola per
    # concave axis and keep the peak coordinate on axes that are flat or convex.
    det = hess_xx * hess_yy - hess_xy * hess_xy
    concave_2d = (hess_xx < 0) & (hess_yy < 0) & (det > 0)
    safe_det = torch.where(concave_2d, det, torch.ones_like(det))
    newton_dx = -(hess_yy * grad_x - hess_xy * grad_y) / safe_det
    newton_dy = -(hess_xx * grad_y - hess_xy * grad_x) / safe_det

    concave_x = hess_xx < 0
    concave_y = hess_yy < 0
    safe_hess_xx = torch.where(concave_x, hess_xx, -torch.ones_like(hess_xx))
    safe_hess_yy = torch.where(concave_y, hess_yy, -torch.ones_like(hess_yy))
    axis_x = torch.where(concave_x, x - grad_x / safe_hess_xx, peak_cols.to(dtype))
    axis_y = torch.where(concave_y, y - grad_y / safe_hess_yy, peak_rows.to(dtype))

    return torch.where(concave_2d, x + newton_dx, axis_x), torch.where(concave_2d, y + newton_dy, axis_y)


def decode_refined(
    heatmaps: torch.Tensor,
    *,
    input_kind: Literal["logits", "probabilities"] = "logits",
) -> torch.Tensor:
    """Decode each heatmap to its argmax refined to sub-pixel precision.

    Method: fit a 2-D quadratic to the log-density in the 3 x 3 window around the
    argmax pixel and take its vertex (a second-order Taylor step, as in DARK:
    Zhang et al., "Distribution-Aware Coordinate Representation for Human Pose
    Estimation", CVPR 2020). The log-density of a Gaussian is quadratic, so the
    fit recovers the centre of a sampled Gaussian exactly, up to rounding.

    - ``input_kind="logits"``: the log-density is ``log_softmax(H)``, which
      differs from ``H`` by a constant per heatmap, so the fit uses ``H``.
    - ``input_kind="probabilities"``: the log-density is ``log(P)``, with ``P``
      clamped below at the dtype's smallest normal number so zeros stay finite.

    At a border or corner the window moves inward by one pixel, so the fit uses
    pixels inside the grid only. If the quadratic is not concave, each concave
    axis gets a 1-D parabola fit and any other axis keeps the argmax coordinate.
    The result is clamped to within 1 px of the argmax and to the grid extent
    [-0.5, W - 0.5] x [-0.5, H - 0.5], because a local fit carries no information farther away.

    Args:
        heatmaps: (B, K, H, W) logits or probabilities, as set by ``input_kind``.
        input_kind: ``"logits"`` (default) or ``"probabilities"``.

    Returns:
        (B, K, 2) positions (x, y) in heatmap pixels, in the input's dtype and device.
    """
    _check_heatmaps(heatmaps)
    if input_kind not in ("logits", "probabilities"):
        raise ValueError(f"input_kind must be 'logits' or 'probabilities', got {input_kind!r}")
    batch, num_landmarks, height, width = heatmaps.shape

    # Log-density up to a per-heatmap constant, which the quadratic fit ignores.
    if input_kind == "logits":
        log_values = heatmaps
    else:
        log_values = heatmaps.clamp_min(torch.finfo(heatmaps.dtype).tiny).log()
    log_values = log_values.reshape(batch * num_landmarks, height, width)

    # Integer peak, then the vertex of the local quadratic around it.
    peaks = decode_argmax(heatmaps).reshape(batch * num_landmarks, 2)
    peak_cols = peaks[:, 0].long()
    peak_rows = peaks[:, 1].long()
    x, y = _quadratic_vertex(log_values, peak_rows, peak_cols)

    # Keep the estimate near its peak and inside the grid extent.
    x = torch.minimum(torch.maximum(x, peaks[:, 0] - 1.0), peaks[:, 0] + 1.0).clamp(-0.5, width - 0.5)
    y = torch.minimum(torch.maximum(y, peaks[:, 1] - 1.0), peaks[:, 1] + 1.0).clamp(-0.5, height - 0.5)

    return torch.stack([x, y], dim=-1).reshape(batch, num_landmarks, 2)


def soft_argmax(heatmaps: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Decode each heatmap to the expectation of its pixel centres under softmax(H / temperature).

    Args:
        heatmaps: (B, K, H, W) logits.
        temperature: softmax temperature tau > 0; smaller values approach argmax.

    Returns:
        (B, K, 2) positions (x, y) in heatmap pixels, differentiable in ``heatmaps``.
    """
    _check_heatmaps(heatmaps)
    temperature = float(temperature)
    if not temperature > 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    height, width = heatmaps.shape[-2:]

    # Softmax over the flattened grid, then probability-weighted pixel centres.
    probabilities = torch.softmax(heatmaps.flatten(start_dim=2) / temperature, dim=-1)
    grid = pixel_grid((height, width), dtype=heatmaps.dtype, device=heatmaps.device)
    return probabilities @ grid


def _squared_distances(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Return squared distances (B, K, H * W) from each point to every pixel centre."""
    # dx^2 + dy^2 from per-axis tables, cheaper than (B, K, H * W, 2) offsets.
    height, width = size
    columns = torch.arange(width, dtype=points.dtype, device=points.device)
    rows = torch.arange(height, dtype=points.dtype, device=points.device)
    along_x = (columns - points[..., 0:1]).square()
    along_y = (rows - points[..., 1:2]).square()
    return (along_y[..., :, None] + along_x[..., None, :]).flatten(start_dim=2)


def gaussian_heatmaps(points: torch.Tensor, size: int | tuple[int, int], sigma: float) -> torch.Tensor:
    """Render isotropic Gaussians exp(-d^2 / (2 sigma^2)) with peak value 1 at sub-pixel points.

    Args:
        points: (B, K, 2) centres (x, y) in heatmap pixels.
        size: grid size (H, W), or an int for a square grid.
        sigma: standard deviation in heatmap pixels, > 0.

    Returns:
        (B, K, H, W) values in (0, 1], in the dtype and device of ``points``.
    """
    _check_points(points)
    height, width = _parse_size(size)
    sigma = _check_sigma(sigma)

    squared = _squared_distances(points, (height, width))
    return torch.exp(-squared / (2.0 * sigma * sigma)).reshape(*points.shape[:2], height, width)


def gaussian_distributions(points: torch.Tensor, size: int | tuple[int, int], sigma: float) -> torch.Tensor:
    """Discretise isotropic Gaussians at sub-pixel points into distributions on the grid.

    The weights are exp(-d^2 / (2 sigma^2)) normalised to sum to 1 over the grid,
    so a Gaussian cut by the border keeps all of its mass on the grid. The
    normalisation runs in log space (a softmax), which stays finite for points
    far outside the grid.

    Returns:
        (B, K, H, W) non-negative weights that sum to 1 per landmark.
    """
    _check_points(points)
    height, width = _parse_size(size)
    sigma = _check_sigma(sigma)

    # The Gaussian factorises over the axes, and so does its normalisation:
    # the outer product of one softmax per axis sums to 1 over the grid.
    columns = torch.arange(width, dtype=points.dtype, device=points.device)
    rows = torch.arange(height, dtype=points.dtype, device=points.device)
    along_x = torch.softmax(-(columns - points[..., 0:1]).square() / (2.0 * sigma * sigma), dim=-1)
    along_y = torch.softmax(-(rows - points[..., 1:2]).square() / (2.0 * sigma * sigma), dim=-1)
    return along_y[..., :, None] * along_x[..., None, :]


def bilinear_distributions(points: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Split each point's unit mass over its 4 neighbouring pixels with bilinear weights.

    The mean of the result equals the point exactly. Points outside the grid are
    first clamped to the pixel centres' extent [0, W - 1] x [0, H - 1].

    Returns:
        (B, K, H, W) non-negative weights that sum to 1 per landmark.
    """
    _check_points(points)
    height, width = _parse_size(size)

    # Weight of each pixel: product of the 1-D tent functions max(0, 1 - |d|) per axis.
    x = points[..., 0].clamp(0.0, width - 1.0)
    y = points[..., 1].clamp(0.0, height - 1.0)
    xs = torch.arange(width, dtype=points.dtype, device=points.device)
    ys = torch.arange(height, dtype=points.dtype, device=points.device)
    weight_x = (1.0 - (xs[None, None, :] - x[..., None]).abs()).clamp_min(0.0)
    weight_y = (1.0 - (ys[None, None, :] - y[..., None]).abs()).clamp_min(0.0)

    return weight_y[..., :, None] * weight_x[..., None, :]


# ---------------------------------------------------------------------------
# Failure cases of soft-argmax
# ---------------------------------------------------------------------------


def _parse_center(center: tuple[float, float] | None, height: int, width: int) -> tuple[int, int]:
    """Return the centre as integer (x, y), defaulting to the pixel at or just before the grid middle."""
    if center is None:
        return (width - 1) // 2, (height - 1) // 2
    if len(center) != 2:
        raise ValueError(f"center must be a pair (x, y), got {center!r}")
    cx, cy = float(center[0]), float(center[1])
    if not (cx.is_integer() and cy.is_integer()):
        raise ValueError(
            f"center must be a pixel centre (integer x and y) so the heatmap is symmetric on the grid, got {center!r}"
        )
    if not (0 <= cx <= width - 1 and 0 <= cy <= height - 1):
        raise ValueError(f"center {center!r} is outside the grid of size (H, W) = ({height}, {width})")
    return int(cx), int(cy)


def _symmetric_logits(
    log_shape: torch.Tensor,
    center: tuple[int, int],
    min_logit: float,
) -> torch.Tensor:
    """Clip log-shape values below at ``min_logit`` and set ``min_logit`` outside the box symmetric about ``center``.

    ``log_shape`` is (H, W). Inside the box, each pixel has its point reflection
    through the centre on the grid, so a shape symmetric under that reflection has
    its softmax expectation exactly at the centre. Returns (1, 1, H, W).
    """
    height, width = log_shape.shape
    cx, cy = center

    # Half-extents of the largest box centred on the centre that fits in the grid.
    half_x = min(cx, width - 1 - cx)
    half_y = min(cy, height - 1 - cy)
    cols = torch.arange(width, device=log_shape.device)
    rows = torch.arange(height, device=log_shape.device)
    inside = ((rows[:, None] - cy).abs() <= half_y) & ((cols[None, :] - cx).abs() <= half_x)

    logits = log_shape.clamp_min(min_logit)
    logits = torch.where(inside, logits, torch.full_like(logits, min_logit))
    return logits[None, None]


def _centre_offsets(
    size: int | tuple[int, int],
    center: tuple[float, float] | None,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Return per-pixel offsets (dx, dy), each (H, W), from the centre, and the centre itself."""
    height, width = _parse_size(size)
    cx, cy = _parse_center(center, height, width)
    ys = torch.arange(height, dtype=dtype, device=device) - cy
    xs = torch.arange(width, dtype=dtype, device=device) - cx
    dy, dx = torch.meshgrid(ys, xs, indexing="ij")
    return dx, dy, (cx, cy)


def single_peak(
    size: int | tuple[int, int],
    center: tuple[float, float] | None = None,
    sigma: float = 1.0,
    *,
    min_logit: float = DEFAULT_MIN_LOGIT,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Build logits -d^2 / (2 sigma^2) of one Gaussian peak at ``center``.

    ``center`` is an integer pixel (x, y), by default the pixel at the grid middle
    (rounded down). Logits are clipped below at ``min_logit``, and pixels without
    a point reflection through the centre inside the grid get ``min_logit``, so
    soft_argmax at temperature 1 returns the centre. Returns (1, 1, H, W) logits.
    """
    sigma = _check_sigma(sigma)
    dx, dy, centre = _centre_offsets(size, center, dtype, device)
    log_shape = -(dx * dx + dy * dy) / (2.0 * sigma * sigma)
    return _symmetric_logits(log_shape, centre, min_logit)


def two_peaks(
    size: int | tuple[int, int],
    center: tuple[float, float] | None = None,
    offset: float | tuple[float, float] = 4.0,
    sigma: float = 1.0,
    weight: float = 0.5,
    *,
    min_logit: float = DEFAULT_MIN_LOGIT,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Build logits of a mixture of two Gaussians at ``center - offset`` and ``center + offset``.

    The logits are log(weight * g1 + (1 - weight) * g2) with g = exp(-d^2 / (2 sigma^2)).
    ``offset`` is (dx, dy) in pixels, or a float for a horizontal offset, so the
    mixture also fits a single heatmap row. With ``weight=0.5`` the peaks have
    equal height, soft_argmax at temperature 1 returns the centre and argmax
    returns one of the peaks (the first in row-major order). Another weight moves
    the soft-argmax towards the heavier peak. Returns (1, 1, H, W) logits.
    """
    sigma = _check_sigma(sigma)
    weight = float(weight)
    if not 0.0 < weight < 1.0:
        raise ValueError(f"weight must be in (0, 1), got {weight}")
    if isinstance(offset, (int, float)):
        offset_x, offset_y = float(offset), 0.0
    else:
        offset_x, offset_y = float(offset[0]), float(offset[1])
    dx, dy, centre = _centre_offsets(size, center, dtype, device)

    # Mixture in log space: logaddexp keeps far-away pixels finite.
    first = -((dx + offset_x) ** 2 + (dy + offset_y) ** 2) / (2.0 * sigma * sigma)
    second = -((dx - offset_x) ** 2 + (dy - offset_y) ** 2) / (2.0 * sigma * sigma)
    weight_first = torch.tensor(weight, dtype=dtype, device=dx.device)
    log_shape = torch.logaddexp(first + weight_first.log(), second + torch.log1p(-weight_first))
    return _symmetric_logits(log_shape, centre, min_logit)


def plateau(
    size: int | tuple[int, int],
    center: tuple[float, float] | None = None,
    radius: float = 3.0,
    sigma: float = 1.0,
    *,
    min_logit: float = DEFAULT_MIN_LOGIT,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Build logits of a flat disc of ``radius`` pixels with a Gaussian fall-off of ``sigma`` outside it.

    Logits are 0 where d <= radius and -(d - radius)^2 / (2 sigma^2) beyond. Every
    pixel of the disc ties for the maximum, so argmax returns the disc's first
    pixel in row-major order, while soft_argmax at temperature 1 returns the
    centre. Returns (1, 1, H, W) logits.
    """
    sigma = _check_sigma(sigma)
    if float(radius) < 0:
        raise ValueError(f"radius must be >= 0 pixels, got {radius}")
    dx, dy, centre = _centre_offsets(size, center, dtype, device)
    beyond = (torch.sqrt(dx * dx + dy * dy) - float(radius)).clamp_min(0.0)
    log_shape = -(beyond * beyond) / (2.0 * sigma * sigma)
    return _symmetric_logits(log_shape, centre, min_logit)


def ring(
    size: int | tuple[int, int],
    center: tuple[float, float] | None = None,
    radius: float = 5.0,
    sigma: float = 1.0,
    *,
    min_logit: float = DEFAULT_MIN_LOGIT,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Build logits -(d - radius)^2 / (2 sigma^2) of a ring around ``center``.

    The centre itself has a low score, yet soft_argmax at temperature 1 returns
    it. On a single row the ring becomes two peaks at ``center +- radius``.
    Returns (1, 1, H, W) logits.
    """
    sigma = _check_sigma(sigma)
    if float(radius) < 0:
        raise ValueError(f"radius must be >= 0 pixels, got {radius}")
    dx, dy, centre = _centre_offsets(size, center, dtype, device)
    gap = torch.sqrt(dx * dx + dy * dy) - float(radius)
    log_shape = -(gap * gap) / (2.0 * sigma * sigma)
    return _symmetric_logits(log_shape, centre, min_logit)


def same_soft_argmax_examples(
    size: int | tuple[int, int],
    center: tuple[float, float] | None = None,
    sigma: float = 1.0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """Build heatmaps of very different shapes that share one soft-argmax but not one argmax.

    Each entry is (1, 1, H, W) logits whose soft_argmax at temperature 1 is
    ``center`` to within float rounding:

    - ``"single_peak"``: one Gaussian of ``sigma`` at the centre (argmax = centre);
    - ``"two_peaks"``: two equal Gaussians at centre -+ (2 m / 4, 0) (argmax on the left peak);
    - ``"plateau"``: a flat disc of radius m / 4 (argmax on the disc's first row-major pixel);
    - ``"ring"``: a ring of radius 3 m / 4 (argmax on the ring).

    Here m is the distance in pixels from the centre to the nearer left or right
    border, and the offsets and radii are rounded to whole pixels, so the shapes
    fit on the row through the centre. H may be 1 (a single heatmap row). With
    m >= 4 the four argmax positions are distinct.

    Raises:
        ValueError: if m < 4, which leaves no room for distinct shapes.
    """
    height, width = _parse_size(size)
    cx, cy = _parse_center(center, height, width)
    half_width = min(cx, width - 1 - cx)
    if half_width < 4:
        raise ValueError(
            f"the centre x = {cx} must be at least 4 px from the left and right borders of a grid "
            f"of width {width}, got {half_width} px; use a wider grid or a more central centre"
        )

    # Whole-pixel offsets and radii keep the tied maxima on pixel centres.
    offset = float(round(half_width / 2))
    plateau_radius = float(max(1, round(half_width / 4)))
    ring_radius = float(round(3 * half_width / 4))
    options = {"min_logit": DEFAULT_MIN_LOGIT, "dtype": dtype, "device": device}

    return {
        "single_peak": single_peak((height, width), (cx, cy), sigma, **options),
        "two_peaks": two_peaks((height, width), (cx, cy), offset, sigma, 0.5, **options),
        "plateau": plateau((height, width), (cx, cy), plateau_radius, sigma, **options),
        "ring": ring((height, width), (cx, cy), ring_radius, sigma, **options),
    }
