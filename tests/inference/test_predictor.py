"""Predictor, upload loading and face choice, on the shipped checkpoints and generated files."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.core.checkpoints import CheckpointError, save_model
from explorer.core.data import AnnotationError, read_pts
from explorer.core.evaluation import DECODERS
from explorer.core.geometry import box_from_points
from explorer.core.models import build_model
from explorer.inference.predictor import (
    MAX_PIXELS,
    InputError,
    Predictor,
    choose_face,
    load_upload,
    parse_box,
)
from tests.inference import bad_inputs
from tests.inference.shipped import EXAMPLES, checkpoint_folder


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.set_num_threads(1)
    folder = checkpoint_folder()
    return Predictor({"structured": folder / "structured.safetensors", "softargmax": folder / "softargmax.safetensors"})


# -- predictions on the example faces ---------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_predict_points_inside_face_box(predictor: Predictor, name: str) -> None:
    image = load_upload(EXAMPLES[name])
    truth = read_pts(EXAMPLES[name].with_suffix(".pts"), expected_count=68)
    box = box_from_points(truth)
    outputs = predictor.predict(image.rgb, box)

    # The models are trained on the 1.25x box, so every point should land in
    # the box grown by half its size on each side.
    side = max(box[2] - box[0], box[3] - box[1])
    low = box[:2] - 0.5 * side
    high = box[2:] + 0.5 * side
    for model_name, output in outputs.items():
        for decoder in DECODERS:
            points = output.points[decoder]
            assert points.shape == (68, 2), (model_name, decoder)
            assert np.all(points >= low), f"{model_name} {decoder} points leave the face box"
            assert np.all(points <= high), f"{model_name} {decoder} points leave the face box"

        # Most points of the default decoder lie inside the ground-truth box itself.
        points = output.default_points
        inside = np.all((points >= box[:2] - 0.1 * side) & (points <= box[2:] + 0.1 * side), axis=1)
        assert inside.mean() >= 0.75, f"{model_name}: only {inside.mean():.0%} of the points are inside the face"


def test_predict_shapes_and_geometry(predictor: Predictor) -> None:
    image = load_upload(EXAMPLES["takeo"])
    box = box_from_points(read_pts(EXAMPLES["takeo"].with_suffix(".pts")))
    outputs = predictor.predict(image.rgb, box)

    assert set(outputs) == {"structured", "softargmax"}
    for output in outputs.values():
        size = predictor.models[output.name].input_size
        grid = size // output.stride
        assert output.logits.shape == (68, grid, grid)
        assert output.logits.dtype == np.float32
        assert output.crop.shape == (size, size, 3)
        assert output.crop.dtype == np.uint8
        assert set(output.heatmap_points) == set(DECODERS)
        for decoder in DECODERS:
            assert output.heatmap_points[decoder].shape == (68, 2)
            assert np.all(output.heatmap_points[decoder] >= -0.5)
            assert np.all(output.heatmap_points[decoder] <= grid - 0.5)
        probabilities = output.probabilities()
        np.testing.assert_allclose(probabilities.reshape(68, -1).sum(axis=1), 1.0, rtol=1e-6)

        # Image points and heatmap points agree through the crop geometry.
        back = output.geometry.to_crop(output.points["argmax"])
        np.testing.assert_allclose(back, output.heatmap_points["argmax"] * output.stride + (output.stride - 1) / 2, atol=1e-6)


def test_predictor_decoders_match_cards(predictor: Predictor) -> None:
    assert predictor.models["structured"].decoder == "refined"
    assert predictor.models["softargmax"].decoder == "soft-argmax"
    assert predictor.device_name in ("CPU",) or predictor.device_name.startswith("CUDA")
    assert predictor.scheme.count == 68


def test_predictor_rejects_landmark_count_mismatch(tmp_path: Path) -> None:
    folder = checkpoint_folder()
    shutil.copy(folder / "structured.safetensors", tmp_path / "structured.safetensors")
    other = build_model({"num_landmarks": 98, "input_size": 128, "stride": 4, "width": 8, "blocks": 1})
    save_model(tmp_path / "wflw.safetensors", other, {"objective": "structured"})

    with pytest.raises(CheckpointError) as raised:
        Predictor([tmp_path / "structured.safetensors", tmp_path / "wflw.safetensors"])
    message = str(raised.value)
    assert "structured.safetensors has 68" in message
    assert "wflw.safetensors has 98" in message


def test_predictor_rejects_damaged_checkpoint(tmp_path: Path) -> None:
    damaged = tmp_path / "broken.safetensors"
    damaged.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError) as raised:
        Predictor([damaged])
    assert "broken.safetensors" in str(raised.value)


def test_predictor_rejects_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as raised:
        Predictor({"structured": tmp_path / "absent.safetensors"})
    assert "absent.safetensors" in str(raised.value)


def test_predictor_unknown_model_name(predictor: Predictor) -> None:
    with pytest.raises(InputError) as raised:
        predictor.model("star")
    assert "structured" in str(raised.value)


# -- face choice -------------------------------------------------------------


def test_choose_face_detects_takeo() -> None:
    rgb = load_upload(EXAMPLES["takeo"]).rgb
    choice = choose_face(rgb)
    truth_box = box_from_points(read_pts(EXAMPLES["takeo"].with_suffix(".pts")))
    assert choice.source == "detector"
    assert choice.index == 0
    centre = 0.5 * (choice.box[:2] + choice.box[2:])
    assert truth_box[0] < centre[0] < truth_box[2]
    assert truth_box[1] < centre[1] < truth_box[3]


def test_choose_face_falls_back_to_whole_image() -> None:
    rgb = np.full((120, 200, 3), 90, dtype=np.uint8)
    choice = choose_face(rgb)
    assert choice.source == "whole image"
    np.testing.assert_allclose(choice.box, [0, 0, 199, 119])


def test_choose_face_typed_box_wins() -> None:
    rgb = load_upload(EXAMPLES["takeo"]).rgb
    choice = choose_face(rgb, box_text="10, 20, 110, 140")
    assert choice.source == "user box"
    np.testing.assert_allclose(choice.box, [10, 20, 110, 140])


def test_choose_face_index_out_of_range() -> None:
    rgb = load_upload(EXAMPLES["takeo"]).rgb
    with pytest.raises(InputError) as raised:
        choose_face(rgb, face_index=5)
    assert "face 5" in str(raised.value)
    assert "0..0" in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2,30,40", [1, 2, 30, 40]),
        (" [10.5, 20, 30, 40.25] ", [10.5, 20, 30, 40.25]),
        ("10 20 30 40", [10, 20, 30, 40]),
    ],
)
def test_parse_box_accepts_formats(text: str, expected: list[float]) -> None:
    np.testing.assert_allclose(parse_box(text, 100, 100), expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3", "not four numbers"),
        ("a,b,c,d", "not four numbers"),
        ("30,20,10,40", "x1 not above x0"),
        ("500,500,600,600", "outside"),
        ("10,10,13,14", "its longer side must be at least 8 pixels"),
        ("0,0,1e308,1e308", "larger than 4 times the 100 x 100 image"),
        ("-1e308,-1e308,1e308,1e308", "larger than 4 times"),
        ("0,0,100000000,1", "larger than 4 times"),
    ],
)
def test_parse_box_rejects_bad_text(text: str, message: str) -> None:
    with pytest.raises(InputError) as raised:
        parse_box(text, 100, 100)
    assert message in str(raised.value)


def test_parse_box_empty_is_none() -> None:
    assert parse_box("", 10, 10) is None
    assert parse_box(None, 10, 10) is None


# -- upload loading: accepted unusual files ----------------------------------


def test_load_upload_example_formats() -> None:
    for name, path in EXAMPLES.items():
        image = load_upload(path)
        assert image.rgb.dtype == np.uint8, name
        assert image.rgb.ndim == 3, name
        assert image.rgb.shape[2] == 3, name


def test_load_upload_bytes_match_path() -> None:
    path = EXAMPLES["takeo"]
    from_path = load_upload(path).rgb
    from_bytes = load_upload(path.read_bytes()).rgb
    np.testing.assert_array_equal(from_path, from_bytes)


def test_load_upload_rgba_composited_on_white(tmp_path: Path) -> None:
    image = load_upload(bad_inputs.write_rgba_png(tmp_path))
    assert image.rgb.shape == (64, 64, 3)
    np.testing.assert_array_equal(image.rgb[10, 5], [255, 0, 0])
    np.testing.assert_array_equal(image.rgb[10, 60], [255, 255, 255])
    assert any("transparent" in note for note in image.notes)


def test_load_upload_greyscale_becomes_rgb(tmp_path: Path) -> None:
    image = load_upload(bad_inputs.write_grey_png(tmp_path))
    assert image.rgb.shape == (96, 96, 3)
    np.testing.assert_array_equal(image.rgb[..., 0], image.rgb[..., 1])
    np.testing.assert_array_equal(image.rgb[..., 0], image.rgb[..., 2])


def test_load_upload_16bit_uses_full_range(tmp_path: Path) -> None:
    image = load_upload(bad_inputs.write_16bit_png(tmp_path))
    assert image.rgb.dtype == np.uint8
    assert image.rgb.min() == 0
    assert image.rgb.max() == 255
    # The middle of the 16-bit ramp maps to the middle of the 8-bit range, not to a clipped 255.
    assert 100 < int(image.rgb[32, 32, 0]) < 156


def test_load_upload_honours_exif_orientation(tmp_path: Path) -> None:
    image = load_upload(bad_inputs.write_exif_rotated_jpeg(tmp_path))
    # Stored 96 wide x 48 high; orientation 6 turns it 90° clockwise to 48 x 96.
    assert image.rgb.shape == (96, 48, 3)
    top = image.rgb[10, 24].astype(int)
    bottom = image.rgb[-10, 24].astype(int)
    assert top[0] > 200, f"the left (red) half should be on top, got {top}"
    assert top[2] < 60, f"the left (red) half should be on top, got {top}"
    assert bottom[2] > 200, f"the right (blue) half should be at the bottom, got {bottom}"
    assert bottom[0] < 60, f"the right (blue) half should be at the bottom, got {bottom}"


def test_load_upload_animated_gif_first_frame(tmp_path: Path) -> None:
    image = load_upload(bad_inputs.write_animated_gif(tmp_path))
    np.testing.assert_array_equal(image.rgb[32, 32], [255, 0, 0])
    assert any("first of 3 frames" in note for note in image.notes)


def test_load_upload_cmyk_jpeg(tmp_path: Path) -> None:
    image = load_upload(bad_inputs.write_cmyk_jpeg(tmp_path))
    red, green, blue = image.rgb[32, 32].astype(int)
    # Pure cyan ink: no red, full green and blue.
    assert red < 40
    assert green > 215
    assert blue > 215


# -- upload loading: rejected files -------------------------------------------


@pytest.mark.parametrize(
    ("writer", "message"),
    [
        (bad_inputs.write_text_file, "is not an image"),
        (bad_inputs.write_empty_file, "is empty (0 bytes)"),
        (bad_inputs.write_truncated_jpeg, "damaged or truncated"),
        (bad_inputs.write_bomb_png, "900 megapixels, above the limit of 40 megapixels"),
        (bad_inputs.write_tiny_png, "1 x 1 pixels; each side must be at least 32 pixels"),
    ],
)
def test_load_upload_rejects_bad_file(tmp_path: Path, writer, message: str) -> None:  # noqa: ANN001
    path = writer(tmp_path)
    with pytest.raises(InputError) as raised:
        load_upload(path)
    assert message in str(raised.value)
    assert path.name in str(raised.value)


def test_load_upload_checks_pixel_limit_before_decoding(tmp_path: Path) -> None:
    # 8000 x 6000 is under PIL's own guard but over the app's 40-megapixel limit.
    path = bad_inputs.write_png_header(tmp_path, 8000, 6000, "large.png")
    assert 8000 * 6000 > MAX_PIXELS
    with pytest.raises(InputError) as raised:
        load_upload(path)
    assert "8000 x 6000 pixels (48.0 megapixels)" in str(raised.value)


def test_load_upload_empty_bytes() -> None:
    with pytest.raises(InputError) as raised:
        load_upload(b"")
    assert "empty" in str(raised.value)


def test_load_upload_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError) as raised:
        load_upload(tmp_path / "gone.jpg")
    assert "was not found" in str(raised.value)


def test_load_upload_tiny_after_rotation(tmp_path: Path) -> None:
    # 100 x 20 is too narrow on one side, whatever the orientation.
    path = tmp_path / "strip.png"
    Image.new("RGB", (100, 20)).save(path)
    with pytest.raises(InputError) as raised:
        load_upload(path)
    assert "100 x 20 pixels" in str(raised.value)


def test_read_pts_wrong_count(tmp_path: Path) -> None:
    path = bad_inputs.write_wrong_count_pts(tmp_path)
    with pytest.raises(AnnotationError) as raised:
        read_pts(path, expected_count=68)
    assert "has 67 points, expected 68" in str(raised.value)


def test_shipped_cards_are_json() -> None:
    folder = checkpoint_folder()
    for name in ("structured", "softargmax"):
        card = json.loads((folder / f"{name}.json").read_text())
        assert card["objective"] == name
        assert card["model"]["num_landmarks"] == 68


def test_load_upload_png_bytes() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buffer, format="PNG")
    assert load_upload(buffer.getvalue()).rgb.shape == (40, 40, 3)
