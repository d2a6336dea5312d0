"""Offline face detection with the Haar cascades that ship inside OpenCV 4.x.

Nothing is downloaded at run time: the cascade XML files come with the
``opencv-python-headless`` wheel (``cv2.data.haarcascades``). The frontal
cascade runs first. When it finds nothing, the profile cascade runs on the
image and on its mirror image, because OpenCV's profile cascade only detects
faces turned one way.

A Haar box covers roughly brows to chin and is not the box of the 68 points
that the models were trained on, so :func:`landmark_box` maps a detection to
the equivalent ground-truth-point box with a calibrated linear model.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

# Mapping from a Haar frontal box (centre cx, cy and side s) to the box of the
# 68 ground-truth points: centre (cx + DX·s, cy + DY·s), width WIDTH·s and
# height HEIGHT·s. Medians over the 322 of 362 faces (every third face of the
# 300-W training split) that the frontal cascade found, measured with
# ``python benchmarks/calibrate_detector.py`` (OpenCV 4.14).
DETECTOR_BOX_CALIBRATION = {"dx": 0.011, "dy": 0.148, "width": 0.867, "height": 0.839}

# Smallest face side searched for, in pixels: the cascades are trained on
# 24×24 windows (20×20 for the profile cascade).
MIN_FACE_SIDE = 24


@dataclass(frozen=True)
class FaceBox:
    """A detected face: corners in image pixels and the detector that found it."""

    x0: float
    y0: float
    x1: float
    y1: float
    detector: str = "frontal"

    @property
    def side(self) -> float:
        return float(max(self.x1 - self.x0, self.y1 - self.y0))

    @property
    def area(self) -> float:
        return float((self.x1 - self.x0) * (self.y1 - self.y0))

    def as_array(self) -> np.ndarray:
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float64)


# OpenCV's CascadeClassifier keeps per-call scratch data in the object, so two
# threads running the same cascade at once fail an internal assertion
# ("scaleIdx < scaleData->size()") or crash the process (seen with OpenCV
# 4.14). The classifiers are shared, so detections run one at a time.
_DETECTION_LOCK = threading.Lock()


@lru_cache(maxsize=None)
def _cascade(name: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / name
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(
            f"OpenCV could not load its bundled face cascade {path}. "
            "Reinstall opencv-python-headless 4.x (OpenCV 5 no longer ships the Haar cascades)."
        )
    return cascade


def _run_cascade(cascade: cv2.CascadeClassifier, grey: np.ndarray, min_side: int) -> np.ndarray:
    with _DETECTION_LOCK:
        boxes = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def detect_faces(image: np.ndarray, max_faces: int = 20) -> list[FaceBox]:
    """Find faces in an RGB or grey image ``(H, W[, 3])``, largest first; safe to call from several threads.

    Returns at most ``max_faces`` boxes; an empty list when there is no face.
    """
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"expected an image of shape (H, W) or (H, W, 3), got {image.shape}")

    # Cascades work on equalised 8-bit grey images.
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    grey = cv2.equalizeHist(np.ascontiguousarray(grey, dtype=np.uint8))
    min_side = max(MIN_FACE_SIDE, int(0.05 * min(grey.shape)))

    faces = [FaceBox(x, y, x + w, y + h, "frontal") for x, y, w, h in _run_cascade(_cascade("haarcascade_frontalface_default.xml"), grey, min_side)]
    if not faces:
        # The profile cascade finds faces turned to one side only, so search
        # the mirror image too and flip those boxes back.
        width = grey.shape[1]
        profile = _cascade("haarcascade_profileface.xml")
        faces = [FaceBox(x, y, x + w, y + h, "profile") for x, y, w, h in _run_cascade(profile, grey, min_side)]
        faces += [FaceBox(width - x - w, y, width - x, y + h, "profile") for x, y, w, h in _run_cascade(profile, grey[:, ::-1].copy(), min_side)]
        faces = _suppress_overlaps(faces)

    faces.sort(key=lambda face: face.area, reverse=True)
    logger.debug("found %d faces in a %dx%d image", len(faces), grey.shape[1], grey.shape[0])
    return faces[:max_faces]


def box_iou(first: np.ndarray, second: np.ndarray) -> float:
    """Return the intersection over union of two ``[x0, y0, x1, y1]`` boxes."""
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    if width <= 0 or height <= 0:
        return 0.0
    intersection = width * height
    union = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1]) - intersection
    return float(intersection / union)


def _suppress_overlaps(faces: list[FaceBox], threshold: float = 0.3) -> list[FaceBox]:
    kept: list[FaceBox] = []
    for face in sorted(faces, key=lambda face: face.area, reverse=True):
        if all(box_iou(face.as_array(), other.as_array()) < threshold for other in kept):
            kept.append(face)
    return kept


def landmark_box(face: FaceBox) -> np.ndarray:
    """Map a detection to the box the 68 points would have, ``[x0, y0, x1, y1]``.

    The models crop around the ground-truth points' box during training, so a
    detector box is turned into that box before cropping.
    """
    side = face.side
    centre_x = 0.5 * (face.x0 + face.x1) + DETECTOR_BOX_CALIBRATION["dx"] * side
    centre_y = 0.5 * (face.y0 + face.y1) + DETECTOR_BOX_CALIBRATION["dy"] * side
    half_width = 0.5 * DETECTOR_BOX_CALIBRATION["width"] * side
    half_height = 0.5 * DETECTOR_BOX_CALIBRATION["height"] * side
    return np.array([centre_x - half_width, centre_y - half_height, centre_x + half_width, centre_y + half_height])


def match_detection(faces: list[FaceBox], reference_box: np.ndarray, min_iou: float = 0.1) -> FaceBox | None:
    """Return the detection whose landmark box overlaps ``reference_box`` most, or None."""
    best, best_iou = None, min_iou
    for face in faces:
        overlap = box_iou(landmark_box(face), reference_box)
        if overlap > best_iou:
            best, best_iou = face, overlap
    return best


def calibrate_landmark_box(images: list[np.ndarray], point_sets: list[np.ndarray]) -> dict[str, float]:
    """Measure the median detection-to-point-box mapping used by :func:`landmark_box`.

    ``images`` are RGB arrays and ``point_sets`` their ground-truth points
    ``(K, 2)``; only faces the frontal cascade finds are used.
    """
    offsets = []
    for image, points in zip(images, point_sets):
        faces = [face for face in detect_faces(image) if face.detector == "frontal"]
        reference = np.array([*points.min(axis=0), *points.max(axis=0)])
        centre = 0.5 * (reference[:2] + reference[2:])
        candidates = [face for face in faces if face.x0 <= centre[0] <= face.x1 and face.y0 <= centre[1] <= face.y1]
        if not candidates:
            continue
        face = max(candidates, key=lambda face: face.area)
        side = face.side
        offsets.append((
            (centre[0] - 0.5 * (face.x0 + face.x1)) / side,
            (centre[1] - 0.5 * (face.y0 + face.y1)) / side,
            (reference[2] - reference[0]) / side,
            (reference[3] - reference[1]) / side,
        ))
    if not offsets:
        raise ValueError("the frontal cascade found no face in any calibration image")
    median = np.median(np.asarray(offsets), axis=0)
    return {"dx": float(median[0]), "dy": float(median[1]), "width": float(median[2]), "height": float(median[3]), "faces": len(offsets)}
