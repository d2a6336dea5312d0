"""Landmark accuracy metrics: NME, failure rate, and the area under the cumulative error distribution.

Errors are in PERCENT of the normaliser throughout: an NME of 4.0 means the mean
point-to-point error is 4 % of the inter-ocular distance (or of the box size).
Functions accept numpy arrays or torch tensors and return the same kind as their
first argument, as float64 for numpy input and in the input's dtype for torch.
"""

from __future__ import annotations

import logging
from typing import Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "OUTER_EYE_CORNERS",
    "nme",
    "per_landmark_errors",
    "failure_rate",
    "auc",
    "ced_curve",
]

ArrayLike = Union[np.ndarray, torch.Tensor]
Normalizer = Union[str, float, np.ndarray, torch.Tensor]

# Indices of the outer eye corners per landmark scheme, used for the
# inter-ocular normaliser: iBUG 300-W 68 points, WFLW 98 points, COFW 29 points.
OUTER_EYE_CORNERS: dict[int, tuple[int, int]] = {68: (36, 45), 98: (60, 72), 29: (8, 9)}


def _to_tensor(values: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values if values.is_floating_point() else values.double()
    if isinstance(values, np.ndarray):
        return torch.from_numpy(np.asarray(values, dtype=np.float64))
    raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(values).__name__}")


def _like_input(result: torch.Tensor, reference: ArrayLike) -> ArrayLike:
    if isinstance(reference, np.ndarray):
        return result.detach().cpu().numpy()
    return result


def _normalizers(gt: torch.Tensor, normalizer: Normalizer) -> torch.Tensor:
    """Return the (B,) normalising distance of each face."""
    batch, num_points = gt.shape[:2]

    if isinstance(normalizer, str):
        if normalizer == "inter_ocular":
            if num_points not in OUTER_EYE_CORNERS:
                raise ValueError(
                    f"no outer eye corners are known for {num_points} landmarks "
                    f"(known: {sorted(OUTER_EYE_CORNERS)}); pass normalizer='bbox' or a number"
                )
            left, right = OUTER_EYE_CORNERS[num_points]
            distances = torch.linalg.vector_norm(gt[:, left] - gt[:, right], dim=-1)
        elif normalizer == "bbox":
            # sqrt(w * h) of the ground-truth points' bounding box.
            extent = gt.amax(dim=1) - gt.amin(dim=1)
            distances = torch.sqrt(extent[:, 0] * extent[:, 1])
        else:
            raise ValueError(f"normalizer must be 'inter_ocular', 'bbox', a number or a (B,) array, got {normalizer!r}")
    elif isinstance(normalizer, (int, float)) and not isinstance(normalizer, bool):
        distances = torch.full((batch,), float(normalizer), dtype=gt.dtype, device=gt.device)
    else:
        distances = _to_tensor(normalizer, "normalizer").to(dtype=gt.dtype, device=gt.device)
        if distances.dim() == 0:
            distances = distances.expand(batch)
        if distances.shape != (batch,):
            raise ValueError(f"a normalizer array must have shape ({batch},), got {tuple(distances.shape)}")

    if not bool((distances > 0).all()):
        raise ValueError(f"normalizer distances must be > 0, got {distances.tolist()}; check for degenerate faces")
    return distances


def per_landmark_errors(pred: ArrayLike, gt: ArrayLike, normalizer: Normalizer = "inter_ocular") -> ArrayLike:
    """Compute each landmark's point-to-point error in percent of its face's normaliser.

    Args:
        pred: (B, K, 2) predicted (x, y).
        gt: (B, K, 2) ground-truth (x, y), in the same units as ``pred``.
        normalizer: ``"inter_ocular"`` (outer eye corners: 36 and 45 for 68
            points, 60 and 72 for 98, 8 and 9 for 29), ``"bbox"`` (sqrt(w * h)
            of the ground-truth points' box), a positive number, or a (B,) array.

    Returns:
        (B, K) errors in percent.
    """
    pred_tensor = _to_tensor(pred, "pred")
    gt_tensor = _to_tensor(gt, "gt").to(dtype=pred_tensor.dtype, device=pred_tensor.device)
    if pred_tensor.dim() != 3 or pred_tensor.shape[-1] != 2 or pred_tensor.shape != gt_tensor.shape:
        raise ValueError(
            f"pred and gt must both have shape (B, K, 2), got {tuple(pred_tensor.shape)} and {tuple(gt_tensor.shape)}"
        )

    distances = _normalizers(gt_tensor, normalizer)
    errors = torch.linalg.vector_norm(pred_tensor - gt_tensor, dim=-1)
    return _like_input(100.0 * errors / distances[:, None], pred)


def nme(pred: ArrayLike, gt: ArrayLike, normalizer: Normalizer = "inter_ocular") -> ArrayLike:
    """Compute the normalised mean error of each face, in percent.

    NME = mean_k ||pred_k - gt_k|| / d * 100, with d from ``normalizer`` (see
    :func:`per_landmark_errors`). Average the result over faces for a dataset NME.

    Returns:
        (B,) NME per face in percent.
    """
    errors = per_landmark_errors(pred, gt, normalizer)
    if isinstance(errors, np.ndarray):
        return errors.mean(axis=1)
    return errors.mean(dim=1)


def _errors_1d(errors: ArrayLike | list[float]) -> np.ndarray:
    if isinstance(errors, torch.Tensor):
        values = errors.detach().cpu().double().numpy()
    else:
        values = np.asarray(errors, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"errors must be a non-empty 1-D array of per-face NME, got shape {values.shape}")
    return values


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0 percent, got {threshold}")
    return threshold


def failure_rate(errors: ArrayLike | list[float], threshold: float = 10.0) -> float:
    """Return the percentage of faces whose NME is strictly greater than ``threshold`` percent."""
    values = _errors_1d(errors)
    threshold = _check_threshold(threshold)
    return float(100.0 * np.mean(values > threshold))


def auc(errors: ArrayLike | list[float], threshold: float = 10.0) -> float:
    """Return the area under the cumulative error distribution on [0, threshold], divided by threshold.

    The CED is the step function F(e) = fraction of faces with NME <= e. Its exact
    integral is (1 / N) sum_i max(0, threshold - e_i), so

        AUC = mean_i max(0, threshold - e_i) / threshold, in [0, 1].

    Implementations that integrate a sampled CED with the trapezoidal rule differ
    from this by at most the sampling step divided by ``threshold``.
    """
    values = _errors_1d(errors)
    threshold = _check_threshold(threshold)
    return float(np.mean(np.clip(threshold - np.clip(values, 0.0, None), 0.0, None)) / threshold)


def ced_curve(
    errors: ArrayLike | list[float],
    threshold: float = 10.0,
    steps: int = 1001,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample the cumulative error distribution for plotting.

    Returns:
        x: (steps,) NME values evenly spaced on [0, threshold], in percent;
        y: (steps,) fraction of faces with NME <= x, in [0, 1].
    """
    values = _errors_1d(errors)
    threshold = _check_threshold(threshold)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")

    x = np.linspace(0.0, threshold, steps)
    sorted_errors = np.sort(values)
    y = np.searchsorted(sorted_errors, x, side="right") / values.size
    return x, y
