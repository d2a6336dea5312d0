"""Accuracy and speed of dlib's 68-point ERT shape predictor next to the shipped heatmap models.

Usage::

    pip install dlib-bin                 # prebuilt dlib wheel; only this benchmark needs it
    apt-get install libdlib-data         # /usr/share/dlib/shape_predictor_68_face_landmarks.dat
    EXPLORER_DATA=/path/to/300w python benchmarks/dlib_anchor.py [--part accuracy|timing|all]

Both systems run on the validation faces of
``split_records(scan_folder(EXPLORER_DATA), "val")`` and are scored with the
project's NME (outer-eye-corner normaliser), FR@10 and AUC@10, twice:

* with their own face detector: dlib's HOG detector
  (``get_frontal_face_detector``, upsampled ``--upsample`` times) for dlib,
  the Haar cascades (``explorer evaluate --box detector``) for ours. A face
  counts as found when a detection overlaps the box of its ground-truth
  points (intersection over union above 0.1; for ours after the detection
  is mapped to a landmark box). Missed faces are counted, not scored.
* from the ground-truth points' box: ours crops it as in the 300-W
  protocol. dlib gets the detector-style box that its HOG detector would
  give for that face, from a linear mapping of the point box: a centre
  offset and a size, relative to the point box's width and height. The
  mapping's values are medians over the training faces where the HOG
  detector finds the face.

dlib's model was trained on iBUG 300-W (the same 68-point order, indices
0-67 as here), whose training set includes AFW and HELEN images that may
also be in this validation split, so its numbers are optimistic.

Times are per image for detection and per face for landmarks, with one
thread for both (dlib's predictor is single-threaded; torch is set to 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

from common import checkpoint_paths, machine, print_json, summarise, warn_if_busy

DLIB_MODEL = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"
MIN_IOU = 0.1
THRESHOLD = 10.0

# The 300-W .pts files count pixels from 1 (MATLAB convention). dlib's points
# sit about 1 px up and left of them, as if its training data counted from 0,
# so the results also report dlib's points moved by +1 px in x and y.
CONVENTION_SHIFT_PX = 1.0


def _iou(first: np.ndarray, second: np.ndarray) -> float:
    from explorer.inference.detection import box_iou

    return box_iou(first, second)


def _rect_box(rect: Any) -> np.ndarray:
    """Return a dlib rectangle as ``[x0, y0, x1, y1]``; dlib's right and bottom are inclusive pixels."""
    return np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)


def _best_rect(rects: Any, truth_box: np.ndarray) -> Any:
    best, best_iou = None, MIN_IOU
    for rect in rects:
        overlap = _iou(_rect_box(rect), truth_box)
        if overlap > best_iou:
            best, best_iou = rect, overlap
    return best


def _shape_points(shape: Any) -> np.ndarray:
    return np.array([[shape.part(index).x, shape.part(index).y] for index in range(shape.num_parts)], dtype=np.float64)


def calibrate_dlib_box(detector: Any, records: list[Any], upsample: int) -> dict[str, float]:
    """Measure the median mapping from a ground-truth point box to dlib's HOG detection box."""
    from explorer.core.data import read_image
    from explorer.core.geometry import box_from_points

    offsets = []
    for record in records:
        truth = box_from_points(record.points)
        rect = _best_rect(detector(read_image(record.image_path), upsample), truth)
        if rect is None:
            continue
        found = _rect_box(rect)
        width, height = truth[2] - truth[0], truth[3] - truth[1]
        offsets.append((
            ((found[0] + found[2]) - (truth[0] + truth[2])) / 2 / width,
            ((found[1] + found[3]) - (truth[1] + truth[3])) / 2 / height,
            (found[2] - found[0]) / width,
            (found[3] - found[1]) / height,
        ))
    median = np.median(np.asarray(offsets), axis=0)
    return {"dx": float(median[0]), "dy": float(median[1]), "width": float(median[2]), "height": float(median[3]),
            "faces": len(offsets), "faces_tried": len(records)}


def dlib_rect_from_points_box(truth: np.ndarray, calibration: dict[str, float]) -> Any:
    """Convert a ground-truth point box to the detector-style dlib rectangle of ``calibration``."""
    import dlib

    width, height = truth[2] - truth[0], truth[3] - truth[1]
    centre_x = (truth[0] + truth[2]) / 2 + calibration["dx"] * width
    centre_y = (truth[1] + truth[3]) / 2 + calibration["dy"] * height
    half_width, half_height = calibration["width"] * width / 2, calibration["height"] * height / 2
    return dlib.rectangle(int(round(centre_x - half_width)), int(round(centre_y - half_height)),
                          int(round(centre_x + half_width)) - 1, int(round(centre_y + half_height)) - 1)


def _scores(errors: list[float], missed: int) -> dict[str, Any]:
    from explorer.core.metrics import auc, failure_rate

    values = np.asarray(errors, dtype=np.float64)
    return {"nme": float(values.mean()), "fr": failure_rate(values, THRESHOLD), "auc": auc(values, THRESHOLD),
            "count": int(values.size), "missed": missed}


def evaluate_dlib(records: list[Any], detector: Any, predictor: Any, upsample: int, calibration: dict[str, float]) -> dict[str, Any]:
    """Score dlib with its own detector and from the ground-truth box; return scores and per-face errors."""
    from explorer.core.data import read_image
    from explorer.core.geometry import box_from_points
    from explorer.core.metrics import nme

    own: dict[str, float] = {}
    own_shifted: list[float] = []
    truth_box: dict[str, float] = {}
    offsets = []
    for record in records:
        image = read_image(record.image_path)
        truth = box_from_points(record.points)
        points = record.points.astype(np.float64)[None]

        rect = _best_rect(detector(image, upsample), truth)
        if rect is not None:
            predicted = _shape_points(predictor(image, rect))
            own[record.name] = float(nme(predicted[None], points)[0])
            own_shifted.append(float(nme(predicted[None] + CONVENTION_SHIFT_PX, points)[0]))

        predicted = _shape_points(predictor(image, dlib_rect_from_points_box(truth, calibration)))
        truth_box[record.name] = float(nme(predicted[None], points)[0])
        offsets.append((predicted - points[0]).mean(axis=0))

    return {
        "own_detector": _scores(list(own.values()), len(records) - len(own)),
        "own_detector_shifted": _scores(own_shifted, len(records) - len(own)),
        "ground_truth_box": _scores(list(truth_box.values()), 0),
        "mean_offset_px_vs_truth": [float(value) for value in np.mean(offsets, axis=0)],
        "_own_errors": own,
    }


def evaluate_ours(records: list[Any], root: str, paths: dict[str, Any]) -> dict[str, Any]:
    """Score each shipped model with the Haar detector and from the ground-truth box."""
    from explorer.evaluate import detector_boxes, evaluate_checkpoint

    found, _, _ = detector_boxes(records, progress=False)
    found_names = [record.name for record in found]
    results: dict[str, Any] = {}
    for name, path in paths.items():
        detector_result, card = evaluate_checkpoint(path, root, split="val", box="detector", device="cpu", progress=False)
        truth_result, _ = evaluate_checkpoint(path, root, split="val", box="ground-truth", device="cpu", progress=False)
        results[name] = {
            "checkpoint": str(path),
            "decoder": detector_result.decoder,
            "own_detector": _scores(list(detector_result.errors), detector_result.missed),
            "ground_truth_box": _scores(list(truth_result.errors), 0),
            "_own_errors": dict(zip(found_names, (float(value) for value in detector_result.errors))),
        }
    return results


def both_found(dlib_errors: dict[str, float], ours: dict[str, Any]) -> dict[str, Any]:
    """Score every system on the faces that both detectors found."""
    shared = set(dlib_errors)
    for result in ours.values():
        shared &= set(result["_own_errors"])
    names = sorted(shared)
    table = {"faces": len(names), "dlib": _scores([dlib_errors[name] for name in names], 0)}
    for model, result in ours.items():
        table[model] = _scores([result["_own_errors"][name] for name in names], 0)
    return table


def measure_times(records: list[Any], detector: Any, predictor: Any, upsample: int, calibration: dict[str, float],
                  path: Any, repeats: int) -> dict[str, Any]:
    """Time detection per image and landmarks per face for dlib and for one of our models, on one thread."""
    import torch

    from explorer.core.data import read_image
    from explorer.core.geometry import DEFAULT_CONTEXT, box_from_points
    from explorer.inference.detection import detect_faces
    from explorer.inference.predictor import Predictor

    torch.set_num_threads(1)
    ours = Predictor([path], device="cpu")
    name = ours.names[0]
    images = [read_image(record.image_path) for record in records]
    boxes = [box_from_points(record.points) for record in records]
    rects = [dlib_rect_from_points_box(box, calibration) for box in boxes]

    def per_item(function: Any) -> dict[str, float]:
        # Median over repeats of the mean time per item over all items.
        for index in range(min(3, len(images))):
            function(index)
        rounds = []
        for _ in range(repeats):
            started = time.perf_counter()
            for index in range(len(images)):
                function(index)
            rounds.append((time.perf_counter() - started) / len(images))
        return {"median_ms": 1000 * statistics.median(rounds), **{key: value for key, value in summarise(rounds).items() if key == "runs"}}

    return {
        "images": len(images),
        "dlib_hog_detection_per_image": per_item(lambda index: detector(images[index], upsample)),
        "haar_detection_per_image": per_item(lambda index: detect_faces(images[index])),
        "dlib_landmarks_per_face": per_item(lambda index: predictor(images[index], rects[index])),
        f"{name}_landmarks_per_face": per_item(lambda index: ours.predict(images[index], boxes[index], DEFAULT_CONTEXT)),
        "mean_image_size": [float(np.mean([image.shape[1] for image in images])), float(np.mean([image.shape[0] for image in images]))],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("accuracy", "timing", "all"), default="all", help="what to measure (default: all)")
    parser.add_argument("--upsample", type=int, default=1, help="dlib HOG detector upsampling steps (default 1, as dlib's examples use)")
    parser.add_argument("--calibration-every", type=int, default=3, help="use every Nth training face to calibrate dlib's box (default 3)")
    parser.add_argument("--timing-faces", type=int, default=40, help="validation faces in the timing loop (default 40)")
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds over those faces (default 5)")
    args = parser.parse_args()

    root = os.environ.get("EXPLORER_DATA")
    if not root:
        sys.exit("set EXPLORER_DATA to a folder in 300-W layout")
    try:
        import dlib
    except ImportError:
        sys.exit("dlib is not installed; run: pip install dlib-bin")
    if not os.path.isfile(DLIB_MODEL):
        sys.exit(f"{DLIB_MODEL} not found; run: apt-get install libdlib-data")

    from explorer.core.data import scan_folder, split_records

    warn_if_busy()
    records = scan_folder(root)
    validation = split_records(records, "val")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(DLIB_MODEL)
    calibration = calibrate_dlib_box(detector, split_records(records, "train")[:: args.calibration_every], args.upsample)
    paths = checkpoint_paths()

    output: dict[str, Any] = {"machine": machine(), "dlib": dlib.__version__, "dlib_model": DLIB_MODEL,
                              "upsample": args.upsample, "validation_faces": len(validation), "dlib_box_calibration": calibration}
    if args.part in ("accuracy", "all"):
        dlib_result = evaluate_dlib(validation, detector, predictor, args.upsample, calibration)
        ours = evaluate_ours(validation, root, paths)
        output["found_by_both_detectors"] = both_found(dlib_result.pop("_own_errors"), ours)
        for result in ours.values():
            result.pop("_own_errors")
        output["accuracy"] = {"dlib": dlib_result, **ours}
    if args.part in ("timing", "all"):
        output["timing"] = measure_times(validation[: args.timing_faces], detector, predictor, args.upsample, calibration,
                                         paths["structured"], args.repeats)
    print_json(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
