"""Evaluate a saved checkpoint on a 300-W layout folder.

Faces are cropped either from the box of their ground-truth points (the
300-W protocol) or from a Haar face detection mapped to the equivalent point
box. With the detector, faces it misses are left out of the errors and
counted in ``missed``, because no crop exists for them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from explorer.core.checkpoints import load_model
from explorer.core.data import FaceRecord, LandmarkDataset, read_image, scan_folder, split_records
from explorer.core.evaluation import DEFAULT_THRESHOLD, EvaluationResult, default_decoder, evaluate_model
from explorer.core.geometry import box_from_points
from explorer.inference.detection import detect_faces, landmark_box, match_detection

logger = logging.getLogger(__name__)


def detector_boxes(records: list[FaceRecord], progress: bool = True) -> tuple[list[FaceRecord], list[np.ndarray], int]:
    """Detect the annotated face in each record's image.

    Returns the records the detector found, their landmark boxes, and the
    number of faces it missed.
    """
    found, boxes = [], []
    for record in tqdm(records, desc="detecting faces", disable=not progress, unit="face"):
        faces = detect_faces(read_image(record.image_path))
        match = match_detection(faces, box_from_points(record.points))
        if match is not None:
            found.append(record)
            boxes.append(landmark_box(match))
    missed = len(records) - len(found)
    if missed:
        logger.info("the face detector missed %d of %d faces; they are left out of the errors", missed, len(records))
    return found, boxes, missed


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    split: str = "all",
    decoder: str | None = None,
    box: str = "ground-truth",
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = True,
) -> tuple[EvaluationResult, dict[str, Any]]:
    """Evaluate one checkpoint on a folder split; return the result and the checkpoint card.

    ``result.summary()`` gains ``missed`` (faces without a detection) when
    ``box="detector"``.
    """
    if box not in ("ground-truth", "detector"):
        raise ValueError(f"box must be 'ground-truth' or 'detector', got {box!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, card = load_model(checkpoint, device=device)
    decoder = decoder or card.get("decoder") or default_decoder(card.get("objective", "structured"))
    input_size = int(model.config["input_size"])

    # Check the landmark count before running anything, so a 98-point model
    # on 68-point data fails with a message rather than a shape error.
    records = split_records(scan_folder(data_root), split)
    if not records:
        raise ValueError(f"no annotated faces in the {split!r} split of {data_root}")
    if records[0].points.shape[0] != model.config["num_landmarks"]:
        raise ValueError(
            f"{checkpoint} predicts {model.config['num_landmarks']} landmarks but {data_root} is annotated with "
            f"{records[0].points.shape[0]}; evaluate it on data of the same landmark scheme."
        )

    missed = 0
    if box == "detector":
        records, boxes, missed = detector_boxes(records, progress=progress)
        if not records:
            raise ValueError(
                f"the face detector found none of the {missed} annotated faces in the {split!r} split of {data_root}; "
                "evaluate with --box ground-truth instead"
            )
        dataset = LandmarkDataset(records, input_size=input_size, cache_images=False, boxes=boxes)
    else:
        dataset = LandmarkDataset(records, input_size=input_size, augmentation=None)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)

    temperature = float(card.get("temperature") or 1.0)
    result = evaluate_model(model, loader, decoders=(decoder,), temperature=temperature, threshold=threshold, device=device,
                            progress=progress)[decoder]
    result.missed = missed
    return result, card
