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

_LEADING_NUMBER = re.compile(r"^\s*(\d+)\s*(?:·|:|-|\.|\s|$)")


def landmark_choices(scheme: LandmarkScheme) -> list[str]:
    """Return the landmark menu entries, ``"36 · right eye, outer corner"``."""
    return [f"{index}{LANDMARK_SEPARATOR}{name}" for index, name in enumerate(scheme.names)]


def parse_landmark(value: str | int | float | None, scheme: LandmarkScheme) -> int:
    """Resolve a landmark typed as a number, a name or a menu entry; empty means landmark 0.

    Raises:
        InputError: naming the value and the valid numbers.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    if isinstance(value, float):
        if not value.is_integer():
            raise InputError(f"landmark {value} is not a whole number; choose 0..{scheme.count - 1} or a name")
        value = int(value)
    if isinstance(value, str):
        match = _LEADING_NUMBER.match(value)
        if match is not None:
            value = match.group(1)
    try:
        return landmark_index(scheme, value)
    except (ValueError, TypeError) as error:
        raise InputError(str(error)) from None


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
