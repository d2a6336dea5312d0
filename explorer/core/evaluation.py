"""Evaluate a heatmap network on annotated faces with a chosen decoder.

Predictions are decoded in heatmap pixels, mapped back through the crop into
the coordinates of the original image, and compared there with the
ground-truth points, so the numbers do not depend on the crop size.

=============  ==============================================================
decoder        how a heatmap becomes a point
=============  ==============================================================
``argmax``     the integer peak, :func:`explorer.core.heatmaps.decode_argmax`
``refined``    the peak refined to sub-pixel precision,
               :func:`explorer.core.heatmaps.decode_refined`
``soft-argmax`` the expectation of ``softmax(H / temperature)``,
               :func:`explorer.core.heatmaps.soft_argmax`
=============  ==============================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from explorer.core.geometry import heatmap_to_crop
from explorer.core.heatmaps import decode_argmax, decode_refined, soft_argmax
from explorer.core.metrics import auc, failure_rate, nme, per_landmark_errors

logger = logging.getLogger(__name__)

DECODERS = ("argmax", "refined", "soft-argmax")

# Threshold, in percent of the inter-ocular distance, for FR and AUC.
DEFAULT_THRESHOLD = 10.0


def default_decoder(objective: str) -> str:
    """Return the decoder that matches how a model was trained.

    Structured-loss models are trained on the heatmap's mode, so they are
    decoded with the refined argmax. Soft-argmax and STAR models are trained
    on the heatmap's mean, so they are decoded with soft-argmax.
    """
    return "refined" if objective == "structured" else "soft-argmax"


def decode(logits: torch.Tensor, decoder: str, temperature: float = 1.0) -> torch.Tensor:
    """Decode heatmap logits ``(B, K, H, W)`` into points ``(B, K, 2)`` in heatmap pixels."""
    if decoder == "argmax":
        return decode_argmax(logits)
    if decoder == "refined":
        return decode_refined(logits)
    if decoder == "soft-argmax":
        return soft_argmax(logits, temperature=temperature)
    raise ValueError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")


def crop_to_image(points: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Map crop points ``(B, K, 2)`` to image points with image-to-crop matrices ``(B, 2, 3)``."""
    linear = matrices[:, :, :2]
    offset = matrices[:, :, 2]
    # Solve A·p_image + t = p_crop for p_image, for every face at once.
    shifted = (points - offset[:, None, :]).transpose(1, 2)
    return torch.linalg.solve(linear, shifted).transpose(1, 2)


@dataclass
class EvaluationResult:
    """Per-face predictions and errors of one model with one decoder.

    Errors are in percent of the normaliser (the outer-eye-corner distance for
    68 points). ``fr`` is in percent; ``auc`` is a fraction in [0, 1].
    """

    decoder: str
    threshold: float
    predictions: np.ndarray  # (N, K, 2) image pixels
    ground_truth: np.ndarray  # (N, K, 2) image pixels
    errors: np.ndarray  # (N,) per-face NME, percent
    landmark_errors: np.ndarray  # (N, K) normalised point errors, percent
    indices: list[int] = field(default_factory=list)
    missed: int = 0  # faces a detector did not find, left out of the errors

    @property
    def count(self) -> int:
        return int(self.errors.shape[0])

    @property
    def nme(self) -> float:
        return float(self.errors.mean()) if self.count else float("nan")

    @property
    def fr(self) -> float:
        return float(failure_rate(self.errors, self.threshold))

    @property
    def auc(self) -> float:
        return float(auc(self.errors, self.threshold))

    def summary(self) -> dict[str, float | int | str]:
        """Return the headline numbers as a JSON-ready dict."""
        return {
            "nme": round(self.nme, 4),
            "fr": round(self.fr, 4),
            "auc": round(self.auc, 4),
            "count": self.count,
            "decoder": self.decoder,
            "threshold": self.threshold,
            "missed": self.missed,
        }


@torch.no_grad()
def predict_batches(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    decoders: Iterable[str],
    temperature: float = 1.0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray, list[int]]:
    """Run the model over dataset batches and decode each heatmap with every decoder.

    Returns image-space predictions per decoder ``{decoder: (N, K, 2)}``, the
    image-space ground truth ``(N, K, 2)`` and the dataset indices.
    """
    decoders = list(decoders)
    for name in decoders:
        if name not in DECODERS:
            raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}")

    stride = model.config["stride"]
    was_training = model.training
    model.eval()

    predictions: dict[str, list[np.ndarray]] = {name: [] for name in decoders}
    truths: list[np.ndarray] = []
    indices: list[int] = []
    for batch in tqdm(batches, desc="evaluating", unit="batch", disable=not progress, leave=False):
        images = batch["image"].to(device)
        matrices = batch["matrix"].to(torch.float64)
        logits = model(images).float()

        # Decode in heatmap pixels, then undo the heatmap stride and the crop.
        for name in decoders:
            heatmap_points = decode(logits, name, temperature).cpu().to(torch.float64)
            image_points = crop_to_image(heatmap_to_crop(heatmap_points, stride), matrices)
            predictions[name].append(image_points.numpy())
        truths.append(crop_to_image(batch["points"].to(torch.float64), matrices).numpy())
        indices.extend(int(index) for index in batch["index"])

    model.train(was_training)
    stacked = {name: np.concatenate(chunks) for name, chunks in predictions.items()}
    return stacked, np.concatenate(truths), indices


def evaluate_model(
    model: torch.nn.Module,
    loader: DataLoader,
    decoders: Iterable[str] = ("refined",),
    temperature: float = 1.0,
    threshold: float = DEFAULT_THRESHOLD,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, EvaluationResult]:
    """Evaluate a model on every face of a loader, once per decoder.

    The loader must yield dicts with ``image`` ``(B, 3, S, S)``, ``points``
    ``(B, K, 2)`` in crop pixels, ``matrix`` ``(B, 2, 3)`` image-to-crop and
    ``index`` ``(B,)``, as :class:`explorer.core.data.LandmarkDataset` does.
    """
    predictions, truth, indices = predict_batches(model, loader, decoders, temperature, device, progress)

    results = {}
    for name, points in predictions.items():
        errors = nme(points, truth)
        results[name] = EvaluationResult(
            decoder=name,
            threshold=threshold,
            predictions=points,
            ground_truth=truth,
            errors=np.asarray(errors, dtype=np.float64),
            landmark_errors=np.asarray(per_landmark_errors(points, truth), dtype=np.float64),
            indices=indices,
        )
    return results
