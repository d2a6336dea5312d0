"""Run trained heatmap models on one photo: image loading, face choice and decoding.

The app and the command line both go through this module:

* :func:`load_upload` turns an uploaded file into an RGB ``uint8`` array, or
  raises :class:`InputError` with a message that names the problem and the fix;
* :func:`choose_face` picks the face box (a detected face, a typed box or the
  whole image);
* :class:`Predictor` loads one or more checkpoints once and returns, per model,
  the heatmap logits, the points of every decoder in image pixels, the crop
  geometry and the crop itself.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from explorer.core.checkpoints import CheckpointError, load_model
from explorer.core.data import crop_to_tensor
from explorer.core.evaluation import DECODERS, decode, default_decoder
from explorer.core.geometry import DEFAULT_CONTEXT, CropGeometry, crop_from_box, heatmap_to_image
from explorer.core.landmarks import LandmarkScheme, scheme_for_count
from explorer.core.models import HeatmapNet
from explorer.inference.detection import FaceBox, detect_faces, landmark_box

logger = logging.getLogger(__name__)

__all__ = [
    "InputError",
    "LoadedImage",
    "FaceChoice",
    "ModelOutput",
    "LoadedModel",
    "Predictor",
    "load_upload",
    "parse_box",
    "choose_face",
    "MAX_PIXELS",
    "MIN_SIDE",
    "MIN_BOX_SIDE",
    "MAX_BOX_FACTOR",
]

# Largest decoded image accepted, in pixels (width x height). 40 megapixels is
# an estimate of what a phone camera writes at its default settings (12-24 MP
# is common), with room to spare. One decoded RGB copy then takes 120 MB.
MAX_PIXELS = 40_000_000

# Smallest accepted image side, in pixels. A face in a smaller image has too
# few pixels for a 68-point annotation to mean anything.
MIN_SIDE = 32

# Face detection runs on a copy whose longer side is at most this many pixels,
# because the Haar cascades' cost grows with the pixel count. One cascade pass
# on a 1-megapixel photo took about 0.25 s on one core of the benchmark machine.
# A face a tenth of the photo wide is then 64 pixels wide, above the cascades'
# 24-pixel minimum; smaller faces need a typed box.
DETECTION_MAX_SIDE = 640

# Formats that people upload as photos, as Pillow names them. Image.open
# tries only these decoders, so an upload never reaches a rarely used one.
# Pillow's EPS plugin, for example, runs Ghostscript on the file when it is
# installed. The JPEG decoder also opens the multi-picture JPEGs (MPO) of
# phone cameras.
PIL_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
SUPPORTED_FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF or PPM"

# Minimum longer side of a typed face box, in image pixels. The network's
# input is the crop around the box at 128 pixels, so a smaller box would be
# upscaled more than 12 times, leaving no face to recognise.
MIN_BOX_SIDE = 8

# Largest longer side of a typed face box, as a multiple of the photo's longer
# side. A face cut off by the photo's edges can have a box larger than the
# photo, but a box many times larger contains no face worth showing.
MAX_BOX_FACTOR = 4

# EXIF orientation values (TIFF tag 274): 1 is upright, 2-8 flip or rotate.
# Pillow's exif_transpose ignores any other value.
EXIF_ORIENTATIONS = range(2, 9)

# Crop side / box side when the whole image is used because no face was found:
# 1.0 keeps the crop equal to the image's longer side.
WHOLE_IMAGE_CONTEXT = 1.0


class InputError(ValueError):
    """An uploaded file or a typed value cannot be used. The message names the value and the fix."""


# ---------------------------------------------------------------------------
# Image loading
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedImage:
    """A decoded upload.

    Attributes:
        rgb: (H, W, 3) uint8 RGB pixels, in display orientation.
        format: the file format PIL detected, such as ``"JPEG"``.
        notes: conversions applied on the way, for the user (EXIF rotation,
            alpha composited on white, first GIF frame, ...).
    """

    rgb: np.ndarray
    format: str
    notes: tuple[str, ...] = ()

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


def _open_source(source: str | Path | bytes | bytearray) -> tuple[Any, str]:
    """Return a binary stream or path for PIL and a name for messages."""
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise InputError("the uploaded image is empty (0 bytes); upload a photo in " + SUPPORTED_FORMATS)
        return io.BytesIO(bytes(source)), "the uploaded image"

    path = Path(source)
    name = path.name
    if not path.is_file():
        raise InputError(f"image file {name!r} was not found; upload the photo again")
    if path.stat().st_size == 0:
        raise InputError(f"{name!r} is empty (0 bytes); upload a photo in {SUPPORTED_FORMATS}")
    return path, repr(name)


def _to_rgb(image: Image.Image, name: str, notes: list[str]) -> np.ndarray:
    """Convert any PIL mode to (H, W, 3) uint8 RGB."""
    mode = image.mode

    # Transparent pixels are shown on white, as image viewers do.
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        notes.append("transparent pixels composited on white")
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))

    # 16-bit and 32-bit greyscale: PIL's convert("RGB") clips values above 255,
    # so scale the full range into 8 bits instead.
    if mode.startswith("I") or mode == "F":
        values = np.asarray(image).astype(np.float64)
        if mode == "F":
            finite = np.isfinite(values)
            low = float(values[finite].min()) if finite.any() else 0.0
            high = float(values[finite].max()) if finite.any() else 0.0
            values = np.where(finite, values, low)
            scaled = (values - low) / max(high - low, 1e-12) * 255.0
            notes.append("floating-point image rescaled to 8 bits")
        else:
            maximum = 255.0 if values.max(initial=0) <= 255 else 65535.0
            scaled = values * (255.0 / maximum)
            if maximum > 255:
                notes.append("16-bit image reduced to 8 bits")
        grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)

    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode in ("L", "1"):
        notes.append("greyscale image")
    if mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise InputError(f"{name} has an unsupported pixel layout ({mode}); save it as an 8-bit RGB JPEG or PNG")
    return array


def load_upload(
    source: str | Path | bytes | bytearray,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> LoadedImage:
    """Decode an uploaded photo into RGB, rejecting files that are not usable photos.

    Checks, in this order:

    1. the file exists and is not empty;
    2. PIL recognises the format;
    3. the size declared in the header is at most ``max_pixels``. This runs
       before any pixel is decoded, so a small file that declares a huge image
       costs nothing;
    4. the pixel data is complete;
    5. each side is at least ``min_side`` pixels after the EXIF orientation is applied.

    Conversions: the EXIF orientation tag is applied, animated images keep
    their first frame, transparency is composited on white, and greyscale,
    16-bit, palette and CMYK images become 8-bit RGB.

    Raises:
        InputError: naming the file and what to upload instead.
    """
    stream, name = _open_source(source)

    # PIL reads only the header in Image.open. Its own decompression-bomb
    # guard raises above 2 x Image.MAX_IMAGE_PIXELS and warns above it; both
    # become the same InputError as the explicit check below.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream, formats=PIL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        declared = re.search(r"\((\d+) pixels\)", str(error))
        size = f"{int(declared.group(1)) / 1e6:,.0f} megapixels" if declared else "more pixels than PIL accepts"
        raise InputError(
            f"{name} declares an image of {size}, above the limit of {max_pixels / 1e6:.0f} megapixels "
            "(it may be a decompression bomb); upload a smaller photo"
        ) from None
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image that can be read; upload a photo in {SUPPORTED_FORMATS}") from None
    except OSError as error:
        raise InputError(f"{name} could not be read ({error}); upload the photo again") from None

    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise InputError(
                f"{name} is {width} x {height} pixels ({width * height / 1e6:.1f} megapixels), above the limit "
                f"of {max_pixels / 1e6:.0f} megapixels; downscale it before uploading"
            )
        if width < 1 or height < 1:
            raise InputError(f"{name} declares a size of {width} x {height} pixels; upload a real photo")

        notes: list[str] = []
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            image.seek(0)
            notes.append(f"first of {frames} frames used")

        # load() decodes the pixels; truncated or corrupt data fails here.
        try:
            image.load()
            orientation = image.getexif().get(0x0112, 1)
            oriented = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise InputError(
                f"{name} is damaged or truncated ({error}); export or download the photo again"
            ) from None
        if orientation in EXIF_ORIENTATIONS:
            notes.append(f"rotated by its EXIF orientation tag ({orientation})")

        rgb = _to_rgb(oriented, name, notes)
        file_format = image.format or "unknown"

    height, width = rgb.shape[:2]
    if min(width, height) < min_side:
        raise InputError(
            f"{name} is {width} x {height} pixels; each side must be at least {min_side} pixels for a face to be visible"
        )
    return LoadedImage(rgb=np.ascontiguousarray(rgb, dtype=np.uint8), format=file_format, notes=tuple(notes))


# ---------------------------------------------------------------------------
# Face choice
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceChoice:
    """The face box that a prediction crops around.

    Attributes:
        box: ``[x0, y0, x1, y1]`` in image pixels, the box of the 68 points
            (a detection is converted with :func:`landmark_box`).
        context: crop side / longer box side passed to :func:`crop_from_box`.
        source: ``"detector"``, ``"user box"`` or ``"whole image"``.
        faces: every detection, largest first.
        index: the index of the chosen detection, or None.
    """

    box: np.ndarray
    context: float
    source: str
    faces: tuple[FaceBox, ...] = ()
    index: int | None = None


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BOX_PATTERN = re.compile(rf"^\s*\[?\s*({_NUMBER})\s*[, ]\s*({_NUMBER})\s*[, ]\s*({_NUMBER})\s*[, ]\s*({_NUMBER})\s*\]?\s*$")


def parse_box(text: str | None, image_width: int, image_height: int) -> np.ndarray | None:
    """Parse a typed box ``"x0, y0, x1, y1"`` in image pixels; empty text returns None.

    The box must overlap the image, and its longer side must be at least
    ``MIN_BOX_SIDE`` pixels and at most ``MAX_BOX_FACTOR`` times the image's
    longer side.
    """
    if text is None or not str(text).strip():
        return None
    quoted = _shorten(str(text))
    match = _BOX_PATTERN.match(str(text))
    if match is None:
        raise InputError(
            f"box {quoted!r} is not four numbers; type it as 'x0, y0, x1, y1' in image pixels, "
            "for example '120, 80, 360, 330'"
        )
    box = np.array([float(value) for value in match.groups()], dtype=np.float64)
    if not np.all(np.isfinite(box)):
        raise InputError(f"box {quoted!r} contains a value that is not finite; type four pixel coordinates")
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box {quoted!r} has x1 not above x0 or y1 not above y0; type it as 'x0, y0, x1, y1' from the top-left to the bottom-right corner")
    if x1 < 0 or y1 < 0 or x0 > image_width - 1 or y0 > image_height - 1:
        raise InputError(
            f"box {quoted!r} lies outside the {image_width} x {image_height} image; type a box that covers the face"
        )

    # Each coordinate is finite, but a difference can still overflow to inf.
    with np.errstate(over="ignore"):
        width, height = x1 - x0, y1 - y0
    side = max(width, height)
    size = f"{width:g} x {height:g} pixels" if np.isfinite(side) else "too large to measure"
    if side < MIN_BOX_SIDE:
        raise InputError(
            f"box {quoted!r} is {size}; its longer side must be at least "
            f"{MIN_BOX_SIDE} pixels, so type a box around the whole face"
        )
    largest = MAX_BOX_FACTOR * max(image_width, image_height)
    if side > largest:
        raise InputError(
            f"box {quoted!r} is {size}, larger than {MAX_BOX_FACTOR} times the "
            f"{image_width} x {image_height} image (at most {largest} pixels a side); type a box around the face"
        )
    return box


def _shorten(text: str, limit: int = 80) -> str:
    """Cut typed text to ``limit`` characters for an error message."""
    return text if len(text) <= limit else text[: limit - 1] + "…"




def find_faces(rgb: np.ndarray, max_side: int = DETECTION_MAX_SIDE) -> list[FaceBox]:
    """Detect faces on a copy downscaled to ``max_side``, returning boxes in full-image pixels, largest first.

    Thread-safe, because :func:`detect_faces` runs one detection at a time.
    """
    height, width = rgb.shape[:2]
    factor = min(1.0, max_side / max(height, width))
    if factor >= 1.0:
        return detect_faces(rgb)

    small = cv2.resize(rgb, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA)
    scale_x = width / small.shape[1]
    scale_y = height / small.shape[0]
    faces = detect_faces(small)
    return [FaceBox(face.x0 * scale_x, face.y0 * scale_y, face.x1 * scale_x, face.y1 * scale_y, face.detector) for face in faces]


def choose_face(
    rgb: np.ndarray,
    face_index: int | None = 0,
    box_text: str | None = None,
    faces: Sequence[FaceBox] | None = None,
) -> FaceChoice:
    """Choose the box to crop: a typed box, else detection number ``face_index``, else the whole image.

    ``faces`` reuses an earlier detection on the same image.

    Raises:
        InputError: for a malformed box or a face index outside the detections.
    """
    height, width = rgb.shape[:2]
    if faces is None:
        faces = find_faces(rgb)
    faces = tuple(faces)

    box = parse_box(box_text, width, height)
    if box is not None:
        return FaceChoice(box=box, context=DEFAULT_CONTEXT, source="user box", faces=faces)

    if not faces:
        whole = np.array([0.0, 0.0, width - 1.0, height - 1.0])
        return FaceChoice(box=whole, context=WHOLE_IMAGE_CONTEXT, source="whole image", faces=faces)

    index = 0 if face_index is None else face_index
    if isinstance(index, float):
        if not index.is_integer():
            raise InputError(f"face index {index} is not a whole number; choose 0..{len(faces) - 1}")
        index = int(index)
    if not 0 <= index < len(faces):
        raise InputError(
            f"face {index} was requested but {len(faces)} face(s) were found; choose a face index 0..{len(faces) - 1}"
        )
    return FaceChoice(
        box=landmark_box(faces[index]), context=DEFAULT_CONTEXT, source="detector", faces=faces, index=index
    )


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A checkpoint loaded for inference.

    Attributes:
        name: the key the app uses (the card's objective, or the file stem).
        path: the ``.safetensors`` file.
        model: the network in eval mode on the predictor's device.
        card: the checkpoint's card.
        decoder: the decoder that matches the training objective.
        temperature: the soft-argmax temperature from the card.
    """

    name: str
    path: Path
    model: HeatmapNet
    card: dict[str, Any]
    decoder: str
    temperature: float

    @property
    def input_size(self) -> int:
        return int(self.model.config["input_size"])

    @property
    def stride(self) -> int:
        return int(self.model.config["stride"])

    @property
    def num_landmarks(self) -> int:
        return int(self.model.config["num_landmarks"])

    @property
    def objective(self) -> str:
        return str(self.card.get("objective", "unknown"))

    @property
    def validation_nme(self) -> float | None:
        value = (self.card.get("validation") or {}).get("nme")
        return float(value) if isinstance(value, (int, float)) else None


@dataclass
class ModelOutput:
    """One model's prediction on one face.

    Attributes:
        name: the model's key in :attr:`Predictor.models`.
        logits: (K, H, W) float32 heatmap logits.
        heatmap_points: decoder name -> (K, 2) float64 points in heatmap pixels.
        points: decoder name -> (K, 2) float64 points in image pixels.
        geometry: the image -> crop map.
        crop: (S, S, 3) uint8 RGB crop the network saw.
        stride: crop pixels per heatmap pixel.
        decoder: the model's default decoder.
    """

    name: str
    logits: np.ndarray
    heatmap_points: dict[str, np.ndarray]
    points: dict[str, np.ndarray]
    geometry: CropGeometry
    crop: np.ndarray
    stride: int
    decoder: str

    @property
    def default_points(self) -> np.ndarray:
        """(K, 2) image points of the model's default decoder."""
        return self.points[self.decoder]

    def probabilities(self) -> np.ndarray:
        """(K, H, W) softmax of each heatmap over its pixels."""
        flat = self.logits.reshape(self.logits.shape[0], -1).astype(np.float64)
        flat = np.exp(flat - flat.max(axis=1, keepdims=True))
        flat /= flat.sum(axis=1, keepdims=True)
        return flat.reshape(self.logits.shape)


def describe_device(device: torch.device) -> str:
    """Return a short device description such as ``"CPU"`` or ``"CUDA (NVIDIA H200)"``."""
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    return device.type.upper()


class Predictor:
    """Load heatmap checkpoints once and run them on photos.

    Args:
        checkpoints: ``{name: path}`` or a list of paths (named by the card's
            objective, or the file stem when two share an objective).
        device: ``"cuda"``, ``"cpu"`` or None for CUDA when available, else CPU.

    Raises:
        CheckpointError: a file is missing or invalid, or the models disagree
            on the number of landmarks (the message names the files).
    """

    def __init__(
        self,
        checkpoints: Mapping[str, str | Path] | Sequence[str | Path],
        device: str | torch.device | None = None,
    ) -> None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.device_name = describe_device(self.device)

        if isinstance(checkpoints, Mapping):
            named = [(str(name), Path(path)) for name, path in checkpoints.items()]
        else:
            named = [(None, Path(path)) for path in checkpoints]
        if not named:
            raise CheckpointError("no checkpoint was given; pass at least one .safetensors file")

        self.models: dict[str, LoadedModel] = {}
        for name, path in named:
            loaded = self._load(name, path)
            self.models[loaded.name] = loaded

        # Every model must describe the same landmarks, or the app could not
        # put their points side by side.
        counts = {loaded.path.name: loaded.num_landmarks for loaded in self.models.values()}
        if len(set(counts.values())) > 1:
            listing = ", ".join(f"{file} has {count}" for file, count in counts.items())
            raise CheckpointError(
                f"the checkpoints predict different numbers of landmarks ({listing}); "
                "load checkpoints trained on the same landmark scheme"
            )
        count = next(iter(counts.values()))
        try:
            self.scheme: LandmarkScheme = scheme_for_count(count)
        except ValueError as error:
            raise CheckpointError(f"{next(iter(counts))}: {error}") from None

    def _load(self, name: str | None, path: Path) -> LoadedModel:
        model, card = load_model(path, self.device)
        objective = str(card.get("objective", ""))
        if name is None:
            name = objective if objective and objective not in self.models else path.stem
        if name in self.models:
            raise CheckpointError(f"{path}: a model named {name!r} is already loaded from {self.models[name].path}")

        decoder = str(card.get("decoder") or default_decoder(objective))
        if decoder not in DECODERS:
            raise CheckpointError(f"{path}: the card's decoder {decoder!r} is not one of {', '.join(DECODERS)}")
        temperature = float(card.get("temperature") or 1.0)
        if not temperature > 0:
            raise CheckpointError(f"{path}: the card's temperature {temperature} must be > 0")
        return LoadedModel(name=name, path=path, model=model, card=card, decoder=decoder, temperature=temperature)

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def model(self, name: str) -> LoadedModel:
        """Return the loaded model ``name``; raise InputError naming the choices otherwise."""
        if name not in self.models:
            raise InputError(f"model {name!r} is not loaded; choose one of {', '.join(self.models)}")
        return self.models[name]

    @torch.inference_mode()
    def predict(
        self,
        rgb: np.ndarray,
        box: np.ndarray,
        context: float | None = None,
        names: Sequence[str] | None = None,
    ) -> dict[str, ModelOutput]:
        """Run the models on the face in ``box`` of an RGB image.

        Args:
            rgb: (H, W, 3) uint8 image.
            box: ``[x0, y0, x1, y1]`` box of the landmarks, in image pixels.
            context: crop side / longer box side; None uses the training default.
            names: the models to run; None runs all of them.

        Returns:
            ``{name: ModelOutput}`` in the order of ``names``.
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise InputError(f"expected an (H, W, 3) uint8 RGB image, got shape {rgb.shape} and dtype {rgb.dtype}")
        context = DEFAULT_CONTEXT if context is None else float(context)
        selected = self.names if names is None else list(names)
        outputs: dict[str, ModelOutput] = {}
        crops: dict[int, tuple[CropGeometry, np.ndarray, torch.Tensor]] = {}

        for name in selected:
            loaded = self.model(name)

            # Models with the same input size share one crop.
            if loaded.input_size not in crops:
                geometry = crop_from_box(box, loaded.input_size, context=context)
                crop = geometry.warp(rgb, border=cv2.BORDER_CONSTANT, border_value=(0, 0, 0))
                tensor = crop_to_tensor(crop)[None].to(self.device)
                crops[loaded.input_size] = (geometry, crop, tensor)
            geometry, crop, tensor = crops[loaded.input_size]

            logits = loaded.model(tensor)
            heatmap_points = {}
            image_points = {}
            for decoder in DECODERS:
                decoded = decode(logits, decoder, temperature=loaded.temperature)[0].double().cpu().numpy()
                heatmap_points[decoder] = decoded
                image_points[decoder] = heatmap_to_image(decoded, geometry, loaded.stride)

            outputs[name] = ModelOutput(
                name=name,
                logits=logits[0].float().cpu().numpy(),
                heatmap_points=heatmap_points,
                points=image_points,
                geometry=geometry,
                crop=crop,
                stride=loaded.stride,
                decoder=loaded.decoder,
            )
        return outputs

