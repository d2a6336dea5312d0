"""Browsing the validation faces of an EXPLORER_DATA folder (needs the 300-W data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from explorer.app.compare_tab import run_compare
from explorer.app.config import AppSettings
from explorer.app.main import load_workspace
from explorer.app.smoothing_tab import run_smoothing
from explorer.inference.predictor import InputError
from tests.inference.shipped import checkpoint_folder

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def workspace():  # noqa: ANN201
    data = os.environ.get("EXPLORER_DATA")
    if not data:
        pytest.skip("set EXPLORER_DATA to a 300-W style folder to browse its faces")
    return load_workspace(AppSettings(checkpoints=checkpoint_folder(), data=Path(data)))


def test_data_faces_are_validation_split(workspace) -> None:  # noqa: ANN001
    assert workspace.data_problem is None
    assert len(workspace.data_faces) > 0


def test_compare_data_face_has_nme(workspace) -> None:  # noqa: ANN001
    result = run_compare(workspace, None, "", 0, None, 0, "", "36")
    assert f"data face 0 ({workspace.data_faces[0].name})" in result.status
    for model in result.summary["models"].values():
        assert 0 < model["nme"] < 100


def test_smoothing_last_data_face(workspace) -> None:  # noqa: ANN001
    last = len(workspace.data_faces) - 1
    result = run_smoothing(workspace, None, "", last, None, 0, "", "8")
    assert result.summary["points_from"] == "ground truth"


def test_data_face_index_out_of_range(workspace) -> None:  # noqa: ANN001
    count = len(workspace.data_faces)
    with pytest.raises(InputError) as raised:
        run_compare(workspace, None, "", count, None, 0, "", "36")
    assert f"choose 0..{count - 1}" in str(raised.value)
