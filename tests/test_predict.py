"""The ``predict`` command: JSON lines per face, error lines, .pts files and batching across images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from explorer.cli import main
from explorer.core.checkpoints import save_model
from explorer.core.data import read_pts
from explorer.core.models import build_model
from explorer.inference.detection import landmark_box
from explorer.inference.predictor import Predictor, find_faces, load_upload
from explorer.predict_cli import IMAGE_SUFFIXES, ImageInput, PtsWriter, find_images
from tests.conftest import EXAMPLES

DECODER_NAMES = {"argmax", "refined", "soft-argmax"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random 68-point structured-loss checkpoint; the format, not the accuracy, is under test."""
    torch.manual_seed(0)
    model = build_model({"num_landmarks": 68, "input_size": 64, "stride": 4, "width": 16, "blocks": 1}).eval()
    path = tmp_path_factory.mktemp("checkpoint") / "random.safetensors"
    save_model(path, model, {"objective": "structured", "decoder": "refined", "temperature": 1.0})
    return path


def _write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of one-face, two-face, no-face and broken images, with a nested folder and a non-image file."""
    folder = tmp_path_factory.mktemp("images")
    takeo = load_upload(EXAMPLES / "takeo.ppm").rgb
    shutil.copy(EXAMPLES / "takeo.ppm", folder / "a_takeo.ppm")
    _write_rgb(folder / "b_two.png", np.concatenate([takeo, takeo[:, ::-1]], axis=1))
    noise = np.random.default_rng(0).integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    _write_rgb(folder / "c_noise.bmp", noise)
    (folder / "d_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    _write_rgb(folder / "nested" / "e_takeo.webp", takeo)
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def _predict(arguments: list[str], out: Path) -> list[dict[str, Any]]:
    """Run predict and return its JSON lines; without --workers, images are read in this process (faster to start)."""
    if "--workers" not in arguments:
        arguments = [*arguments, "--workers", "0"]
    assert main(["predict", *arguments, "--out", str(out), "--no-progress"]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def _faces_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if "points" in line]


def test_find_images_recurses_by_suffix(images: Path) -> None:
    found, problems = find_images([images, images / "missing.png"])

    assert [item.relative.as_posix() for item in found] == [
        "a_takeo.ppm", "b_two.png", "c_noise.bmp", "d_broken.jpg", "nested/e_takeo.webp",
    ]
    assert problems == [(images / "missing.png", "file or folder not found")]
    assert ".webp" in IMAGE_SUFFIXES


def test_lines_per_face_in_input_order(images: Path, checkpoint: Path, tmp_path: Path) -> None:
    lines = _predict([str(images), "--checkpoint", str(checkpoint), "--workers", "0"], tmp_path / "out.jsonl")

    assert [(Path(line["file"]).name, line.get("face")) for line in lines] == [
        ("a_takeo.ppm", 0), ("b_two.png", 0), ("b_two.png", 1), ("c_noise.bmp", None), ("d_broken.jpg", None),
        ("e_takeo.webp", 0),
    ]
    two = lines[1]
    assert two["faces"] == 2
    assert two["source"] == "detector"
    assert two["detector"] == "frontal"
    assert len(two["box"]) == 4
    assert two["image_size"] == [300, 225]


def test_face_line_has_every_decoder(images: Path, checkpoint: Path, tmp_path: Path) -> None:
    lines = _faces_of(_predict([str(images / "a_takeo.ppm"), "--checkpoint", str(checkpoint)], tmp_path / "out.jsonl"))
    line = lines[0]

    assert line["decoder"] == "refined"
    assert set(line["decoders"]) == DECODER_NAMES
    assert np.asarray(line["points"]).shape == (68, 2)
    assert line["points"] == line["decoders"]["refined"]
    assert "heatmap" not in line


def test_error_lines_for_bad_inputs(images: Path, checkpoint: Path, tmp_path: Path) -> None:
    lines = _predict(
        [str(images / "c_noise.bmp"), str(images / "d_broken.jpg"), str(tmp_path / "missing.jpg"), "--checkpoint", str(checkpoint)],
        tmp_path / "out.jsonl",
    )
    by_name = {Path(line["file"]).name: line for line in lines}

    assert by_name["c_noise.bmp"]["faces"] == 0
    assert "no face found" in by_name["c_noise.bmp"]["error"]
    assert "could not be read" in by_name["d_broken.jpg"]["error"] or "not an image" in by_name["d_broken.jpg"]["error"]
    assert by_name["missing.jpg"]["error"] == "file or folder not found"


def test_whole_image_fallback(images: Path, checkpoint: Path, tmp_path: Path) -> None:
    lines = _predict([str(images / "c_noise.bmp"), "--checkpoint", str(checkpoint), "--whole-image"], tmp_path / "out.jsonl")

    assert len(lines) == 1
    assert lines[0]["source"] == "whole image"
    assert lines[0]["faces"] == 0
    assert lines[0]["box"] == [0.0, 0.0, 159.0, 119.0]
    assert np.asarray(lines[0]["points"]).shape == (68, 2)


def test_all_inputs_missing_exits(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no images to predict on"):
        main(["predict", str(tmp_path / "missing.png"), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out.jsonl")])


def test_batching_keeps_points(images: Path, checkpoint: Path, tmp_path: Path) -> None:
    arguments = [str(images), "--checkpoint", str(checkpoint), "--workers", "0"]
    unbatched = _faces_of(_predict([*arguments, "--batch-size", "1"], tmp_path / "one.jsonl"))
    batched_lines = _faces_of(_predict([*arguments, "--batch-size", "3"], tmp_path / "three.jsonl"))

    assert len(unbatched) == len(batched_lines) == 4
    for single, batched in zip(unbatched, batched_lines):
        assert single["file"] == batched["file"]
        np.testing.assert_allclose(batched["points"], single["points"], atol=2e-3)


def test_workers_keep_output(images: Path, checkpoint: Path, tmp_path: Path) -> None:
    arguments = [str(images), "--checkpoint", str(checkpoint)]
    in_process = _predict([*arguments, "--workers", "0"], tmp_path / "main.jsonl")
    in_workers = _predict([*arguments, "--workers", "2"], tmp_path / "workers.jsonl")

    assert in_workers == in_process


def test_points_match_predictor(images: Path, checkpoint: Path, tmp_path: Path) -> None:
    line = _faces_of(_predict([str(images / "a_takeo.ppm"), "--checkpoint", str(checkpoint)], tmp_path / "out.jsonl"))[0]
    rgb = load_upload(images / "a_takeo.ppm").rgb
    box = landmark_box(find_faces(rgb)[0])
    output = next(iter(Predictor([checkpoint], device="cpu").predict(rgb, box).values()))

    np.testing.assert_allclose(line["box"], box, atol=0.01)
    for decoder in DECODER_NAMES:
        np.testing.assert_allclose(line["decoders"][decoder], output.points[decoder], atol=2e-3)


def test_heatmap_summary(images: Path, checkpoint: Path, tmp_path: Path) -> None:
    arguments = [str(images / "a_takeo.ppm"), "--checkpoint", str(checkpoint), "--heatmap-summary"]
    line = _faces_of(_predict(arguments, tmp_path / "out.jsonl"))[0]
    peaks = np.asarray(line["heatmap"]["peak_probability"])
    disagreement = np.asarray(line["heatmap"]["disagreement_px"])

    assert peaks.shape == disagreement.shape == (68,)
    assert np.all((peaks > 0) & (peaks <= 1))
    refined_to_soft = np.linalg.norm(np.subtract(line["decoders"]["refined"], line["decoders"]["soft-argmax"]), axis=1)
    assert np.all(disagreement >= refined_to_soft - 2e-3)


def test_pts_files_per_face(images: Path, checkpoint: Path, tmp_path: Path) -> None:
    pts_dir = tmp_path / "pts"
    lines = _faces_of(_predict([str(images), "--checkpoint", str(checkpoint), "--pts-dir", str(pts_dir)], tmp_path / "out.jsonl"))

    written = sorted(path.relative_to(pts_dir).as_posix() for path in pts_dir.rglob("*.pts"))
    assert written == ["a_takeo.pts", "b_two_0.pts", "b_two_1.pts", "nested/e_takeo.pts"]
    for line in lines:
        np.testing.assert_allclose(read_pts(line["pts"]), line["points"], atol=2e-3)


def test_pts_names_stay_unique(tmp_path: Path) -> None:
    writer = PtsWriter(tmp_path)
    points = np.zeros((68, 2))
    first = writer.write(ImageInput(tmp_path / "a.jpg", Path("a.jpg")), 0, 1, points)
    second = writer.write(ImageInput(tmp_path / "a.png", Path("a.png")), 0, 1, points)
    third = writer.write(ImageInput(tmp_path / "other" / "a.png", Path("a.png")), 0, 1, points)

    assert [first.name, second.name, third.name] == ["a.pts", "a.png.pts", "a.png.2.pts"]


def test_output_to_stdout(images: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(images / "a_takeo.ppm"), "--checkpoint", str(checkpoint), "--out", "-", "--workers", "0", "--no-progress"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert len(lines) == 1
    assert lines[0]["face"] == 0
