"""The ``predict`` command: landmarks for every face in many images, as JSON lines.

``python -m explorer predict INPUT... --out FILE.jsonl`` takes image files
and folders (searched recursively for ``IMAGE_SUFFIXES``) and writes one JSON
object per line:

* one line per detected face, with the face box and the points of the
  checkpoint's default decoder and of every decoder. Points are in image
  pixels, in the orientation that the image's EXIF tag gives. With
  ``--heatmap-summary`` the line adds the peak probability of each heatmap
  and how far the decoders disagree;
* one line with ``"faces": 0`` and an ``error`` for an image without a
  detected face, unless ``--whole-image`` runs the model on the whole image;
* one line with an ``error`` for a file that cannot be read. The run logs it
  and goes on with the next file.

Lines come in input order (sorted paths within each folder). DataLoader
worker processes decode the images and detect the faces while the main
process runs the model on batches of ``--batch-size`` face crops collected
across images.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp")

# The checkpoint used without --checkpoint: the shipped structured-loss model,
# in EXPLORER_CHECKPOINTS when set (as for the app), else in checkpoints/.
DEFAULT_CHECKPOINT_NAME = "structured.safetensors"
REPOSITORY_CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"

# Decimals kept in the JSON output: 1/1000 pixel for coordinates.
COORDINATE_DECIMALS = 3


def default_checkpoint() -> Path:
    """Return the structured-loss checkpoint in EXPLORER_CHECKPOINTS, or in the repository's checkpoints/ folder."""
    folder = os.environ.get("EXPLORER_CHECKPOINTS")
    return (Path(folder) if folder else REPOSITORY_CHECKPOINTS) / DEFAULT_CHECKPOINT_NAME


def add_predict_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``predict`` to ``subparsers`` and return its parser."""
    parser = subparsers.add_parser(
        "predict",
        help="predict the landmarks of every face in images and folders, as JSON lines",
        description="Detect every face in the input images, run a checkpoint on each and write one JSON line per "
        "face (or per image without a face, or per unreadable file). Folders are searched recursively for "
        + ", ".join(IMAGE_SUFFIXES) + " files.",
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image files or folders")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="output JSON-lines file, or - for standard output")
    parser.add_argument("--checkpoint", type=Path, metavar="FILE",
                        help="model checkpoint (default: structured.safetensors in $EXPLORER_CHECKPOINTS or checkpoints/)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N", help="face crops per forward pass (default: 32)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="device for the model (default: cuda when available)")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="DataLoader processes that decode images and detect faces; 0 does it in the main process (default: 2)")
    parser.add_argument("--pts-dir", type=Path, metavar="DIR",
                        help="also write each face's points as a 300-W .pts file here: STEM.pts for an image with one face, "
                        "STEM_INDEX.pts for each face of an image with several; folder inputs keep their sub-folders")
    parser.add_argument("--heatmap-summary", action="store_true",
                        help="add each landmark's heatmap peak probability and the decoders' disagreement in pixels")
    parser.add_argument("--whole-image", action="store_true",
                        help="when no face is found, run the model on the whole image instead of writing an error line")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(handler=run_predict)
    return parser


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageInput:
    """One image to predict on.

    Attributes:
        path: the file.
        relative: the path relative to the folder it was found in (the file
            name for a file given directly), mirrored under ``--pts-dir``.
    """

    path: Path
    relative: Path


def find_images(inputs: Sequence[Path]) -> tuple[list[ImageInput], list[tuple[Path, str]]]:
    """Expand files and folders into images, in input order and sorted within each folder.

    Returns the images and ``(path, reason)`` for each input that is neither
    an image file nor a folder. A file given directly is used whatever its
    suffix; a folder contributes only files with one of ``IMAGE_SUFFIXES``.
    """
    images: list[ImageInput] = []
    problems: list[tuple[Path, str]] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(
                path for path in item.rglob("*") if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                problems.append((item, f"folder contains no {', '.join(IMAGE_SUFFIXES)} files"))
            images.extend(ImageInput(path, path.relative_to(item)) for path in found)
        elif item.is_file():
            images.append(ImageInput(item, Path(item.name)))
        else:
            problems.append((item, "file or folder not found"))
    return images, problems


# ---------------------------------------------------------------------------
# Decoding and face detection (DataLoader workers)
# ---------------------------------------------------------------------------


@dataclass
class PreparedFace:
    """One face box and its crop geometry."""

    box: list[float]
    source: str
    detector: str | None = None
    detection: list[float] | None = None
    geometry: Any = None


@dataclass
class PreparedImage:
    """A decoded image with its face crops, or the reason it could not be used."""

    index: int
    image: ImageInput
    size: tuple[int, int] | None = None
    notes: tuple[str, ...] = ()
    faces: list[PreparedFace] = field(default_factory=list)
    crops: Any = None
    error: str | None = None


class FaceCropDataset:
    """Decode an image, detect its faces and crop each one for the network.

    Item ``i`` is a :class:`PreparedImage` for ``images[i]``. A file that
    cannot be read, or an image without a face (unless ``whole_image``),
    gives an item with ``error`` set instead of raising, so one bad file does
    not stop a DataLoader.
    """

    def __init__(self, images: Sequence[ImageInput], input_size: int, whole_image: bool = False) -> None:
        self.images = list(images)
        self.input_size = int(input_size)
        self.whole_image = whole_image

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> PreparedImage:
        import cv2
        import numpy as np

        from explorer.core.geometry import DEFAULT_CONTEXT, crop_from_box
        from explorer.inference.detection import landmark_box
        from explorer.inference.predictor import WHOLE_IMAGE_CONTEXT, InputError, find_faces, load_upload

        item = self.images[index]
        prepared = PreparedImage(index=index, image=item)
        try:
            loaded = load_upload(item.path)
        except InputError as error:
            prepared.error = str(error)
            return prepared
        rgb = loaded.rgb
        prepared.size = (loaded.width, loaded.height)
        prepared.notes = loaded.notes

        # Every detected face, largest first, cropped as in training: around
        # the box that its 68 points would have, with the training context.
        boxes = []
        for face in find_faces(rgb):
            detection = [float(value) for value in face.as_array()]
            boxes.append((PreparedFace(box=[float(v) for v in landmark_box(face)], source="detector",
                                       detector=face.detector, detection=detection), DEFAULT_CONTEXT))
        if not boxes:
            if not self.whole_image:
                prepared.error = "no face found; pass --whole-image to run the model on the whole image"
                return prepared
            whole = [0.0, 0.0, loaded.width - 1.0, loaded.height - 1.0]
            boxes.append((PreparedFace(box=whole, source="whole image"), WHOLE_IMAGE_CONTEXT))

        crops = []
        for face, context in boxes:
            face.geometry = crop_from_box(np.asarray(face.box), self.input_size, context=context)
            crops.append(face.geometry.warp(rgb, border=cv2.BORDER_CONSTANT, border_value=(0, 0, 0)))
            prepared.faces.append(face)
        prepared.crops = np.stack(crops)
        return prepared


def _unchanged(item: PreparedImage) -> PreparedImage:
    return item


def _init_worker(worker_id: int) -> None:
    import cv2

    # Each worker detects faces in its own process, so OpenCV's own thread
    # pool would only compete with the other workers and the model.
    cv2.setNumThreads(1)


# ---------------------------------------------------------------------------
# Model batches
# ---------------------------------------------------------------------------


@dataclass
class PendingImage:
    """An image whose faces wait for the model.

    Once face ``i`` is predicted, ``results[i]`` is its JSON object and
    ``points[i]`` its (K, 2) points of the default decoder, unrounded.
    """

    prepared: PreparedImage
    results: list[dict[str, Any] | None] = field(default_factory=list)
    points: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.prepared.faces)
        self.points = [None] * len(self.prepared.faces)

    @property
    def done(self) -> bool:
        return all(result is not None for result in self.results)


def _round_points(points: Any) -> list[list[float]]:
    return [[round(float(x), COORDINATE_DECIMALS), round(float(y), COORDINATE_DECIMALS)] for x, y in points]


class BatchRunner:
    """Run one loaded checkpoint on stacked face crops and decode every heatmap with every decoder."""

    def __init__(self, loaded: Any, device: Any, heatmap_summary: bool) -> None:
        self.loaded = loaded
        self.device = device
        self.heatmap_summary = heatmap_summary

    def run(self, faces: Sequence[tuple[PendingImage, int]]) -> None:
        """Predict ``faces`` (pending image, face index) in one forward pass and store their results."""
        import numpy as np
        import torch

        from explorer.core.evaluation import DECODERS, decode
        from explorer.core.geometry import heatmap_to_image

        crops = np.stack([pending.prepared.crops[index] for pending, index in faces])
        with torch.inference_mode():
            images = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            logits = self.loaded.model(images).float()
            decoded = {
                name: decode(logits, name, temperature=self.loaded.temperature).double().cpu().numpy() for name in DECODERS
            }
            peaks = None
            if self.heatmap_summary:
                peaks = torch.softmax(logits.flatten(start_dim=2), dim=-1).amax(dim=-1).cpu().numpy()

        for row, (pending, index) in enumerate(faces):
            face = pending.prepared.faces[index]
            points = {name: heatmap_to_image(values[row], face.geometry, self.loaded.stride) for name, values in decoded.items()}
            result = self._face_result(pending.prepared, index, points)
            if peaks is not None:
                stacked = np.stack([points[name] for name in DECODERS])
                pairwise = np.linalg.norm(stacked[:, None] - stacked[None, :], axis=-1)
                result["heatmap"] = {
                    "peak_probability": [round(float(value), 5) for value in peaks[row]],
                    "disagreement_px": [round(float(value), COORDINATE_DECIMALS) for value in pairwise.max(axis=(0, 1))],
                }
            pending.results[index] = result
            pending.points[index] = points[self.loaded.decoder]

    def _face_result(self, prepared: PreparedImage, index: int, points: dict[str, Any]) -> dict[str, Any]:
        face = prepared.faces[index]
        result: dict[str, Any] = {
            "file": str(prepared.image.path),
            "face": index,
            "faces": len(prepared.faces) if face.source == "detector" else 0,
            "source": face.source,
            "detector": face.detector,
            "detection": [round(value, 2) for value in face.detection] if face.detection else None,
            "box": [round(value, 2) for value in face.box],
            "image_size": list(prepared.size),
            "decoder": self.loaded.decoder,
            "points": _round_points(points[self.loaded.decoder]),
            "decoders": {name: _round_points(values) for name, values in points.items()},
        }
        if prepared.notes:
            result["notes"] = list(prepared.notes)
        return result


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


class PtsWriter:
    """Write .pts files under a folder, one name per face, never overwriting a file of this run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written: set[Path] = set()

    def path_for(self, image: ImageInput, face: int, faces: int) -> Path:
        """Return ``STEM.pts`` (one face) or ``STEM_FACE.pts``, made unique within this run.

        When another input of this run already took that name (``a.jpg`` and
        ``a.png`` in one folder), the image suffix is kept (``a.png.pts``),
        then a counter is added.
        """
        parent = self.folder / image.relative.parent
        tail = "" if faces <= 1 else f"_{face}"
        candidates = [f"{image.relative.stem}{tail}.pts", f"{image.relative.name}{tail}.pts"]
        candidates += [f"{image.relative.name}{tail}.{count}.pts" for count in range(2, 1000)]
        for name in candidates:
            path = parent / name
            if path not in self.written:
                return path
        raise RuntimeError(f"more than 1000 inputs would write {parent / candidates[0]}; rename the images")

    def write(self, image: ImageInput, face: int, faces: int, points: Any) -> Path:
        from explorer.core.data import write_pts

        path = self.path_for(image, face, faces)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_pts(path, points)
        self.written.add(path)
        return path


@dataclass
class RunCounts:
    """Totals of one predict run, for the closing log line."""

    images: int = 0
    faces: int = 0
    no_face: int = 0
    unreadable: int = 0


def _emit(pending: PendingImage, stream: IO[str], pts: PtsWriter | None, counts: RunCounts) -> None:
    prepared = pending.prepared
    counts.images += 1
    if prepared.error is not None:
        line: dict[str, Any] = {"file": str(prepared.image.path), "error": prepared.error}
        if prepared.size is not None:
            # The image was read, so the error is that no face was found.
            line = {"file": str(prepared.image.path), "faces": 0, "image_size": list(prepared.size), "error": prepared.error}
            counts.no_face += 1
            logger.info("%s: %s", prepared.image.path, prepared.error)
        else:
            counts.unreadable += 1
            logger.warning("skipping %s: %s", prepared.image.path, prepared.error)
        stream.write(json.dumps(line) + "\n")
        return

    for index, (result, points) in enumerate(zip(pending.results, pending.points)):
        if pts is not None:
            result["pts"] = str(pts.write(prepared.image, index, len(pending.results), points))
        stream.write(json.dumps(result) + "\n")
        counts.faces += 1


def _check_outputs(out: str, pts_dir: Path | None) -> None:
    """Exit with an error when --out is a folder or --out or --pts-dir lies under a file, before the model loads."""
    from explorer.cli import check_output_file, check_output_folder

    if out != "-":
        check_output_file(Path(out), "--out", example="faces.jsonl")
    if pts_dir is not None:
        check_output_folder(pts_dir, "--pts-dir")


def _open_output(target: str) -> IO[str]:
    if target == "-":
        return sys.stdout
    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8")
    except OSError as error:
        raise SystemExit(f"error: cannot write --out {target}: {error.strerror or error}") from error


# ---------------------------------------------------------------------------
# Command
# ---------------------------------------------------------------------------


def _batches_of(buffer: list[tuple[PendingImage, int]], size: int) -> Iterator[list[tuple[PendingImage, int]]]:
    while len(buffer) >= size:
        batch, buffer[:] = buffer[:size], buffer[size:]
        yield batch


def run_predict(args: argparse.Namespace) -> int:
    """Run ``predict`` as parsed by :func:`add_predict_command`; return the exit status."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from explorer.core.checkpoints import CheckpointError
    from explorer.inference.predictor import Predictor

    if args.batch_size < 1:
        raise SystemExit(f"error: --batch-size must be at least 1, got {args.batch_size}")
    if args.workers < 0:
        raise SystemExit(f"error: --workers must be 0 or more, got {args.workers}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda was requested but CUDA is not available; pass --device cpu")

    _check_outputs(args.out, args.pts_dir)

    images, problems = find_images(args.inputs)
    if not images:
        details = "; ".join(f"{path}: {reason}" for path, reason in problems)
        raise SystemExit(f"error: no images to predict on ({details})")

    checkpoint = args.checkpoint or default_checkpoint()
    try:
        predictor = Predictor([checkpoint], device=args.device)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from error
    loaded = next(iter(predictor.models.values()))
    logger.info(
        "predicting on %d images with %s (%s decoder) on %s, batches of %d faces",
        len(images), checkpoint, loaded.decoder, predictor.device_name, args.batch_size,
    )

    dataset = FaceCropDataset(images, loaded.input_size, whole_image=args.whole_image)
    # Workers are spawned, not forked: a process forked after OpenCV has
    # started its thread pool (as a caller that detected faces before may
    # have done) can deadlock in its first OpenCV call.
    loader = DataLoader(
        dataset, batch_size=None, num_workers=args.workers, collate_fn=_unchanged,
        worker_init_fn=_init_worker if args.workers else None,
        multiprocessing_context="spawn" if args.workers else None,
    )
    runner = BatchRunner(loaded, predictor.device, args.heatmap_summary)
    pts = PtsWriter(args.pts_dir) if args.pts_dir else None
    counts = RunCounts()

    stream = _open_output(args.out)
    try:
        for path, reason in problems:
            logger.warning("skipping %s: %s", path, reason)
            stream.write(json.dumps({"file": str(path), "error": reason}) + "\n")
            counts.unreadable += 1

        # Images wait in input order until all their faces are predicted, so
        # the lines come out in input order whatever the batch boundaries.
        queue: deque[PendingImage] = deque()
        waiting: list[tuple[PendingImage, int]] = []
        bar = tqdm(total=len(images), desc="predicting", unit="image", disable=args.no_progress)

        def emit_finished() -> None:
            while queue and queue[0].done:
                _emit(queue.popleft(), stream, pts, counts)
                bar.update(1)

        for prepared in loader:
            pending = PendingImage(prepared)
            queue.append(pending)
            waiting.extend((pending, index) for index in range(len(prepared.faces)))
            for batch in _batches_of(waiting, args.batch_size):
                runner.run(batch)
            emit_finished()
        if waiting:
            runner.run(waiting)
        emit_finished()
        bar.close()
    finally:
        if stream is not sys.stdout:
            stream.close()

    logger.info(
        "done: %d images, %d faces written to %s; %d images without a face, %d inputs unreadable",
        counts.images, counts.faces, args.out, counts.no_face, counts.unreadable,
    )
    if counts.faces == 0 and counts.no_face == 0:
        logger.error("no input could be read")
        return 1
    return 0
