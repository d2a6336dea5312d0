"""Face sources (upload, example, data folder), the choice of face, and cached predictions."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from explorer.app.config import EXAMPLES_DIR
from explorer.core.data import AnnotationError, DatasetError, FaceRecord, read_pts, scan_folder, split_records
from explorer.core.geometry import DEFAULT_CONTEXT, box_from_points
from explorer.inference.detection import FaceBox, box_iou, landmark_box
from explorer.inference.predictor import (
    MIN_BOX_SIDE,
    InputError,
    LoadedImage,
    ModelOutput,
    Predictor,
    find_faces,
    load_upload,
    parse_box,
)

logger = logging.getLogger(__name__)

ValueT = TypeVar("ValueT")

# Detections that overlap the annotated face by at least this IoU are the same face.
SAME_FACE_IOU = 0.3

# A ground-truth file whose points fall outside the photo by more than this
# fraction of the photo size belongs to another photo.
OUTSIDE_TOLERANCE = 0.25


def find_examples(folder: Path = EXAMPLES_DIR) -> dict[str, Path]:
    """Return ``{name: image path}`` of the bundled example faces that have a .pts file."""
    examples = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".ppm") and path.with_suffix(".pts").is_file():
            examples[path.stem] = path
    return examples


class LruCache:
    """A small thread-safe least-recently-used cache."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(self, key: Hashable, compute: Callable[[], ValueT]) -> ValueT:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]

        # Compute outside the lock so one slow request does not block others.
        value = compute()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value


@dataclass(frozen=True)
class FaceSource:
    """A decoded photo with its detections and, when known, its ground-truth points.

    Attributes:
        key: cache key of the photo.
        label: what the user picked, for status lines ("example 'einstein'").
        image: the decoded photo.
        faces: face detections, largest first.
        ground_truth: (K, 2) annotated points in image pixels, or None.
        ground_truth_origin: where the annotation comes from, or None.
    """

    key: str
    label: str
    image: LoadedImage
    faces: tuple[FaceBox, ...]
    ground_truth: np.ndarray | None = None
    ground_truth_origin: str | None = None

    @property
    def rgb(self) -> np.ndarray:
        return self.image.rgb


@dataclass(frozen=True)
class FaceCandidate:
    """A face the user can pick: the box to crop, the crop context and a label."""

    box: np.ndarray
    context: float
    label: str


@dataclass(frozen=True)
class FaceSelection:
    """The face a prediction uses.

    Attributes:
        box: ``[x0, y0, x1, y1]`` landmark box in image pixels.
        context: crop side / longer box side.
        kind: ``"annotated face"``, ``"detected face"``, ``"typed box"`` or ``"whole image"``.
        candidates: every face the user could pick, in index order.
        index: the index of the chosen candidate, or None for a typed box or the whole image.
    """

    box: np.ndarray
    context: float
    kind: str
    candidates: tuple[FaceCandidate, ...]
    index: int | None


class Workspace:
    """The loaded models, the example faces, the optional data folder and the caches the tabs share.

    Args:
        predictor: the loaded models.
        data_root: optional folder of image + .pts pairs; its validation split
            (the faces the training split leaves out) can be browsed by index.
    """

    def __init__(self, predictor: Predictor, data_root: Path | None = None) -> None:
        self.predictor = predictor
        self.examples = find_examples()
        self.data_root = data_root
        self.data_faces: list[FaceRecord] = []
        self.data_problem: str | None = None
        if data_root is not None:
            self._scan_data(data_root)
        self._photos = LruCache(capacity=6)
        self._predictions = LruCache(capacity=12)

    def _scan_data(self, root: Path) -> None:
        try:
            records = scan_folder(root, expected_count=self.predictor.scheme.count, skip_invalid=True)
        except (DatasetError, OSError) as error:
            self.data_problem = f"the data folder {root} could not be read: {error}"
            logger.warning("%s", self.data_problem)
            return
        self.data_faces = split_records(records, "val")
        logger.info("data folder %s: %d validation faces to browse", root, len(self.data_faces))

    # -- sources ------------------------------------------------------------

    def resolve(
        self,
        image: str | bytes | None = None,
        example: str | None = None,
        data_index: float | int | None = None,
        points_file: str | None = None,
    ) -> FaceSource:
        """Load the photo the user picked: an upload wins over an example, which wins over a data face.

        ``points_file`` is an uploaded .pts annotation of the photo. It
        replaces the annotation of an example or data face.

        Raises:
            InputError: nothing was picked, or an upload, a choice or the .pts file is invalid.
        """
        if example is not None and not isinstance(example, str):
            raise InputError(f"example {example!r} is not a name; choose one of {', '.join(self.examples)}")
        if image is not None and not (isinstance(image, str) and not image.strip()):
            source = self._photos.get_or_compute(_upload_key(image), lambda: self._load_upload(image))
        elif example:
            source = self._photos.get_or_compute(f"example:{example}", lambda: self._load_example(example))
        elif data_index is not None and int(data_index) >= 0:
            index = self._data_index(data_index)
            source = self._photos.get_or_compute(f"data:{index}", lambda: self._load_data_face(index))
        else:
            raise InputError("no photo was given; upload a photo or pick an example face")

        if points_file:
            points = self._read_uploaded_points(points_file)
            _check_points_fit(points, source.image, Path(points_file).name)
            source = FaceSource(
                key=source.key,
                label=source.label,
                image=source.image,
                faces=source.faces,
                ground_truth=points.astype(np.float64),
                ground_truth_origin=f"uploaded {Path(points_file).name}",
            )
        return source

    def _read_uploaded_points(self, path: str) -> np.ndarray:
        """Read an uploaded .pts file; messages name the file, not the server's upload folder."""
        name = Path(path).name
        try:
            points = read_pts(path, expected_count=self.predictor.scheme.count)
        except AnnotationError as error:
            location = f"{name}, line {error.line}" if error.line is not None else name
            raise InputError(f"{location}: {error.reason}") from None

        # A box of zero size has no crop, and coinciding eye corners have no NME.
        box = box_from_points(points)
        width, height = box[2] - box[0], box[3] - box[1]
        if max(width, height) < MIN_BOX_SIDE:
            raise InputError(
                f"{name}: the {len(points)} points span only {width:g} x {height:g} pixels; "
                "upload the .pts file of a face annotation"
            )
        first, second = self.predictor.scheme.normaliser
        if np.allclose(points[first], points[second]):
            raise InputError(
                f"{name}: points {first} and {second} (the outer eye corners) coincide at "
                f"{points[first].tolist()}, so the error cannot be normalised; upload the .pts file of a face annotation"
            )
        return points

    def _load_upload(self, image: str | bytes) -> FaceSource:
        loaded = load_upload(image)
        name = Path(image).name if isinstance(image, str) else "pasted image"
        return FaceSource(key=_upload_key(image), label=f"upload {name!r}", image=loaded, faces=tuple(find_faces(loaded.rgb)))

    def _load_example(self, name: str) -> FaceSource:
        if name not in self.examples:
            raise InputError(f"no example face named {name!r}; choose one of {', '.join(self.examples)}")
        path = self.examples[name]
        loaded = load_upload(path)
        points = read_pts(path.with_suffix(".pts"), expected_count=self.predictor.scheme.count)
        return FaceSource(
            key=f"example:{name}",
            label=f"example {name!r}",
            image=loaded,
            faces=tuple(find_faces(loaded.rgb)),
            ground_truth=points.astype(np.float64),
            ground_truth_origin="the example's 300-W annotation",
        )

    def _data_index(self, value: float | int) -> int:
        if not self.data_faces:
            reason = self.data_problem or "EXPLORER_DATA is not set"
            raise InputError(f"data face {value} was requested but no data folder is loaded ({reason})")
        if float(value) != int(value):
            raise InputError(f"data face index {value} is not a whole number")
        index = int(value)
        if not 0 <= index < len(self.data_faces):
            raise InputError(f"data face {index} does not exist; choose 0..{len(self.data_faces) - 1}")
        return index

    def _load_data_face(self, index: int) -> FaceSource:
        record = self.data_faces[index]
        loaded = load_upload(record.image_path)
        return FaceSource(
            key=f"data:{index}",
            label=f"data face {index} ({record.name})",
            image=loaded,
            faces=tuple(find_faces(loaded.rgb)),
            ground_truth=np.asarray(record.points, dtype=np.float64),
            ground_truth_origin=f"the data folder's annotation of {record.name}",
        )

    # -- face choice ---------------------------------------------------------

    def candidates(self, source: FaceSource) -> tuple[FaceCandidate, ...]:
        """List the faces to pick from: the annotated face first (when known), then other detections."""
        candidates = []
        annotated_box = None
        if source.ground_truth is not None:
            annotated_box = box_from_points(source.ground_truth)
            candidates.append(FaceCandidate(annotated_box, DEFAULT_CONTEXT, "annotated face"))
        for face in source.faces:
            box = landmark_box(face)
            if annotated_box is not None and box_iou(box, annotated_box) >= SAME_FACE_IOU:
                continue
            candidates.append(FaceCandidate(box, DEFAULT_CONTEXT, f"detected face ({face.detector} cascade)"))
        return tuple(candidates)

    def select(self, source: FaceSource, face_index: float | int | None = 0, box_text: str | None = None) -> FaceSelection:
        """Pick the face: a typed box wins, else candidate ``face_index``, else the whole image."""
        candidates = self.candidates(source)
        box = parse_box(box_text, source.image.width, source.image.height)
        if box is not None:
            return FaceSelection(box, DEFAULT_CONTEXT, "typed box", candidates, None)

        if not candidates:
            whole = np.array([0.0, 0.0, source.image.width - 1.0, source.image.height - 1.0])
            return FaceSelection(whole, 1.0, "whole image", candidates, None)

        index = 0 if face_index is None else face_index
        if float(index) != int(index):
            raise InputError(f"face index {index} is not a whole number; choose 0..{len(candidates) - 1}")
        index = int(index)
        if not 0 <= index < len(candidates):
            raise InputError(
                f"face {index} was requested but the photo has {len(candidates)} face(s); "
                f"choose a face index 0..{len(candidates) - 1}"
            )
        chosen = candidates[index]
        kind = "annotated face" if chosen.label == "annotated face" else "detected face"
        return FaceSelection(chosen.box, chosen.context, kind, candidates, index)

    # -- predictions --------------------------------------------------------

    def predict(self, source: FaceSource, selection: FaceSelection) -> dict[str, ModelOutput]:
        """Run every model on the selected face, reusing the result for repeated requests."""
        key = (source.key, tuple(np.round(selection.box, 3)), round(selection.context, 6))
        return self._predictions.get_or_compute(
            key, lambda: self.predictor.predict(source.rgb, selection.box, selection.context)
        )


def _upload_key(image: str | bytes) -> str:
    """Build a cache key that changes when the uploaded file changes."""
    if isinstance(image, (bytes, bytearray)):
        return "bytes:" + hashlib.sha1(image).hexdigest()
    path = Path(image)
    try:
        stat = path.stat()
    except OSError:
        return f"upload:{path}"
    return f"upload:{path}:{stat.st_size}:{stat.st_mtime_ns}"


def _check_points_fit(points: np.ndarray, image: LoadedImage, name: str) -> None:
    """Reject an annotation whose points lie far outside the photo."""
    low = -OUTSIDE_TOLERANCE * np.array([image.width, image.height])
    high = (1 + OUTSIDE_TOLERANCE) * np.array([image.width, image.height])
    outside = np.any((points < low) | (points > high), axis=1)
    if outside.mean() > 0.5:
        raise InputError(
            f"{name}: {int(outside.sum())} of {len(points)} points lie outside the "
            f"{image.width} x {image.height} photo; upload the .pts file that belongs to this photo"
        )
