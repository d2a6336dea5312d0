import argparse
import os
from pathlib import Path

import cv2
import pytest

from explorer.core.contact_sheet import sheet_shape
from explorer.data_cli import add_data_commands

EXAMPLES = Path(__file__).resolve().parents[1] / "explorer" / "assets" / "examples"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="explorer")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def data_folder() -> Path:
    """The real data when EXPLORER_DATA is set, else the three example faces."""
    return Path(os.environ.get("EXPLORER_DATA") or EXAMPLES)


def test_show_writes_png_of_grid_size(tmp_path):
    out = tmp_path / "sheet.png"
    code = run(["data", "show", "--data", str(data_folder()), "--out", str(out), "--count", "5", "--subset", "all", "--tile-size", "96"])
    sheet = cv2.imread(str(out))
    faces = 3 if data_folder() == EXAMPLES else 5
    assert code == 0
    assert sheet.shape[:2] == sheet_shape(faces, 96)


def test_show_examples_grid(tmp_path):
    out = tmp_path / "sheet.png"
    code = run(["data", "show", "--data", str(EXAMPLES), "--out", str(out), "--subset", "all", "--tile-size", "64"])
    sheet = cv2.imread(str(out))
    assert code == 0
    assert sheet.shape == (128, 128, 3)


def test_show_same_seed_same_sheet(tmp_path):
    common = ["--data", str(EXAMPLES), "--subset", "all", "--tile-size", "64", "--seed", "4"]
    run(["data", "show", "--out", str(tmp_path / "a.png"), *common])
    run(["data", "show", "--out", str(tmp_path / "b.png"), *common])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_show_without_data_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("EXPLORER_DATA", raising=False)
    code = run(["data", "show", "--out", str(tmp_path / "sheet.png")])
    assert code == 2
    assert "set EXPLORER_DATA" in capsys.readouterr().err


def test_check_examples_prints_split(capsys):
    code = run(["data", "check", "--data", str(EXAMPLES)])
    output = capsys.readouterr().out
    assert code == 0
    assert "split: train 2, val 1" in output


def test_check_lists_bad_files(tmp_path, capsys):
    for name in ("einstein", "takeo"):
        for suffix in (".pts", ".jpg" if name == "einstein" else ".ppm"):
            (tmp_path / f"{name}{suffix}").write_bytes((EXAMPLES / f"{name}{suffix}").read_bytes())
    (tmp_path / "broken.pts").write_text("1 2\n3 x\n")
    (tmp_path / "orphan.pts").write_text("1 2\n")
    cv2.imwrite(str(tmp_path / "broken.jpg"), cv2.imread(str(EXAMPLES / "takeo.ppm")))
    code = run(["data", "check", "--data", str(tmp_path)])
    output = capsys.readouterr().out
    assert code == 1
    assert "broken.pts: line 2" in output
    assert "orphan.pts: no image found" in output
    assert "2 valid faces" in output


@pytest.mark.data
def test_check_real_data_split(real_data, capsys):
    code = run(["data", "check", "--data", str(real_data), "--headers-only"])
    assert code == 0
    assert "split: train 1086, val 121" in capsys.readouterr().out
