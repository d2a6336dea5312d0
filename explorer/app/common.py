"""Helpers the tabs share: landmark choice, status lines, downloads and number formatting."""

from __future__ import annotations

import json
import re
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from explorer.core.data import write_pts
from explorer.core.landmarks import LandmarkScheme, landmark_index
from explorer.app.sources import FaceSelection, FaceSource
from explorer.inference.predictor import InputError

# Separator between a landmark's number and its name in the landmark menu.
LANDMARK_SEPARATOR = " · "

# A menu entry or a typed "36: right eye, outer corner": a number, a separator
# and a name. The name must not start with a digit, so "36.5" and "3 6" are
# not read as landmarks 36 and 3.
_NUMBER_AND_NAME = re.compile(r"^\s*(\d+)\s*(?:[·:.\-]\s*|\s+)(\D.*)$")

# A typed number, whole or not, with an optional sign and exponent.
_NUMBER = re.compile(r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*$")

# Maximum length of landmark text quoted in an error message.
_QUOTED_CHARACTERS = 80


def landmark_choices(scheme: LandmarkScheme) -> list[str]:
    """Return the landmark menu entries, ``"36 · right eye, outer corner"``."""
    return [f"{index}{LANDMARK_SEPARATOR}{name}" for index, name in enumerate(scheme.names)]


def parse_landmark(value: str | int | float | None, scheme: LandmarkScheme) -> int:
    """Resolve a landmark typed as a number, a name or a menu entry; empty means landmark 0.

    A menu entry's name must be the name of its number, so a typing slip such
    as ``"36 · left eye, outer corner"`` is reported instead of silently
    picking either landmark.

    Raises:
        InputError: naming the value and the valid numbers.
    """
    valid = f"type a number 0..{scheme.count - 1} or a landmark name such as {scheme.names[0]!r}"
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InputError(f"landmark {str(value)[:_QUOTED_CHARACTERS]!r} is not a number or a name; {valid}")
    if isinstance(value, str) and _NUMBER.match(value):
        value = float(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise InputError(f"landmark {value:g} is not a whole number; {valid}")
        value = int(value)
    if isinstance(value, int):
        if not 0 <= value < scheme.count:
            raise InputError(f"landmark index {value} is outside 0..{scheme.count - 1}; {valid}")
        return value

    quoted = value.strip() if len(value.strip()) <= _QUOTED_CHARACTERS else value.strip()[: _QUOTED_CHARACTERS - 1] + "…"
    entry = _NUMBER_AND_NAME.match(value)
    if entry is not None:
        index = int(entry.group(1))
        if not 0 <= index < scheme.count:
            raise InputError(f"landmark {quoted!r}: index {index} is outside 0..{scheme.count - 1}; {valid}")
        typed_name = " ".join(entry.group(2).lower().split())
        if typed_name != scheme.names[index].lower():
            raise InputError(
                f"landmark {quoted!r}: number {index} is {scheme.names[index]!r}, not {entry.group(2).strip()!r}; "
                "type the number or the name alone"
            )
        return index
    try:
        return landmark_index(scheme, value)
    except ValueError:
        raise InputError(f"no landmark named {quoted!r}; {valid}") from None


def landmark_label(index: int, scheme: LandmarkScheme) -> str:
    """Return ``"36 (right eye, outer corner)"``."""
    return f"{index} ({scheme.names[index]})"


def face_status(source: FaceSource, selection: FaceSelection) -> str:
    """Describe the photo and the face used, as one Markdown line."""
    image = source.image
    parts = [f"**{source.label}**, {image.width} x {image.height} px"]
    if image.notes:
        parts.append("; ".join(image.notes))
    count = len(selection.candidates)
    if selection.kind == "typed box":
        parts.append("face: the typed box")
    elif selection.kind == "whole image":
        parts.append("no face found, so the whole image is used (type a box to pick the face)")
    else:
        chosen = selection.candidates[selection.index].label
        parts.append(f"face {selection.index} of {count} ({chosen})")
    return " · ".join(parts)


def point_list(points: np.ndarray, decimals: int = 2) -> list[list[float]]:
    """Return (K, 2) points as nested lists of rounded floats, for JSON."""
    return np.round(np.asarray(points, dtype=np.float64), decimals).tolist()


class DownloadFolder:
    """A temporary folder for files offered as downloads, which keeps only the newest ones.

    Gradio copies returned files into its own cache, so older files here can
    be deleted once ``keep`` newer ones exist.
    """

    def __init__(self, keep: int = 32) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="explorer-downloads-"))
        self._files: deque[Path] = deque()
        self._keep = keep
        self._lock = threading.Lock()
        self._counter = 0

    def _new_path(self, stem: str, suffix: str) -> Path:
        with self._lock:
            self._counter += 1
            folder = self.root / f"{self._counter:06d}"
            folder.mkdir()
            path = folder / f"{_safe_stem(stem)}{suffix}"
            self._files.append(path)
            while len(self._files) > self._keep:
                old = self._files.popleft()
                old.unlink(missing_ok=True)
                try:
                    old.parent.rmdir()
                except OSError:
                    pass
            return path

    def write_pts(self, stem: str, points: np.ndarray) -> str:
        path = self._new_path(stem, ".pts")
        write_pts(path, points)
        return str(path)

    def write_json(self, stem: str, payload: dict[str, Any]) -> str:
        path = self._new_path(stem, ".json")
        path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        return str(path)


def _safe_stem(text: str) -> str:
    """Keep letters, digits, dots, dashes and underscores of a file stem."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "landmarks"
    return stem[:60]


def source_stem(source: FaceSource) -> str:
    """Return a file stem for downloads derived from the source label."""
    label = source.label
    for prefix in ("upload ", "example ", "data face "):
        if label.startswith(prefix):
            label = label[len(prefix) :]
    return Path(label.strip("'\"").split(" ")[0]).stem
