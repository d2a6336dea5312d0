"""Command line: invalid user input ends in a one-line error and a non-zero status, never a traceback."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.cli import build_parser, main
from tests.conftest import EXAMPLES, REPO, write_generated_faces

SMALL_MODEL = {"model": {"input_size": 64, "stride": 4, "width": 16, "blocks": 1}}
TRAIN_ARGS = ["--epochs", "1", "--batch-size", "4", "--workers", "0", "--max-train-faces", "8", "--max-val-faces", "2",
              "--no-progress"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Generated faces, a small model config, a one-epoch run trained on them and a plain text file."""
    root = tmp_path_factory.mktemp("cli-errors")
    faces = write_generated_faces(root / "faces", 12)
    config = root / "config.json"
    config.write_text(json.dumps(SMALL_MODEL))
    run = root / "run"
    assert main(["train", "--data", str(faces), "--config", str(config), "--out", str(run), *TRAIN_ARGS]) == 0
    text = root / "notes.txt"
    text.write_text("not a folder\n")
    return {"root": root, "faces": faces, "config": config, "run": run, "text": text}


def exit_message(argv: list[str]) -> tuple[int | str | None, str]:
    """Run the command line on ``argv`` and return its SystemExit code and message."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    return raised.value.code, str(raised.value.code)


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``argv``, check that argparse rejects it with status 2 and return its stderr."""
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    return capsys.readouterr().err


def train_argv(setup: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(setup["faces"]), "--config", str(setup["config"]), "--out", str(out), *TRAIN_ARGS,
            *extra]


# ---------------------------------------------------------------------- train


def test_train_config_string_epochs(setup: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "ten.json"
    config.write_text(json.dumps(SMALL_MODEL | {"epochs": "ten"}))
    _, message = exit_message(["train", "--data", str(setup["faces"]), "--config", str(config), "--out", str(tmp_path / "run")])
    assert message.startswith("error: ")
    assert "'epochs' must be an integer" in message
    assert '"ten"' in message


def test_train_config_negative_lr(setup: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "lr.json"
    config.write_text(json.dumps(SMALL_MODEL | {"lr": -0.1}))
    _, message = exit_message(["train", "--data", str(setup["faces"]), "--config", str(config), "--out", str(tmp_path / "run")])
    assert "'lr' must be a finite number above 0" in message


def test_train_config_not_object(setup: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "list.json"
    config.write_text("[1, 2]")
    _, message = exit_message(["train", "--data", str(setup["faces"]), "--config", str(config), "--out", str(tmp_path / "run")])
    assert "must contain a JSON object" in message


def test_train_config_not_utf8(setup: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "binary.json"
    config.write_bytes(b"\xff\xfe\x00binary")
    _, message = exit_message(["train", "--data", str(setup["faces"]), "--config", str(config), "--out", str(tmp_path / "run")])
    assert message.startswith(f"error: cannot read config {config}")


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"model": {"input_size": 64, "stride": 4, "width": 3, "blocks": 1}}, "invalid 'model' settings: width must be an even"),
        ({"model": {"input_size": 64, "stride": 4, "width": "16", "blocks": 1}}, "invalid 'model' settings: width must be an int"),
        ({"smoothing": {"unknown": 1}}, "invalid 'smoothing' settings"),
        ({"augmentation": {"unknown": 1}}, "invalid 'augmentation' settings"),
        ({"loss": {"unknown": 1}}, "invalid 'loss' settings"),
    ],
)
def test_train_config_invalid_section(setup: dict[str, Path], tmp_path: Path, section: dict, expected: str) -> None:
    config = tmp_path / "section.json"
    config.write_text(json.dumps(SMALL_MODEL | section))
    _, message = exit_message(["train", "--data", str(setup["faces"]), "--config", str(config), "--out", str(tmp_path / "run")])
    assert message.startswith(f"error: config {config}: ")
    assert expected in message
    assert "unknown" in message or "width" in message


@pytest.mark.parametrize("objective", ["structured", "softargmax", "star"])
def test_train_sections_valid_objectives(setup: dict[str, Path], tmp_path: Path, objective: str) -> None:
    # The early section check must accept the default settings of every objective.
    assert main(train_argv(setup, tmp_path / "run", "--objective", objective)) == 0


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--lr", "-1", "must be a finite number above 0"),
        ("--lr", "0", "must be a finite number above 0"),
        ("--lr", "nan", "must be a finite number above 0"),
        ("--epochs", "0", "must be a positive integer"),
        ("--epochs", "ten", "must be an integer"),
        ("--batch-size", "-4", "must be a positive integer"),
        ("--workers", "-1", "must be 0 or more"),
        ("--threads", "-2", "must be 0 or more"),
        ("--seed", "-1", "must be 0 or more"),
        ("--max-train-faces", "-3", "must be 0 or more"),
    ],
)
def test_train_option_range(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            option: str, value: str, expected: str) -> None:
    stderr = usage_error(train_argv(setup, tmp_path / "run", option, value), capsys)
    assert f"argument {option}: {expected}" in stderr
    assert not (tmp_path / "run").exists()


def test_train_out_is_file(setup: dict[str, Path]) -> None:
    _, message = exit_message(train_argv(setup, setup["text"]))
    assert message == f"error: --out {setup['text']}: {setup['text']} is a file, not a folder; choose another path"


def test_train_out_under_file(setup: dict[str, Path]) -> None:
    _, message = exit_message(train_argv(setup, setup["text"] / "run"))
    assert f"{setup['text']} is a file, not a folder" in message


def test_train_data_is_file(setup: dict[str, Path], tmp_path: Path) -> None:
    argv = train_argv(setup, tmp_path / "run")
    argv[argv.index("--data") + 1] = str(setup["text"])
    _, message = exit_message(argv)
    assert message.startswith(f"error: data folder {setup['text']} is a file")


def test_train_resume_lists_changes(setup: dict[str, Path]) -> None:
    _, message = exit_message(train_argv(setup, setup["run"], "--objective", "softargmax", "--lr", "0.01"))
    assert message.startswith(f"error: {setup['run']} contains a run with a different configuration")
    assert 'objective: run has "structured", this command "softargmax"' in message
    assert "lr: run has 0.002, this command 0.01" in message
    assert "epochs" not in message


# ------------------------------------------------------------------- evaluate


def evaluate_argv(setup: dict[str, Path], *extra: str) -> list[str]:
    return ["evaluate", "--checkpoint", str(setup["run"] / "best.safetensors"), "--data", str(setup["faces"]), *extra]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_evaluate_cuda_unavailable(setup: dict[str, Path]) -> None:
    _, message = exit_message(evaluate_argv(setup, "--device", "cuda"))
    assert message == "error: --device cuda was requested but CUDA is not available; pass --device cpu"


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--threshold", "-5", "must be a finite number above 0"),
        ("--threshold", "nan", "must be a finite number above 0"),
        ("--batch-size", "0", "must be a positive integer"),
        ("--device", "tpu", "invalid choice"),
    ],
)
def test_evaluate_option_range(setup: dict[str, Path], capsys: pytest.CaptureFixture[str],
                               option: str, value: str, expected: str) -> None:
    stderr = usage_error(evaluate_argv(setup, option, value), capsys)
    assert f"argument {option}: {expected}" in stderr


def test_evaluate_ced_folder(setup: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "plots"
    folder.mkdir()
    _, message = exit_message(evaluate_argv(setup, "--ced", str(folder)))
    assert message == f"error: --ced {folder} is a folder; pass a file path such as {folder / 'ced.png'}"
    # matplotlib would have saved the plot to plots.png beside the folder.
    assert not (tmp_path / "plots.png").exists()


def test_evaluate_ced_not_png(setup: dict[str, Path], tmp_path: Path) -> None:
    _, message = exit_message(evaluate_argv(setup, "--ced", str(tmp_path / "ced.txt")))
    assert message == f"error: --ced {tmp_path / 'ced.txt'} must end in .png"


def test_evaluate_ced_under_file(setup: dict[str, Path]) -> None:
    _, message = exit_message(evaluate_argv(setup, "--ced", str(setup["text"] / "ced.png")))
    assert f"{setup['text']} is a file, not a folder" in message


def test_evaluate_per_landmark_under_file(setup: dict[str, Path]) -> None:
    _, message = exit_message(evaluate_argv(setup, "--per-landmark", str(setup["text"] / "errors.json")))
    assert message.startswith(f"error: --per-landmark {setup['text'] / 'errors.json'}")


def test_evaluate_per_landmark_new_folder(setup: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "new" / "errors.json"
    assert main(evaluate_argv(setup, "--per-landmark", str(target), "--json")) == 0
    assert len(json.loads(target.read_text())) == 68


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs the Linux /proc file system")
def test_evaluate_unwritable_ced(setup: dict[str, Path]) -> None:
    # A folder below /proc cannot be created, even by root, but the early path check passes.
    _, message = exit_message(evaluate_argv(setup, "--ced", "/proc/explorer-missing/ced.png"))
    assert message.startswith("error: cannot write the evaluation output:")


def test_evaluate_detector_finds_nothing(setup: dict[str, Path]) -> None:
    # The generated faces are dots on noise, so the Haar detector finds none.
    _, message = exit_message(evaluate_argv(setup, "--box", "detector"))
    assert message.startswith("error: the face detector found none of the 12 annotated faces")
    assert "--box ground-truth" in message


# --------------------------------------------------------------------- report


def test_report_folder_not_run(setup: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _, message = exit_message(["report", str(empty), "--data", str(setup["faces"]), "--out", str(tmp_path / "docs")])
    assert message.startswith(f"error: {empty} has no best.safetensors")
    assert not (tmp_path / "docs").exists()


def test_report_run_is_file(setup: dict[str, Path], tmp_path: Path) -> None:
    _, message = exit_message(["report", str(setup["text"]), "--data", str(setup["faces"]), "--out", str(tmp_path / "docs")])
    assert message == f"error: run folder {setup['text']} is a file; pass folders written by 'explorer train'"


def test_report_missing_run(setup: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    _, message = exit_message(["report", str(missing), "--data", str(setup["faces"]), "--out", str(tmp_path / "docs")])
    assert message.startswith(f"error: run folder {missing} not found")


def test_report_checks_every_run_first(setup: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    _, message = exit_message(["report", str(setup["run"]), str(missing), "--data", str(setup["faces"]),
                               "--out", str(tmp_path / "docs")])
    assert str(missing) in message
    assert not (tmp_path / "docs" / "results.md").exists()


def test_report_corrupt_metrics(setup: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(setup["run"], run)
    (run / "metrics.jsonl").write_text("{not json\n")
    _, message = exit_message(["report", str(run), "--data", str(setup["faces"]), "--out", str(tmp_path / "docs")])
    assert message.startswith(f"error: {run / 'metrics.jsonl'} line 1 is not valid JSON")


def test_report_empty_metrics(setup: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(setup["run"], run)
    (run / "metrics.jsonl").write_text("")
    _, message = exit_message(["report", str(run), "--data", str(setup["faces"]), "--out", str(tmp_path / "docs")])
    assert "records no epoch" in message


def test_report_out_is_file(setup: dict[str, Path]) -> None:
    _, message = exit_message(["report", str(setup["run"]), "--data", str(setup["faces"]), "--out", str(setup["text"])])
    assert f"{setup['text']} is a file, not a folder" in message


def test_report_landmark_count_mismatch(setup: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "ten-points"
    data.mkdir()
    shutil.copy(EXAMPLES / "takeo.ppm", data / "takeo.ppm")
    points = np.stack([np.linspace(100, 200, 10), np.linspace(120, 220, 10)], axis=1)
    lines = ["version: 1", "n_points: 10", "{", *(f"{x:.1f} {y:.1f}" for x, y in points), "}"]
    (data / "takeo.pts").write_text("\n".join(lines) + "\n")
    _, message = exit_message(["report", str(setup["run"]), "--data", str(data), "--out", str(tmp_path / "docs")])
    assert "predicts 68 landmarks" in message
    assert "annotated with 10" in message


def test_report_negative_target(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stderr = usage_error(["report", str(setup["run"]), "--target-nme", "-1"], capsys)
    assert "argument --target-nme: must be a finite number above 0" in stderr


# -------------------------------------------------------------------- predict


def predict_argv(setup: dict[str, Path], *extra: str) -> list[str]:
    return ["predict", str(EXAMPLES / "takeo.ppm"), "--checkpoint", str(setup["run"] / "best.safetensors"),
            "--workers", "0", "--no-progress", *extra]


def test_predict_pts_dir_is_file(setup: dict[str, Path]) -> None:
    _, message = exit_message(predict_argv(setup, "--out", "-", "--pts-dir", str(setup["text"])))
    assert message == f"error: --pts-dir {setup['text']}: {setup['text']} is a file, not a folder; choose another path"


def test_predict_out_is_folder(setup: dict[str, Path], tmp_path: Path) -> None:
    _, message = exit_message(predict_argv(setup, "--out", str(tmp_path)))
    assert message == f"error: --out {tmp_path} is a folder; pass a file path such as {tmp_path / 'faces.jsonl'}"


def test_predict_out_under_file(setup: dict[str, Path]) -> None:
    _, message = exit_message(predict_argv(setup, "--out", str(setup["text"] / "faces.jsonl")))
    assert f"{setup['text']} is a file, not a folder" in message


# ----------------------------------------------------------------------- data


def test_data_show_huge_tile(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "show", "--data", str(setup["faces"]), "--out", str(tmp_path / "sheet.png"), "--tile-size", "100000"])
    assert code == 2
    assert "error: --tile-size must be 16 to 2048 pixels, got 100000" in capsys.readouterr().err


def test_data_show_huge_sheet(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "show", "--data", str(setup["faces"]), "--out", str(tmp_path / "sheet.png"),
                 "--count", "100000", "--tile-size", "2048"])
    assert code == 2
    assert "lower --count or --tile-size" in capsys.readouterr().err


def test_data_show_negative_seed(setup: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stderr = usage_error(["data", "show", "--data", str(setup["faces"]), "--out", str(tmp_path / "s.png"), "--seed", "-1"], capsys)
    assert "argument --seed: must be 0 or more" in stderr


def test_data_show_out_under_file(setup: dict[str, Path]) -> None:
    _, message = exit_message(["data", "show", "--data", str(setup["faces"]), "--out", str(setup["text"] / "sheet.png")])
    assert f"{setup['text']} is a file, not a folder" in message


def test_data_show_empty_split_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    faces = write_generated_faces(tmp_path / "one", 1)
    assert main(["data", "show", "--data", str(faces), "--out", str(tmp_path / "sheet.png")]) == 1
    assert "pass --subset all" in capsys.readouterr().err


def test_data_check_data_is_file(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", "--data", str(setup["text"])]) == 2
    assert f"error: data folder {setup['text']} is a file" in capsys.readouterr().err


def test_data_check_negative_count(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    stderr = usage_error(["data", "check", "--data", str(setup["faces"]), "--expected-count", "-1"], capsys)
    assert "argument --expected-count: must be a positive integer" in stderr


# ----------------------------------------------------------------------- help


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append((name, child))
                found += [(f"{name} {grandchild}", nested) for grandchild, nested in _subparsers(child)]
    return found


def test_help_every_option_documented() -> None:
    for name, parser in _subparsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"


def test_help_runs_for_each_command() -> None:
    for command in (["train"], ["evaluate"], ["report"], ["predict"], ["data", "show"], ["data", "check"]):
        completed = subprocess.run([sys.executable, "-m", "explorer", *command, "--help"], cwd=REPO,
                                   capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, completed.stderr
        assert "usage: explorer" in completed.stdout
