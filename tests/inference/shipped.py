"""Locate the shipped checkpoints the app and predictor tests run on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
MODEL_FILES = ("structured.safetensors", "softargmax.safetensors")
EXAMPLES_DIR = REPOSITORY_ROOT / "explorer" / "assets" / "examples"
EXAMPLES = {"breakingbad": EXAMPLES_DIR / "breakingbad.jpg", "einstein": EXAMPLES_DIR / "einstein.jpg", "takeo": EXAMPLES_DIR / "takeo.ppm"}


def checkpoint_folder() -> Path:
    """Return the folder with both shipped checkpoints, or fail the test with what is missing.

    The folder is ``EXPLORER_CHECKPOINTS`` when set, else ``checkpoints/`` in the repository.
    """
    folder = Path(os.environ.get("EXPLORER_CHECKPOINTS") or REPOSITORY_ROOT / "checkpoints")
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        pytest.fail(
            f"the shipped checkpoints {', '.join(missing)} are missing from {folder}; these tests run on the real "
            "models. Train them (see README) or set EXPLORER_CHECKPOINTS to a folder that has them.",
            pytrace=False,
        )
    return folder
