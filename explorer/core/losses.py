"""Training losses for heatmap-regression landmark detectors.

Every loss is an ``nn.Module`` called as ``loss(logits, points, label_dist=None)``:

- ``logits``: (B, K, H, W) raw network outputs;
- ``points``: (B, K, 2) ground-truth (x, y) in heatmap pixels, where pixel row r,
  column c has its centre at (c, r);
- ``label_dist``: optional (B, K, H, W) label distribution q that sums to 1 per
  landmark. Only :class:`StructuredLoss` uses it.

Each returns the mean over batch and landmarks (``reduction="mean"``) or the
(B, K) per-landmark values (``reduction="none"``).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from torch import nn

from explorer.core.heatmaps import bilinear_distributions, gaussian_distributions, pixel_grid, soft_argmax

logger = logging.getLogger(__name__)

__all__ = ["StructuredLoss", "SoftArgmaxLoss", "StarLoss", "build_loss", "margin_values"]

Reduction = Literal["mean", "none"]


def _check_inputs(logits: torch.Tensor, points: torch.Tensor, label_dist: torch.Tensor | None = None) -> None:
    if not isinstance(logits, torch.Tensor) or not isinstance(points, torch.Tensor):
        raise TypeError(
            f"logits and points must be torch.Tensor, got {type(logits).__name__} and {type(points).__name__}"
        )
    if logits.dim() != 4:
        raise ValueError(f"logits must have shape (B, K, H, W), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if points.shape != (*logits.shape[:2], 2):
        raise ValueError(
            f"points must have shape (B, K, 2) = {(*logits.shape[:2], 2)} to match logits "
            f"{tuple(logits.shape)}, got {tuple(points.shape)}"
        )
    if label_dist is not None and label_dist.shape != logits.shape:
        raise ValueError(
            f"label_dist must have the logits' shape {tuple(logits.shape)}, got {tuple(label_dist.shape)}"
        )


def _reduce(per_landmark: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "mean":
        return per_landmark.mean()
    return per_landmark


def _check_reduction(reduction: str) -> Reduction:
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return reduction  # type: ignore[return-value]


def _smooth_l1(values: torch.Tensor, beta: float) -> torch.Tensor:
    """Elementwise Huber function: 0.5 v^2 / beta where |v| < beta, else |v| - 0.5 beta."""
    magnitude = values.abs()
    return torch.where(magnitude < beta, 0.5 * values * values / beta, magnitude - 0.5 * beta)


def margin_values(
    points: torch.Tensor,
    size: tuple[int, int],
    margin: Literal["smooth_l1", "l1", "l2"],
) -> torch.Tensor:
    """Compute the margin Delta(p, y) between every pixel centre p and each point y.

    - ``"l1"``: |dx| + |dy|;
    - ``"l2"``: dx^2 + dy^2 (squared Euclidean distance);
    - ``"smooth_l1"``: Huber(dx) + Huber(dy) with beta = 1 heatmap pixel, that is
      0.5 d^2 for |d| < 1 and |d| - 0.5 beyond, per coordinate.

    Args:
        points: (B, K, 2) positions (x, y) in heatmap pixels.
        size: grid size (H, W).

    Returns:
        (B, K, H * W) non-negative margins in heatmap pixels (squared pixels for l2),
        zero where p = y.
    """
    if margin == "l1":
        per_axis = torch.abs
    elif margin == "l2":
        per_axis = torch.square
    elif margin == "smooth_l1":
        per_axis = lambda values: _smooth_l1(values, 1.0)  # noqa: E731
    else:
        raise ValueError(f"margin must be 'smooth_l1', 'l1' or 'l2', got {margin!r}")

    # Every margin is a sum of one term per axis, so it is built from (B, K, W)
    # and (B, K, H) tables instead of (B, K, H * W, 2) offsets. With the same
    # change to the default labels, the loss took 4.7x less time and half the
    # memory at the training shapes (benchmarks/loss_cost.py).
    height, width = size
    columns = torch.arange(width, dtype=points.dtype, device=points.device)
    rows = torch.arange(height, dtype=points.dtype, device=points.device)
    along_x = per_axis(columns - points[..., 0:1])
    along_y = per_axis(rows - points[..., 1:2])
    return (along_y[..., :, None] + along_x[..., None, :]).flatten(start_dim=2)


class StructuredLoss(nn.Module):
    """Smoothed, margin-rescaled structured-prediction loss on heatmap logits.

    From Yang & Yeh, "Heatmap Regression without Soft-Argmax for Facial Landmark
    Detection", ICCV 2025. Per landmark k, with positions p over the grid,

        L_k = eps * logsumexp_p((H_k[p] + alpha * Delta(p, y_k)) / eps) - sum_p q_k(p) H_k[p].

    Properties:

    - L_k >= 0, because eps * logsumexp >= max >= the q-weighted mean and Delta >= 0;
    - dL_k / dH_k = softmax((H_k + alpha * Delta) / eps) - q_k;
    - as eps -> 0 it tends to the structured hinge max_p(H_k[p] + alpha * Delta(p, y_k)) - H_k[y_k]
      when q_k is a point mass at a pixel y_k;
    - with alpha = 0 and eps = 1 it is the cross-entropy of softmax(H_k) against q_k.

    Args:
        margin: Delta, one of ``"smooth_l1"`` (default), ``"l1"`` or ``"l2"``
            (squared distance). See :func:`margin_values`.
        epsilon: temperature eps > 0 of the smoothed maximum. Default 1.0.
        alpha: weight alpha >= 0 of the margin. Default 0.1, chosen rather than
            tuned: Delta grows with the distance (up to about 60 for smooth-L1 on a
            32 x 32 grid), so alpha = 0.1 requires far positions to score up to
            about 6 below the target, which a network reaches easily, while alpha near 1
            makes the far-field term outweigh the label term early in training.
        sigma: standard deviation, in heatmap pixels, of the default label: an
            isotropic Gaussian around each point, discretised on the grid and
            normalised to sum to 1 (see ``gaussian_distributions``). 0 gives a
            bilinear point mass on the 4 pixels around the point. Default 1.0.
        num_samples: if set, the target term sum_p q(p) H[p] becomes a
            Monte-Carlo mean of H over this many positions drawn from q (with
            replacement). Default None: the exact expectation.
        reduction: ``"mean"`` (default) or ``"none"`` for (B, K) values.
    """

    def __init__(
        self,
        margin: Literal["smooth_l1", "l1", "l2"] = "smooth_l1",
        epsilon: float = 1.0,
        alpha: float = 0.1,
        sigma: float = 1.0,
        num_samples: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if margin not in ("smooth_l1", "l1", "l2"):
            raise ValueError(f"margin must be 'smooth_l1', 'l1' or 'l2', got {margin!r}")
        if not float(epsilon) > 0.0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        if not float(alpha) >= 0.0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not float(sigma) >= 0.0:
            raise ValueError(f"sigma must be >= 0 heatmap pixels (0 for a point mass), got {sigma}")
        if num_samples is not None and (not isinstance(num_samples, int) or num_samples < 1):
            raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
        self.margin = margin
        self.epsilon = float(epsilon)
        self.alpha = float(alpha)
        self.sigma = float(sigma)
        self.num_samples = num_samples
        self.reduction = _check_reduction(reduction)

    def default_labels(self, points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Return the default label distributions (B, K, H, W) for ``points``, as set by ``sigma``."""
        if self.sigma == 0.0:
            return bilinear_distributions(points, size)
        return gaussian_distributions(points, size, self.sigma)

    def forward(
        self,
        logits: torch.Tensor,
        points: torch.Tensor,
        label_dist: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _check_inputs(logits, points, label_dist)
        batch, num_landmarks, height, width = logits.shape
        points = points.to(logits.dtype)
        scores = logits.flatten(start_dim=2)

        # Loss-augmented scores. torch.logsumexp keeps logits of any magnitude finite.
        # (The epsilon = 1 branch skips two full-size elementwise passes.)
        margins = margin_values(points, (height, width), self.margin)
        augmented = torch.add(scores, margins, alpha=self.alpha)
        if self.epsilon == 1.0:
            smoothed_max = torch.logsumexp(augmented, dim=-1)
        else:
            smoothed_max = self.epsilon * torch.logsumexp(augmented / self.epsilon, dim=-1)

        # Target term: the label-weighted score, exact or sampled from the labels.
        if label_dist is None:
            label_dist = self.default_labels(points, (height, width))
        labels = label_dist.to(logits.dtype).flatten(start_dim=2)
        if self.num_samples is None:
            target = (labels * scores).sum(dim=-1)
        else:
            samples = torch.multinomial(
                labels.reshape(batch * num_landmarks, height * width),
                self.num_samples,
                replacement=True,
            ).reshape(batch, num_landmarks, self.num_samples)
            target = scores.gather(-1, samples).mean(dim=-1)

        return _reduce(smoothed_max - target, self.reduction)


class SoftArgmaxLoss(nn.Module):
    """Coordinate loss on the soft-argmax of the heatmaps, the baseline that the structured loss replaces.

    The prediction is soft_argmax(H / temperature) and the loss is the distance to
    the point, summed over x and y:

    - ``"l1"``: |dx| + |dy|;
    - ``"smooth_l1"``: Huber with ``beta`` heatmap pixels per coordinate (default 1);
    - ``"l2"``: dx^2 + dy^2.

    ``label_dist`` is accepted for a uniform call signature and ignored.
    """

    def __init__(
        self,
        distance: Literal["l1", "smooth_l1", "l2"] = "l1",
        temperature: float = 1.0,
        beta: float = 1.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if distance not in ("l1", "smooth_l1", "l2"):
            raise ValueError(f"distance must be 'l1', 'smooth_l1' or 'l2', got {distance!r}")
        if not float(temperature) > 0.0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not float(beta) > 0.0:
            raise ValueError(f"beta must be > 0 heatmap pixels, got {beta}")
        self.distance = distance
        self.temperature = float(temperature)
        self.beta = float(beta)
        self.reduction = _check_reduction(reduction)

    def forward(
        self,
        logits: torch.Tensor,
        points: torch.Tensor,
        label_dist: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _check_inputs(logits, points, label_dist)
        errors = soft_argmax(logits, self.temperature) - points.to(logits.dtype)

        if self.distance == "l1":
            per_landmark = errors.abs().sum(dim=-1)
        elif self.distance == "smooth_l1":
            per_landmark = _smooth_l1(errors, self.beta).sum(dim=-1)
        else:
            per_landmark = (errors * errors).sum(dim=-1)
        return _reduce(per_landmark, self.reduction)


def _symmetric_eigen_2x2(covariance: torch.Tensor, guard: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decompose symmetric 2 x 2 matrices in closed form.

    Args:
        covariance: (..., 2, 2) symmetric matrices [[a, b], [b, c]].
        guard: small number added under the square roots, so the gradient stays
            finite where the eigenvalues coincide (there the eigenvectors are arbitrary).

    Returns:
        eigenvalues (..., 2), descending, and eigenvectors (..., 2, 2) with the
        i-th unit eigenvector in row i.
    """
    a = covariance[..., 0, 0]
    b = covariance[..., 0, 1]
    c = covariance[..., 1, 1]

    # lambda = m +- r with m the mean diagonal and r the half spread.
    mean = 0.5 * (a + c)
    half_difference = 0.5 * (a - c)
    spread = torch.sqrt(half_difference * half_difference + b * b + guard)
    eigenvalues = torch.stack([mean + spread, mean - spread], dim=-1)

    # Major eigenvector from whichever formula has the larger, never-zero component:
    # (r + (a - c)/2, b) when a >= c, else (b, r - (a - c)/2). Both stay finite, so
    # torch.where back-propagates no NaN.
    from_a = torch.stack([spread + half_difference, b], dim=-1)
    from_c = torch.stack([b, spread - half_difference], dim=-1)
    major = torch.where((half_difference >= 0)[..., None], from_a, from_c)
    major = major / torch.sqrt((major * major).sum(dim=-1, keepdim=True))
    minor = torch.stack([-major[..., 1], major[..., 0]], dim=-1)

    return eigenvalues, torch.stack([major, minor], dim=-2)


class StarLoss(nn.Module):
    """STAR loss (Zhou et al., "STAR Loss: Reducing Semantic Ambiguity in Facial Landmark Detection", CVPR 2023).

    Steps, per landmark, following the authors' released STARLoss:

    1. normalise the heatmap to a distribution P = softmax(H);
    2. take its mean mu and unbiased weighted covariance
       C = sum_p P(p) (p - mu)(p - mu)^T / (1 - sum_p P(p)^2), in coordinates
       normalised to [-1, 1] across the grid (x_n = 2 x / (W - 1) - 1);
    3. eigen-decompose C = sum_i lambda_i v_i v_i^T in closed form;
    4. project the error y - mu onto each v_i, divide by sqrt(lambda_i + eps)
       and apply ``distance`` (smooth-L1 with ``beta``, or L1), summed over the
       two axes;
    5. add ``weight * (|lambda_1| + |lambda_2|)``.

    The released code uses eps = 1e-5 and weight 1 and normalises a
    non-negative heatmap by its sum. Here the softmax plays that role because
    the network outputs logits. An error of zero gives the minimum of the error
    term (zero).

    Args:
        distance: ``"smooth_l1"`` (default) or ``"l1"``.
        weight: weight of the eigenvalue penalty. Default 1.0.
        epsilon: added to each eigenvalue before the square root. Default 1e-5.
        beta: Huber threshold of the smooth-L1 distance, in whitened units. Default 1.0.
        reduction: ``"mean"`` (default) or ``"none"`` for (B, K) values.

    ``label_dist`` is accepted for a uniform call signature and ignored.
    """

    def __init__(
        self,
        distance: Literal["smooth_l1", "l1"] = "smooth_l1",
        weight: float = 1.0,
        epsilon: float = 1e-5,
        beta: float = 1.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        if distance not in ("smooth_l1", "l1"):
            raise ValueError(f"distance must be 'smooth_l1' or 'l1', got {distance!r}")
        if not float(weight) >= 0.0:
            raise ValueError(f"weight must be >= 0, got {weight}")
        if not float(epsilon) > 0.0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        if not float(beta) > 0.0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.distance = distance
        self.weight = float(weight)
        self.epsilon = float(epsilon)
        self.beta = float(beta)
        self.reduction = _check_reduction(reduction)

    def forward(
        self,
        logits: torch.Tensor,
        points: torch.Tensor,
        label_dist: torch.Tensor | None = None,
    ) -> torch.Tensor:
        _check_inputs(logits, points, label_dist)
        height, width = logits.shape[-2:]

        # Pixel centres and points in normalised coordinates [-1, 1], where a grid
        # axis of length 1 maps to 0.
        scale = logits.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
        shift = logits.new_tensor([1.0 if width > 1 else 0.0, 1.0 if height > 1 else 0.0])
        grid = pixel_grid((height, width), dtype=logits.dtype, device=logits.device) * scale - shift
        targets = points.to(logits.dtype) * scale - shift

        # Distribution, mean and unbiased weighted covariance per landmark.
        probabilities = torch.softmax(logits.flatten(start_dim=2), dim=-1)
        means = probabilities @ grid
        centred = grid[None, None] - means[:, :, None, :]
        weighted = probabilities[..., None] * centred
        scatter = weighted.transpose(-1, -2) @ centred
        unbiased = (1.0 - (probabilities * probabilities).sum(dim=-1)).clamp_min(self.epsilon)
        covariance = scatter / unbiased[..., None, None]

        # Error along each principal axis, whitened by that axis's spread.
        eigenvalues, eigenvectors = _symmetric_eigen_2x2(covariance, guard=self.epsilon * self.epsilon)
        projected = (eigenvectors @ (targets - means)[..., None]).squeeze(-1)
        whitened = projected / torch.sqrt(eigenvalues.clamp_min(0.0) + self.epsilon)
        if self.distance == "smooth_l1":
            error_term = _smooth_l1(whitened, self.beta).sum(dim=-1)
        else:
            error_term = whitened.abs().sum(dim=-1)

        per_landmark = error_term + self.weight * eigenvalues.abs().sum(dim=-1)
        return _reduce(per_landmark, self.reduction)


_LOSSES: dict[str, type[nn.Module]] = {
    "structured": StructuredLoss,
    "softargmax": SoftArgmaxLoss,
    "star": StarLoss,
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Build a loss by name: ``"structured"``, ``"softargmax"`` or ``"star"``, passing ``kwargs`` to its class."""
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(_LOSSES)}")
    return _LOSSES[name](**kwargs)
