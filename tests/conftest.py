"""Shared fixtures: the real data folder, the example faces and generated faces."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "explorer" / "assets" / "examples"
CHECKPOINTS = REPO / "checkpoints"
DATA_HINT = "set EXPLORER_DATA to a folder in 300-W layout (for example ../shared/data/300w) to run this test"


def data_root() -> Path | None:
    """Return the 300-W folder named by EXPLORER_DATA, or None when it is unset or missing."""
    value = os.environ.get("EXPLORER_DATA")
    if not value:
        return None
    path = Path(value)
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The 300-W folder; skips the test when EXPLORER_DATA is not set."""
    root = data_root()
    if root is None:
        pytest.skip(DATA_HINT)
    return root


def _template_points() -> np.ndarray:
    from explorer.core.data import read_pts

    points = read_pts(EXAMPLES / "takeo.pts").astype(np.float64)
    # Normalise the template to a unit box centred at the origin.
    low, high = points.min(axis=0), points.max(axis=0)
    return (points - (low + high) / 2) / (high - low).max()


def write_generated_faces(folder: Path, count: int, size: int = 160, seed: int = 0) -> Path:
    """Write ``count`` synthetic 68-point faces in 300-W layout and return the folder.

    Each image is smooth noise with a bright dot at every landmark, so a
    network can learn the points from the pixels in a few steps.
    """
    rng = np.random.default_rng(seed)
    template = _template_points()
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        noise = rng.normal(90, 25, size=(size // 8, size // 8, 3))
        image = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
        scale = rng.uniform(0.45, 0.6) * size
        centre = size / 2 + rng.uniform(-0.08, 0.08, size=2) * size
        points = template * scale + centre
        for x, y in points:
            cv2.circle(image, (int(round(x)), int(round(y))), 2, (250, 250, 250), -1, lineType=cv2.LINE_AA)
        name = f"face_{index:03d}"
        cv2.imwrite(str(folder / f"{name}.png"), image[:, :, ::-1])
        lines = ["version: 1", "n_points:  68", "{", *(f"{x:.3f} {y:.3f}" for x, y in points), "}"]
        (folder / f"{name}.pts").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="session")
def generated_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 20 generated 68-point faces in 300-W layout."""
    return write_generated_faces(tmp_path_factory.mktemp("generated") / "faces", 20)
