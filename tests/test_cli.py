"""Command line: train, evaluate and report through ``python -m explorer``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.cli import main
from tests.conftest import CHECKPOINTS, REPO, write_generated_faces

TRAIN_ARGS = ["--epochs", "2", "--batch-size", "4", "--workers", "0", "--max-train-faces", "12", "--max-val-faces", "4", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A generated-face folder and a 2-epoch run trained on it through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    faces = write_generated_faces(root / "faces", 16)
    config = root / "config.json"
    config.write_text(json.dumps({"model": {"input_size": 64, "stride": 4, "width": 16, "blocks": 1}}))
    run = root / "run"
    assert main(["train", "--data", str(faces), "--config", str(config), "--out", str(run), *TRAIN_ARGS]) == 0
    return faces, run


def test_train_writes_card_command(tiny_run: tuple[Path, Path]) -> None:
    _, run = tiny_run
    card = json.loads((run / "best.json").read_text())
    assert card["command"].startswith("python -m explorer train")


def test_evaluate_json(tiny_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    faces, run = tiny_run
    assert main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--data", str(faces), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)

    assert summary["count"] == 16
    assert summary["decoder"] == "refined"
    assert {"nme", "fr", "auc"} <= set(summary)
    assert 0.0 <= summary["auc"] <= 1.0


def test_evaluate_val_split_matches_card(tiny_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    faces, run = tiny_run
    # The card's NME was measured on the first 4 validation faces of 16,
    # and the split of 16 faces has exactly 2 validation faces.
    main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--data", str(faces), "--split", "val", "--json"])
    summary = json.loads(capsys.readouterr().out)
    card = json.loads((run / "best.json").read_text())

    assert summary["count"] == card["data"]["val_faces"]
    assert summary["nme"] == pytest.approx(card["validation"]["nme"], abs=0.01)


def test_evaluate_decoder_option(tiny_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    faces, run = tiny_run
    main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--data", str(faces), "--decoder", "soft-argmax", "--json"])
    assert json.loads(capsys.readouterr().out)["decoder"] == "soft-argmax"


def test_evaluate_table_and_files(tiny_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faces, run = tiny_run
    ced, per_landmark = tmp_path / "ced.png", tmp_path / "landmarks.json"
    main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--data", str(faces),
          "--ced", str(ced), "--per-landmark", str(per_landmark)])
    output = capsys.readouterr().out

    assert "nme" in output
    assert ced.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(per_landmark.read_text())
    assert len(rows) == 68
    assert rows[36]["name"] == "right eye, outer corner"


def test_evaluate_rejects_other_scheme(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = tiny_run
    folder = tmp_path / "five"
    folder.mkdir()
    for index in range(2):
        (folder / f"f{index}.pts").write_text("version: 1\nn_points: 5\n{\n" + "10 10\n" * 5 + "}\n")
        (folder / f"f{index}.png").write_bytes((REPO / "explorer/assets/examples/takeo.ppm").read_bytes())

    with pytest.raises(SystemExit, match="predicts 68 landmarks but .* annotated with 5"):
        main(["evaluate", "--checkpoint", str(run / "best.safetensors"), "--data", str(folder)])


def test_evaluate_rejects_pickle(tmp_path: Path, tiny_run: tuple[Path, Path]) -> None:
    faces, _ = tiny_run
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x80\x04\x95" + bytes(64))

    with pytest.raises(SystemExit, match="model.safetensors is not a safetensors file"):
        main(["evaluate", "--checkpoint", str(bad), "--data", str(faces)])


def test_missing_data_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EXPLORER_DATA", raising=False)
    with pytest.raises(SystemExit, match="set EXPLORER_DATA"):
        main(["train", "--out", str(tmp_path / "run")])


def test_report_writes_results(tiny_run: tuple[Path, Path], tmp_path: Path) -> None:
    faces, run = tiny_run
    assert main(["report", str(run), "--data", str(faces), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "results.md").read_text()

    assert "| structured (image-aware) | refined (trained for) |" in text
    assert (tmp_path / "figures" / "convergence.png").is_file()
    assert (tmp_path / "figures" / "ced.png").is_file()


def test_module_help_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "explorer", "--help"], capture_output=True, text=True, check=True)
    assert "train" in result.stdout


@pytest.mark.parametrize("name", ["structured", "softargmax"])
def test_shipped_checkpoint_matches_card(name: str, real_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = CHECKPOINTS / f"{name}.safetensors"
    assert checkpoint.is_file(), f"{checkpoint} is missing; ship it with its card"
    card = json.loads(checkpoint.with_suffix(".json").read_text())

    main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(real_data), "--split", "val", "--json"])
    summary = json.loads(capsys.readouterr().out)

    assert summary["count"] == card["data"]["val_faces"]
    assert summary["nme"] == pytest.approx(card["validation"]["nme"], abs=0.01)
