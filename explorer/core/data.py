"""Face landmark data: .pts and WFLW readers, folder scans, the train/val split and the training dataset.

A data folder in 300-W layout contains pairs ``NAME.jpg`` (or ``.jpeg``,
``.png``, ``.ppm``) + ``NAME.pts`` in any sub-folders. Every reader validates
its input and raises an error that names the file, the line where there is
one, and the fix:

* :class:`AnnotationError` for an invalid annotation file,
* :class:`ImageError` for a missing, unreadable or truncated image,
* :class:`DatasetError` for a folder scan, listing every invalid file at once.
"""

from __future__ import annotations

import codecs
import io
import logging
import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import BinaryIO

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from explorer.core.geometry import DEFAULT_CONTEXT, box_from_points, crop_from_box
from explorer.core.landmarks import LandmarkScheme, SCHEMES
from explorer.core.transforms import Augmentation

logger = logging.getLogger(__name__)

# A 68-point .pts file is about 1.5 KB. Anything over 1 MB is not an
# annotation, and rejecting it before reading keeps hostile uploads cheap.
MAX_PTS_BYTES = 1_000_000

# Upper bound on the points of one face. The built-in schemes have at most
# 98 points (WFLW), so the bound leaves room for denser custom schemes.
MAX_POINTS = 10_000

# Images above these limits are rejected before they are decoded.
MAX_IMAGE_BYTES = 100_000_000
MAX_IMAGE_PIXELS = 100_000_000

# A WFLW list line is roughly 2 KB (an estimate: 206 numbers of about 9
# characters), so this cap leaves room for over 100 000 faces.
MAX_LIST_BYTES = 256_000_000

# The WFLW release lists 7 500 training and 2 500 test faces, one per line.
# The line cap bounds the time spent on a file of blank lines.
MAX_LIST_LINES = 1_000_000

# Points are returned as float32, so larger magnitudes would become infinite.
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Maximum number of characters of an invalid value that an error message quotes.
MAX_QUOTED_CHARS = 80

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm")

# A point may lie outside its image (occluded jaws often do), but not by more
# than this fraction of the image size beyond a border.
OUTSIDE_MARGIN = 0.5

VALIDATION_EVERY = 10
SPLIT_RULE = (
    "val = every 10th face (index % 10 == 0) in sorted relative-path order "
    "across the whole data root; train = the rest"
)

WFLW_ATTRIBUTES = ("pose", "expression", "illumination", "make_up", "occlusion", "blur")


class AnnotationError(ValueError):
    """An annotation file is missing or invalid.

    Attributes:
        path: the file (or the ``source`` name of parsed text).
        line: 1-based line number of the problem, or None for the whole file.
        reason: the message without the location.
    """

    def __init__(self, message: str, path: str | Path, line: int | None = None) -> None:
        location = f"{path}, line {line}" if line is not None else f"{path}"
        super().__init__(f"{location}: {message}")
        self.path = path
        self.line = line
        self.reason = message


class ImageError(ValueError):
    """An image file is missing, unreadable or truncated.

    Attributes:
        path: the image file.
        reason: the message without the path.
    """

    def __init__(self, message: str, path: str | Path) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


@dataclass(frozen=True)
class FileProblem:
    """One invalid file found by a folder scan."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class DatasetError(ValueError):
    """A data folder contains invalid files. ``problems`` lists every one of them."""

    def __init__(self, message: str, problems: Sequence[FileProblem] = ()) -> None:
        self.problems = list(problems)
        details = "".join(f"\n  - {problem}" for problem in self.problems)
        super().__init__(message + details)


@dataclass
class FaceRecord:
    """One annotated face.

    Attributes:
        image_path: the image file.
        points: (K, 2) float32 landmark positions (x, y) in image pixels.
        name: the face's id, the image path relative to the data root in
            POSIX form, without suffix (``afw/1051618982_1``). WFLW faces add
            ``#N``, the face's number in its image.
        source: the folder relative to the data root (``helen/trainset``, or
            ``.`` for the root itself).
        image_size: (width, height) in pixels, when the reader looked at the image.
        box: [x0, y0, x1, y1] face box of the annotation list (WFLW), else None.
        attributes: per-face flags of the annotation list (WFLW), else None.
    """

    image_path: Path
    points: np.ndarray
    name: str
    source: str
    image_size: tuple[int, int] | None = None
    box: np.ndarray | None = None
    attributes: dict[str, int] | None = field(default=None)


# --------------------------------------------------------------------------
# .pts annotations
# --------------------------------------------------------------------------


def _parse_header_count(value: str, source: str | Path, line: int) -> int:
    try:
        count = int(value)
    except ValueError:
        # int() also rejects strings of more than 4300 digits (Python 3.11+).
        raise AnnotationError(f"n_points must be an integer, got {value[:MAX_QUOTED_CHARS]!r}", source, line) from None
    if count < 0:
        raise AnnotationError(f"n_points is negative ({count}); it must be the number of points", source, line)
    if count > MAX_POINTS:
        raise AnnotationError(f"n_points is {count}, above the limit of {MAX_POINTS} points per face", source, line)
    return count


def _parse_point(text: str, source: str | Path, line: int) -> tuple[float, float]:
    # maxsplit bounds the work on a long line of many values.
    values = text.split(maxsplit=2)
    if len(values) != 2:
        count = "more than 2" if len(values) > 2 else str(len(values))
        raise AnnotationError(
            f"expected 2 values 'x y' per point line, got {count}: {text[:MAX_QUOTED_CHARS]!r}", source, line
        )
    try:
        x, y = float(values[0]), float(values[1])
    except ValueError:
        raise AnnotationError(f"point coordinates must be numbers, got {text[:MAX_QUOTED_CHARS]!r}", source, line) from None
    if not (math.isfinite(x) and math.isfinite(y)):
        raise AnnotationError(f"point coordinates must be finite, got {text[:MAX_QUOTED_CHARS]!r}", source, line)
    if abs(x) > FLOAT32_MAX or abs(y) > FLOAT32_MAX:
        raise AnnotationError(
            f"point coordinates must be at most {FLOAT32_MAX:.4g} in magnitude (float32), got {text[:MAX_QUOTED_CHARS]!r}",
            source,
            line,
        )
    return x, y


def parse_pts_text(
    text: str | bytes,
    source: str | Path = "<text>",
    expected_count: int | None = None,
) -> np.ndarray:
    """Parse the text of a .pts file.

    Accepts the 300-W layout (``version: 1``, ``n_points: K``, then K ``x y``
    lines between ``{`` and ``}``) and a bare list of ``x y`` lines. Blank
    lines are ignored.

    Args:
        text: the file content; bytes must be UTF-8 (ASCII in practice). A
            leading byte order mark, as some Windows editors write, is skipped.
        source: a name for error messages, such as the uploaded file's name.
        expected_count: when given, the number of points the file must have.

    Returns:
        (K, 2) float32 points (x, y).

    Raises:
        AnnotationError: naming ``source``, the line and what to fix.
    """
    # Binary junk shows up as undecodable bytes or NUL characters.
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise AnnotationError(
                f"not a text file (invalid UTF-8 at byte {error.start}); expected a 300-W .pts file", source
            ) from None
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise AnnotationError("not a text file (contains NUL bytes); expected a 300-W .pts file", source)

    header_count: int | None = None
    header_line: int | None = None
    has_header = False
    opened_at: int | None = None
    closed_at: int | None = None
    points: list[tuple[float, float]] = []

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue

        # Anything after the closing brace is a mistake (two files pasted together).
        if closed_at is not None:
            raise AnnotationError(f"unexpected content after the closing '}}' of line {closed_at}", source, number)

        # Header keys come before the opening brace and the first point.
        key, separator, value = line.partition(":")
        if separator and not points and opened_at is None:
            key = key.strip().lower()
            if key == "version":
                has_header = True
                continue
            if key == "n_points":
                if header_line is not None:
                    raise AnnotationError(f"n_points is given twice (lines {header_line} and {number})", source, number)
                has_header = True
                header_count = _parse_header_count(value.strip(), source, number)
                header_line = number
                continue
            raise AnnotationError(
                f"unknown header key {key[:MAX_QUOTED_CHARS]!r}; expected 'version' or 'n_points'", source, number
            )

        if line == "{":
            if opened_at is not None or points:
                raise AnnotationError("unexpected '{'; a .pts file has one '{' before its points", source, number)
            opened_at = number
            continue
        if line == "}":
            if opened_at is None:
                raise AnnotationError("'}' without an opening '{'", source, number)
            closed_at = number
            continue

        if has_header and opened_at is None:
            raise AnnotationError("points must follow a '{' line after the header", source, number)
        points.append(_parse_point(line, source, number))
        if len(points) > MAX_POINTS:
            raise AnnotationError(f"more than {MAX_POINTS} points; this is not a face annotation", source, number)

    # A file that opens its point list must also close it.
    if opened_at is not None and closed_at is None:
        raise AnnotationError(f"missing the closing '}}' for the '{{' of line {opened_at}", source)
    if has_header and opened_at is None:
        raise AnnotationError("the header must be followed by '{', the points and '}'", source)

    if header_count is not None and header_count != len(points):
        raise AnnotationError(
            f"n_points is {header_count} but the file has {len(points)} point lines; "
            "fix n_points or the point list",
            source,
            header_line,
        )
    if not points:
        raise AnnotationError("the file contains no points", source)
    if expected_count is not None and len(points) != expected_count:
        raise AnnotationError(
            f"has {len(points)} points, expected {expected_count}; "
            "check that the file uses the same landmark scheme as the rest of the data",
            source,
        )
    return np.asarray(points, dtype=np.float32)


def read_pts(path: str | Path, expected_count: int | None = None) -> np.ndarray:
    """Read a .pts file into (K, 2) float32 points. See :func:`parse_pts_text` for the format.

    Files larger than ``MAX_PTS_BYTES`` are rejected before they are read.
    """
    path = Path(path)
    if not _is_file(path):
        raise AnnotationError("annotation file not found", path)
    data = _read_capped(path, MAX_PTS_BYTES, "a .pts file; it is not a landmark annotation")
    return parse_pts_text(data, source=path, expected_count=expected_count)


def _read_capped(path: Path, limit: int, kind: str) -> bytes:
    """Read at most ``limit`` bytes of ``path``, raising AnnotationError for larger or unreadable files."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise AnnotationError(f"file is {size} bytes, above the {limit}-byte limit for {kind}", path)

        # Read one byte more than stat() reported, which shows whether the file
        # grew since, and then up to one byte over the cap. read(n) allocates
        # n bytes at once, so asking for the cap first would cost its size.
        with path.open("rb") as handle:
            data = handle.read(size + 1)
            if len(data) > size:
                data += handle.read(limit + 1 - len(data))
    except OSError as error:
        raise AnnotationError(f"cannot read the file ({error.strerror or error})", path) from None
    if len(data) > limit:
        raise AnnotationError(f"file is larger than the {limit}-byte limit for {kind}", path)
    return data


def _is_file(path: Path) -> bool:
    # Path.is_file() raises for some errors, such as a name longer than the
    # file system allows (ENAMETOOLONG), instead of returning False.
    try:
        return path.is_file()
    except OSError:
        return False


def write_pts(path: str | Path, points: np.ndarray | torch.Tensor) -> None:
    """Write (K, 2) points as a 300-W .pts file with a ``version``/``n_points`` header."""
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        raise ValueError(f"points must have shape (K, 2) with K > 0, got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("points contain NaN or infinite values; a .pts file needs finite coordinates")

    # Six decimals keep float32 coordinates of images up to 10^4 px exact.
    lines = ["version: 1", f"n_points: {len(points)}", "{"]
    lines += [f"{x:.6f} {y:.6f}" for x, y in points]
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="ascii")


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------


def _jpeg_size(handle: BinaryIO) -> tuple[int, int]:
    # Walk the marker segments up to the first start-of-frame (SOFn) marker,
    # which stores the height and width. Markers C4 (DHT), C8 (JPG) and
    # CC (DAC) lie in the C0-CF range but do not start a frame.
    handle.seek(2)
    for _ in range(10_000):
        prefix = handle.read(1)
        if prefix != b"\xff":
            raise ValueError("corrupt JPEG marker structure")
        marker = handle.read(1)
        while marker == b"\xff":
            marker = handle.read(1)
        if not marker:
            break
        code = marker[0]
        if code == 0x01 or 0xD0 <= code <= 0xD8:
            continue
        if code in (0xD9, 0xDA):
            break
        length_bytes = handle.read(2)
        if len(length_bytes) != 2:
            break
        (length,) = struct.unpack(">H", length_bytes)
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
            frame = handle.read(5)
            if len(frame) != 5:
                break
            _, height, width = struct.unpack(">BHH", frame)
            return width, height
        handle.seek(length - 2, 1)
    raise ValueError("no JPEG frame header found (the file is truncated or not a JPEG)")


def _png_size(handle: BinaryIO) -> tuple[int, int]:
    # The IHDR chunk follows the 8-byte signature: length, b"IHDR", width, height.
    header = handle.read(24)
    if len(header) != 24 or header[12:16] != b"IHDR":
        raise ValueError("no PNG IHDR chunk (the file is truncated or not a PNG)")
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def _netpbm_size(handle: BinaryIO) -> tuple[int, int]:
    # Header: magic, width, height, separated by whitespace; '#' starts a comment.
    text = handle.read(4096)
    tokens: list[bytes] = []
    for line in text.split(b"\n"):
        tokens += line.split(b"#", 1)[0].split()
        if len(tokens) >= 3:
            break
    if len(tokens) < 3 or tokens[0] not in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6"):
        raise ValueError("no Netpbm (P1-P6) header")
    try:
        return int(tokens[1]), int(tokens[2])
    except ValueError:
        raise ValueError("Netpbm header width or height is not an integer") from None


def _header_size(path: Path) -> tuple[int, int] | None:
    """Return (width, height) from a JPEG, PNG or Netpbm header, or None for other formats.

    Raises ImageError when the header of a recognised format is corrupt.
    """
    with path.open("rb") as handle:
        signature = handle.read(8)
        handle.seek(0)
        try:
            if signature.startswith(b"\xff\xd8"):
                width, height = _jpeg_size(handle)
            elif signature.startswith(b"\x89PNG\r\n\x1a\n"):
                width, height = _png_size(handle)
            elif signature[:1] == b"P" and signature[1:2] in (b"1", b"2", b"3", b"4", b"5", b"6"):
                width, height = _netpbm_size(handle)
            else:
                return None
        except (ValueError, struct.error) as error:
            raise ImageError(f"unreadable image header: {error}", path) from None

    if width <= 0 or height <= 0:
        raise ImageError(f"image header gives an empty size {width}x{height}", path)
    return width, height


def read_image_size(path: str | Path) -> tuple[int, int]:
    """Return an image's (width, height) from its file header, without decoding pixels.

    Reads JPEG, PNG and Netpbm (PPM/PGM/PBM) headers; other formats are decoded
    in full.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError("image file not found", path)
    size = _header_size(path)
    if size is None:
        height, width = read_image(path).shape[:2]
        return width, height
    return size


def _to_rgb8(image: np.ndarray, path: Path) -> np.ndarray:
    # Scale 16-bit and floating-point images to 8 bits first.
    if image.dtype == np.uint16:
        image = np.rint(image / 257.0).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {image.dtype}; save the image as 8-bit JPEG or PNG", path)

    # OpenCV decodes to BGR(A); the project works in RGB. Alpha is dropped.
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageError(f"unsupported number of channels {channels}; expected grey, RGB or RGBA", path)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB.

    Greyscale, RGBA (alpha dropped), 16-bit and floating-point images are
    converted. EXIF orientation is ignored, because landmark annotations refer
    to the stored pixel grid.

    Raises:
        ImageError: the file is missing, too large, not an image or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError("image file not found", path)
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ImageError(f"file is {size} bytes, above the {MAX_IMAGE_BYTES}-byte limit for an image", path)

    # Check the pixel count from the header before decoding, so a small file
    # that claims a huge size cannot exhaust memory.
    header_size = _header_size(path)
    if header_size is not None and header_size[0] * header_size[1] > MAX_IMAGE_PIXELS:
        width, height = header_size
        raise ImageError(f"image is {width}x{height}, above the limit of {MAX_IMAGE_PIXELS} pixels", path)

    # np.fromfile + imdecode also handles non-ASCII paths, unlike cv2.imread
    # on some platforms. OpenCV returns None for truncated JPEG and PNG files.
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None or image.size == 0:
        raise ImageError("cannot decode the image (not an image, unsupported format, or truncated)", path)
    return _to_rgb8(image, path)


# --------------------------------------------------------------------------
# Folder scans
# --------------------------------------------------------------------------


def _relative_id(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def _find_pairs(root: Path, recursive: bool) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Group image and .pts files by their relative path without suffix."""
    images: dict[str, list[Path]] = {}
    annotations: dict[str, list[Path]] = {}
    candidates = root.rglob("*") if recursive else root.iterdir()
    for path in candidates:
        suffix = path.suffix.lower()
        if suffix not in IMAGE_SUFFIXES and suffix != ".pts":
            continue
        if not path.is_file():
            continue
        table = annotations if suffix == ".pts" else images
        table.setdefault(_relative_id(path, root), []).append(path)
    return images, annotations


def _outside_image(points: np.ndarray, width: int, height: int) -> str | None:
    """Describe the point furthest beyond the allowed margin, or return None when all are inside."""
    low = -OUTSIDE_MARGIN * np.array([width, height])
    high = np.array([width - 1, height - 1]) + OUTSIDE_MARGIN * np.array([width, height])
    excess = np.maximum(low - points, points - high).max(axis=1)
    worst = int(np.argmax(excess))
    if excess[worst] <= 0:
        return None
    x, y = points[worst]
    return (
        f"point {worst} at ({x:.1f}, {y:.1f}) is more than {OUTSIDE_MARGIN:.0%} of the image size "
        f"outside the {width}x{height} image; the annotation may belong to another image or be scaled wrongly"
    )


def validate_folder(
    root: str | Path,
    recursive: bool = True,
    expected_count: int | None = None,
    decode_images: bool = False,
) -> tuple[list[FaceRecord], list[FileProblem]]:
    """Find and check every ``NAME.(jpg|jpeg|png|ppm)`` + ``NAME.pts`` pair under ``root``.

    A pair is valid when:

    * the .pts file parses;
    * the image exists and its header is readable. With ``decode_images``
      the whole image is decoded, which also catches truncated files;
    * the point count equals ``expected_count``, or else the most common
      count in the folder;
    * no point lies more than ``OUTSIDE_MARGIN`` of the image size beyond a border.

    Images without a .pts file are not faces of the data set and are ignored.

    Returns:
        ``(records, problems)``: the valid faces sorted by relative path
        (``FaceRecord.name``), and one entry per invalid file.

    Raises:
        DatasetError: when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} not found; pass a folder of NAME.jpg + NAME.pts pairs")

    images, annotations = _find_pairs(root, recursive)
    problems: list[FileProblem] = []
    parsed: list[tuple[str, Path, Path, np.ndarray, tuple[int, int]]] = []

    # Validate each annotation and its image on their own.
    for name in sorted(annotations):
        pts_paths = annotations[name]
        image_paths = sorted(images.get(name, []))
        if len(pts_paths) > 1:
            problems.append(FileProblem(pts_paths[0], f"several annotation files share this name: {sorted(pts_paths)}"))
            continue
        pts_path = pts_paths[0]
        if not image_paths:
            suffixes = "|".join(suffix.lstrip(".") for suffix in IMAGE_SUFFIXES)
            problems.append(FileProblem(pts_path, f"no image found for this annotation (expected {name}.{suffixes})"))
            continue
        if len(image_paths) > 1:
            problems.append(FileProblem(pts_path, f"several images match this annotation: {[p.name for p in image_paths]}"))
            continue
        image_path = image_paths[0]

        try:
            points = read_pts(pts_path)
        except AnnotationError as error:
            location = f"line {error.line}: " if error.line is not None else ""
            problems.append(FileProblem(pts_path, location + error.reason))
            continue
        try:
            if decode_images:
                height, width = read_image(image_path).shape[:2]
            else:
                width, height = read_image_size(image_path)
        except ImageError as error:
            problems.append(FileProblem(image_path, error.reason))
            continue

        outside = _outside_image(points, width, height)
        if outside is not None:
            problems.append(FileProblem(pts_path, outside))
            continue
        parsed.append((name, pts_path, image_path, points, (width, height)))

    # Point counts must agree: with the request, or else with the majority
    # (the larger count wins a tie).
    counts = Counter(len(points) for *_, points, _ in parsed)
    if expected_count is None and counts:
        expected_count = max(counts, key=lambda count: (counts[count], count))
    records = []
    for name, pts_path, image_path, points, image_size in parsed:
        if len(points) != expected_count:
            problems.append(
                FileProblem(pts_path, f"has {len(points)} points, expected {expected_count} like the rest of the data")
            )
            continue
        source = Path(name).parent.as_posix()
        records.append(FaceRecord(image_path, points, name, source, image_size=image_size))

    problems.sort(key=lambda problem: str(problem.path))
    return records, problems


def scan_folder(
    root: str | Path,
    recursive: bool = True,
    expected_count: int | None = None,
    skip_invalid: bool = False,
    decode_images: bool = False,
) -> list[FaceRecord]:
    """Return the faces under ``root`` after :func:`validate_folder` checks every file.

    Args:
        root: the data folder.
        recursive: also search sub-folders.
        expected_count: the required number of points per face (default:
            the most common count in the folder).
        skip_invalid: log a warning per invalid file and leave it out,
            instead of raising. Skipped files shift the train/val split.
        decode_images: decode every image in full (slower, catches truncation).

    Returns:
        The valid faces, sorted by relative path (``FaceRecord.name``).

    Raises:
        DatasetError: listing every invalid file, unless ``skip_invalid``;
            also when the folder is missing or contains no valid faces.
    """
    records, problems = validate_folder(root, recursive, expected_count, decode_images)
    if problems and not skip_invalid:
        raise DatasetError(
            f"{len(problems)} invalid file(s) under {root}; fix or remove them (scan_folder(..., skip_invalid=True) skips them)",
            problems,
        )
    for problem in problems:
        logger.warning("skipping invalid file %s", problem)

    if not records:
        raise DatasetError(f"no valid annotated faces under {root}; expected NAME.jpg + NAME.pts pairs", problems)
    logger.info("found %d faces under %s (%d invalid files skipped)", len(records), root, len(problems))
    return records


# --------------------------------------------------------------------------
# WFLW annotation lists
# --------------------------------------------------------------------------


def _relative_image_problem(relative_image: str) -> str | None:
    """Describe why a listed image path is unusable, or return None when it is a relative file path."""
    image = Path(relative_image)
    if image.is_absolute():
        return "the image path must be relative to the image folder"
    if ".." in image.parts:
        return "the image path must not contain '..'"
    if image.name in ("", "."):
        return "the image path has no file name"
    return None


def read_wflw_list(path: str | Path, image_root: str | Path, check_images: bool = True) -> list[FaceRecord]:
    """Read a WFLW annotation list (``list_98pt_rect_attr_train.txt`` and its test variants).

    Each line contains 196 coordinates (98 points, x y), the face box
    ``x_min y_min x_max y_max``, six 0/1 attribute flags (pose, expression,
    illumination, make-up, occlusion, blur) and the image path relative to
    ``image_root``. Absolute image paths and paths with ``..`` are rejected,
    so a list cannot point outside ``image_root``.

    Args:
        path: the list file.
        image_root: the folder that image paths are relative to
            (``WFLW_images`` in the WFLW release).
        check_images: raise DatasetError listing every listed image that does not exist.

    Returns:
        One record per line, with ``box`` and ``attributes`` set, sorted by name.

    Raises:
        AnnotationError: the list is missing, too large or invalid, naming the line.
        DatasetError: ``check_images`` is set and listed images are missing.
    """
    path = Path(path)
    image_root = Path(image_root)
    if not _is_file(path):
        raise AnnotationError("WFLW annotation list not found", path)
    raw = _read_capped(path, MAX_LIST_BYTES, "an annotation list").removeprefix(codecs.BOM_UTF8)
    if b"\x00" in raw:
        raise AnnotationError("not a text file (contains NUL bytes); expected a WFLW annotation list", path)
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    coordinate_count = 2 * 98
    numeric_count = coordinate_count + 4 + len(WFLW_ATTRIBUTES)
    records = []
    faces_per_image: Counter[str] = Counter()
    missing: list[FileProblem] = []

    # Iterate lazily over a BytesIO, which shares the buffer of ``raw``: a list
    # of every line of a file of short lines would take many times its size.
    for number, line_bytes in enumerate(io.BytesIO(raw), start=1):
        if number > MAX_LIST_LINES:
            raise AnnotationError(f"more than {MAX_LIST_LINES} lines; this is not a WFLW annotation list", path, number)
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as error:
            raise AnnotationError(
                f"not a text file (invalid UTF-8 at byte {error.start} of the line)", path, number
            ) from None

        # maxsplit keeps the token count bounded on a line of many values. The
        # last token is the rest of the line: the image path, which may contain spaces.
        tokens = line.split(maxsplit=numeric_count)
        if not tokens:
            continue
        if len(tokens) < numeric_count + 1:
            raise AnnotationError(
                f"expected {numeric_count} numbers and an image path, got {len(tokens)} fields", path, number
            )
        try:
            values = np.array([float(token) for token in tokens[:numeric_count]], dtype=np.float64)
        except ValueError:
            raise AnnotationError(f"the first {numeric_count} fields must be numbers", path, number) from None
        if not np.all(np.isfinite(values)):
            raise AnnotationError("coordinates and box must be finite numbers", path, number)
        if np.any(np.abs(values[:coordinate_count]) > FLOAT32_MAX):
            raise AnnotationError(f"coordinates must be at most {FLOAT32_MAX:.4g} in magnitude (float32)", path, number)
        relative_image = tokens[numeric_count].strip()
        image_problem = _relative_image_problem(relative_image)
        if image_problem is not None:
            raise AnnotationError(f"{image_problem}, got {relative_image[:MAX_QUOTED_CHARS]!r}", path, number)

        points = values[:coordinate_count].reshape(98, 2).astype(np.float32)
        box = values[coordinate_count : coordinate_count + 4]
        flags = values[coordinate_count + 4 :]
        if np.any((flags != 0) & (flags != 1)):
            raise AnnotationError(f"attribute flags must be 0 or 1, got {flags.tolist()}", path, number)

        image_path = image_root / relative_image
        if check_images and not _is_file(image_path):
            missing.append(FileProblem(image_path, f"listed on line {number} of {path} but not found"))

        # Several faces can share one image, so number them per image.
        image_id = Path(relative_image).with_suffix("").as_posix()
        faces_per_image[image_id] += 1
        records.append(
            FaceRecord(
                image_path=image_path,
                points=points,
                name=f"{image_id}#{faces_per_image[image_id]}",
                source=Path(relative_image).parent.as_posix(),
                box=box,
                attributes={key: int(flag) for key, flag in zip(WFLW_ATTRIBUTES, flags)},
            )
        )

    if missing:
        raise DatasetError(f"{len(missing)} image(s) of {path} not found under {image_root}", missing)
    if not records:
        raise AnnotationError("the list contains no faces", path)
    return sorted(records, key=lambda record: record.name)


# --------------------------------------------------------------------------
# Train / validation split
# --------------------------------------------------------------------------


def split_records(records: Sequence[FaceRecord], subset: str) -> list[FaceRecord]:
    """Select the ``subset`` ("train", "val" or "all") of ``records`` by ``SPLIT_RULE``.

    Records are sorted by name first, so the split depends only on the set of
    faces, not on the order they were found in. Pass every face of the data
    root (not a sub-folder) so the split matches the one reports name.
    """
    if subset not in ("train", "val", "all"):
        raise ValueError(f"subset must be 'train', 'val' or 'all', got {subset!r}")
    ordered = sorted(records, key=lambda record: record.name)
    if subset == "all":
        return ordered
    is_val = subset == "val"
    return [record for index, record in enumerate(ordered) if (index % VALIDATION_EVERY == 0) == is_val]


# --------------------------------------------------------------------------
# Training dataset
# --------------------------------------------------------------------------


def crop_to_tensor(crop: np.ndarray) -> torch.Tensor:
    """Convert an (S, S, 3) uint8 RGB crop to the network's (3, S, S) float32 input in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div_(255.0)


class LandmarkDataset(Dataset):
    """Square face crops and their points, for training and evaluation.

    The crop box is the bounding box of the ground-truth points (the 300-W
    protocol), or a given box per face (a face detector's), enlarged by
    ``context``.

    Each item is a dict:

    * ``image``: (3, S, S) float32 RGB in [0, 1], S = ``input_size``;
    * ``points``: (K, 2) float32 points in crop pixels;
    * ``matrix``: (2, 3) float64 image -> crop affine matrix;
    * ``index``: the item's index (int).

    Augmentation is reproducible: item ``i`` of epoch ``e`` draws from
    ``numpy.random.default_rng([seed, e, i])`` whichever worker loads it.
    Call :meth:`set_epoch` before each epoch's DataLoader iterator is created.
    With ``persistent_workers=True`` the workers keep the epoch they started
    with, so use non-persistent workers with augmentation.

    Args:
        records: the faces; all must have the same number of points.
        input_size: crop side S in pixels.
        augmentation: random augmentation, or None for the plain crop.
        context: crop side / longer side of the points' box.
        cache_images: keep decoded images in memory (a 384 x 384 RGB image is
            0.44 MB). Each DataLoader worker fills its own cache unless
            :meth:`preload` ran before the workers started.
        seed: base seed of the augmentation.
        boxes: one ``[x0, y0, x1, y1]`` box per record to crop instead of
            the points' box, or None.
    """

    def __init__(
        self,
        records: Sequence[FaceRecord],
        input_size: int = 128,
        augmentation: Augmentation | None = None,
        context: float = DEFAULT_CONTEXT,
        cache_images: bool = True,
        seed: int = 0,
        boxes: Sequence[np.ndarray] | None = None,
    ) -> None:
        if not records:
            raise ValueError("LandmarkDataset needs at least one record")
        if boxes is not None and len(boxes) != len(records):
            raise ValueError(f"got {len(records)} records but {len(boxes)} boxes; pass one box per record")
        counts = sorted({len(record.points) for record in records})
        if len(counts) != 1:
            raise ValueError(f"all records must have the same number of points, found counts {counts}")
        if int(input_size) != input_size or input_size <= 0:
            raise ValueError(f"input_size must be a positive integer number of pixels, got {input_size!r}")
        if not context > 0:
            raise ValueError(f"context must be > 0, got {context!r}")

        self.records = list(records)
        self.input_size = int(input_size)
        self.augmentation = augmentation
        self.context = float(context)
        self.cache_images = cache_images
        self.seed = int(seed)
        self.epoch = 0
        self.point_count = counts[0]
        self.boxes = None if boxes is None else [np.asarray(box, dtype=np.float64) for box in boxes]
        self._cache: dict[int, np.ndarray] = {}

    @property
    def scheme(self) -> LandmarkScheme | None:
        """The built-in scheme for the records' point count, or None for other counts."""
        return SCHEMES.get(self.point_count)

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch``."""
        self.epoch = int(epoch)

    def rng_for(self, index: int) -> np.random.Generator:
        """Return the random generator of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def load_image(self, index: int) -> np.ndarray:
        """Return the (H, W, 3) uint8 RGB image of item ``index``, from the cache when present."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        image = read_image(self.records[index].image_path)
        if self.cache_images:
            self._cache[index] = image
        return image

    def preload(self) -> None:
        """Decode every image into the cache (forked DataLoader workers then share it)."""
        if not self.cache_images:
            raise ValueError("preload() needs cache_images=True")
        for index in range(len(self)):
            self.load_image(index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a dataset of {len(self)} faces")
        index = int(index) % len(self)
        record = self.records[index]
        image = self.load_image(index)
        box = box_from_points(record.points) if self.boxes is None else self.boxes[index]

        # Crop (and augment) with one warp; points follow the same matrix.
        if self.augmentation is not None:
            crop, points, geometry = self.augmentation(
                image, record.points, box, self.input_size, self.rng_for(index), context=self.context
            )
        else:
            geometry = crop_from_box(box, self.input_size, context=self.context)
            crop = geometry.warp(image)
            points = geometry.to_crop(record.points.astype(np.float64)).astype(np.float32)

        return {
            "image": crop_to_tensor(crop),
            "points": torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)),
            "matrix": torch.from_numpy(np.array(geometry.matrix, dtype=np.float64)),
            "index": index,
        }
