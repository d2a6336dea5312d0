"""The named API endpoints through gradio_client, against the real server and the shipped checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from explorer.core.data import read_pts
from explorer.core.geometry import box_from_points
from tests.inference.shipped import EXAMPLES

INSPECT_DEFAULTS: dict[str, Any] = {
    "image": None,
    "example": "",
    "data_index": -1,
    "points_file": None,
    "face": 0,
    "box": "",
    "landmark": "36",
    "model": "structured",
}
SMOOTHING_DEFAULTS: dict[str, Any] = {
    "sigma": 1.0,
    "window": 4,
    "edge_sigma": 2.0,
    "edge_weight": 0.8,
    "smooth_sigma": 0.5,
    "min_edge_scale": 0.05,
    "min_std": 0.5,
    "max_std": 4.0,
    "preserve_area": True,
}


def call_inspect(client: Client, **values: Any) -> tuple[Any, ...]:
    return client.predict(**{**INSPECT_DEFAULTS, **values}, api_name="/inspect")


def call_compare(client: Client, **values: Any) -> tuple[Any, ...]:
    arguments = {key: value for key, value in {**INSPECT_DEFAULTS, **values}.items() if key != "model"}
    return client.predict(**arguments, api_name="/compare")


def call_smoothing(client: Client, **values: Any) -> tuple[Any, ...]:
    face = {key: value for key, value in INSPECT_DEFAULTS.items() if key != "model"}
    arguments = {**face, **SMOOTHING_DEFAULTS, **values}
    return client.predict(**arguments, api_name="/smoothing")


def truth_box(name: str) -> np.ndarray:
    return box_from_points(read_pts(EXAMPLES[name].with_suffix(".pts")))


def fraction_inside(points: np.ndarray, box: np.ndarray, margin: float = 0.1) -> float:
    side = max(box[2] - box[0], box[3] - box[1])
    inside = np.all((points >= box[:2] - margin * side) & (points <= box[2:] + margin * side), axis=1)
    return float(inside.mean())


# -- /inspect ------------------------------------------------------------------


def test_inspect_example_face(client: Client) -> None:
    status, landmarks, heatmap, overlay, composite, table, summary, pts_file, json_file = call_inspect(client, example="takeo")

    assert "example 'takeo'" in status
    assert summary["image_size"] == [150, 225]
    assert summary["model"] == "structured"
    assert summary["checkpoint"] == "structured.safetensors"
    assert summary["decoder"] == "refined"
    assert summary["heatmap_shape"] == [68, 32, 32]
    assert summary["landmark"] == {"index": 36, "name": "right eye, outer corner"}
    assert summary["device"] == "CPU" or summary["device"].startswith("CUDA")
    assert summary["face"]["kind"] == "annotated face"

    points = np.asarray(summary["points"])
    assert points.shape == (68, 2)
    assert fraction_inside(points, truth_box("takeo")) >= 0.75
    assert set(summary["decoders"]) == {"argmax", "refined", "soft-argmax"}
    np.testing.assert_allclose(summary["decoders"]["refined"], summary["points"])

    # Pictures come back as files, the heatmap as plotly JSON at heatmap resolution.
    for path in (landmarks, overlay, composite):
        with Image.open(path) as picture:
            assert picture.size[0] >= 100
    assert heatmap["type"] == "plotly"
    figure = json.loads(heatmap["plot"])
    heatmap_trace = next(trace for trace in figure["data"] if trace["type"] == "heatmap")
    assert np.asarray(heatmap_trace["z"]).shape == (32, 32)
    marker_names = {trace.get("name") for trace in figure["data"] if trace["type"] == "scatter"}
    assert {"argmax", "refined", "soft-argmax", "ground truth"} <= marker_names

    # The table lists every landmark, largest refined-to-soft-argmax distance first.
    assert len(table["data"]) == 68
    column = table["headers"].index("refined ↔ soft-argmax (px)")
    distances = [row[column] for row in table["data"]]
    assert distances == sorted(distances, reverse=True)

    # Downloads: the .pts file contains the points, the JSON file the summary.
    np.testing.assert_allclose(read_pts(pts_file, expected_count=68), points, atol=0.01)
    assert json.loads(Path(json_file).read_text())["points"] == summary["points"]


def test_inspect_uploaded_photo_uses_detected_face(client: Client) -> None:
    status, *_, summary, _, _ = call_inspect(client, image=handle_file(str(EXAMPLES["breakingbad"])))

    assert "upload 'breakingbad.jpg'" in status
    assert summary["face"]["kind"] == "detected face"
    assert summary["ground_truth"] is None
    box = np.asarray(summary["face"]["box"]).reshape(4)
    assert fraction_inside(np.asarray(summary["points"]), box, margin=0.15) >= 0.75


def test_inspect_softargmax_model(client: Client) -> None:
    *_, summary, _, _ = call_inspect(client, example="takeo", model="softargmax")
    assert summary["model"] == "softargmax"
    assert summary["decoder"] == "soft-argmax"
    np.testing.assert_allclose(summary["decoders"]["soft-argmax"], summary["points"])
    assert fraction_inside(np.asarray(summary["points"]), truth_box("takeo")) >= 0.75


def test_inspect_landmark_by_name(client: Client) -> None:
    *_, summary, _, _ = call_inspect(client, example="takeo", landmark="Left eye, outer corner")
    assert summary["landmark"]["index"] == 45


def test_inspect_typed_box(client: Client) -> None:
    box = truth_box("takeo")
    text = ", ".join(f"{value:.1f}" for value in box)
    status, *_, summary, _, _ = call_inspect(client, image=handle_file(str(EXAMPLES["takeo"])), box=text)
    assert summary["face"]["kind"] == "typed box"
    assert "typed box" in status
    assert fraction_inside(np.asarray(summary["points"]), box) >= 0.75


def test_inspect_whole_image_without_face(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "wall.png"
    Image.new("RGB", (160, 120), (120, 130, 140)).save(path)
    status, *_, summary, _, _ = call_inspect(client, image=handle_file(str(path)))
    assert summary["face"]["kind"] == "whole image"
    assert "no face found" in status


# -- /compare ------------------------------------------------------------------


def test_compare_example_with_ground_truth(client: Client) -> None:
    status, photo, heatmaps, metrics, errors, table, summary = call_compare(client, example="einstein", landmark="8")

    assert set(summary["models"]) == {"structured", "softargmax"}
    assert summary["models"]["structured"]["decoder"] == "refined"
    assert summary["models"]["softargmax"]["decoder"] == "soft-argmax"
    for model in summary["models"].values():
        assert model["heatmap_shape"] == [68, 32, 32]
        assert np.asarray(model["points"]).shape == (68, 2)
        assert 0 < model["nme"] < 100
        assert len(model["per_landmark_error"]) == 68
        assert np.isclose(np.mean(model["per_landmark_error"]), model["nme"], atol=0.01)
    assert "NME" in metrics
    assert errors is not None and errors["type"] == "plotly"

    figure = json.loads(heatmaps["plot"])
    assert sum(trace["type"] == "heatmap" for trace in figure["data"]) == 2
    assert len(table["data"]) == 20
    column = table["headers"].index("models apart (px)")
    gaps = [row[column] for row in table["data"]]
    assert gaps == sorted(gaps, reverse=True)
    with Image.open(photo) as picture:
        assert picture.size[0] >= 100


def test_compare_uploaded_points_file(client: Client) -> None:
    status, *_, metrics, _, _, summary = call_compare(
        client, image=handle_file(str(EXAMPLES["takeo"])), points_file=handle_file(str(EXAMPLES["takeo"].with_suffix(".pts")))
    )
    assert "uploaded takeo.pts" in metrics
    assert summary["ground_truth"] is not None
    assert summary["models"]["structured"]["nme"] < 30


def test_compare_without_ground_truth(client: Client) -> None:
    *_, metrics, errors, table, summary = call_compare(client, image=handle_file(str(EXAMPLES["takeo"])))
    assert "No ground truth" in metrics
    assert errors is None
    assert "nme" not in summary["models"]["structured"]


# -- /smoothing ----------------------------------------------------------------


def test_smoothing_example_covariances(client: Client) -> None:
    status, edges, ellipses, labels, table, summary = call_smoothing(client, example="takeo", landmark="8")

    assert summary["points_from"] == "ground truth"
    assert "ground truth" in status
    assert summary["heatmap_size"] == [32, 32]
    covariances = np.asarray(summary["covariances"])
    assert covariances.shape == (68, 2, 2)
    np.testing.assert_allclose(covariances, covariances.transpose(0, 2, 1), atol=1e-6)
    eigenvalues = np.linalg.eigvalsh(covariances)
    assert np.all(eigenvalues >= 0.5**2 - 1e-3)
    assert np.all(eigenvalues <= 4.0**2 + 1e-3)
    assert max(summary["eigenvalue_ratio"]) > 1.5, "some landmark on an edge should get an elongated label"

    figure = json.loads(labels["plot"])
    assert sum(trace["type"] == "heatmap" for trace in figure["data"]) == 2
    ratio_column = table["headers"].index("eigenvalue ratio")
    ratios = [row[ratio_column] for row in table["data"]]
    assert ratios == sorted(ratios, reverse=True)
    for path in (edges, ellipses):
        with Image.open(path) as picture:
            assert picture.size == (448, 448)


def test_smoothing_edge_weight_zero_is_isotropic(client: Client) -> None:
    *_, summary = call_smoothing(client, example="takeo", edge_weight=0.0, sigma=1.5)
    covariances = np.asarray(summary["covariances"])
    np.testing.assert_allclose(covariances, np.broadcast_to(1.5**2 * np.eye(2), covariances.shape), atol=1e-4)
    assert summary["parameters"]["edge_weight"] == 0.0


def test_smoothing_uses_prediction_without_ground_truth(client: Client) -> None:
    status, *_, summary = call_smoothing(client, image=handle_file(str(EXAMPLES["takeo"])))
    assert summary["points_from"] == "prediction"
    assert "predicted by the structured-loss model" in status


# -- /lesson -------------------------------------------------------------------


def call_lesson(client: Client, **values: Any) -> tuple[Any, ...]:
    return client.predict(**values, api_name="/lesson")


def test_lesson_presets_share_soft_argmax_not_argmax(client: Client) -> None:
    *_, summary = call_lesson(client)
    presets = summary["presets"]
    assert set(presets) == {"single_peak", "two_peaks", "plateau", "ring"}
    centre = presets["single_peak"]["soft-argmax"]
    for name, points in presets.items():
        np.testing.assert_allclose(points["soft-argmax"], centre, atol=1e-3, err_msg=name)
    argmaxes = {tuple(points["argmax"]) for points in presets.values()}
    assert len(argmaxes) == 4, f"the four shapes must have four different argmax positions, got {argmaxes}"


def test_lesson_two_peaks_decoders_differ(client: Client) -> None:
    *_, summary = call_lesson(client, shape="two peaks", centre_x=15, centre_y=15, distance=6, weight=0.5)
    builder = summary["builder"]
    np.testing.assert_allclose(builder["soft-argmax"], [15, 15], atol=1e-3)
    assert abs(builder["argmax"][0] - 15) == pytest.approx(6)

    # A heavier left peak pulls the soft-argmax to the left.
    *_, heavier = call_lesson(client, shape="two peaks", centre_x=15, centre_y=15, distance=6, weight=0.8)
    assert heavier["builder"]["soft-argmax"][0] < 15 - 1


def test_lesson_training_reshapes_rows(client: Client) -> None:
    builder, presets, rows, trajectory, summary = call_lesson(client, target=36, start_centre=30, start_offset=12, steps=150, learning_rate=1.0, optimiser="SGD", step=150)
    training = summary["training"]
    structured = training["structured"]
    softargmax = training["softargmax"]
    assert len(structured["soft_argmax"]) == 151
    assert len(softargmax["argmax"]) == 151

    # Both losses bring the soft-argmax near the target...
    assert abs(structured["final_soft_argmax"] - 36) < 1.0
    assert abs(softargmax["final_soft_argmax"] - 36) < 2.0
    # ...but only the structured loss puts the heatmap's peak on it.
    assert structured["final_argmax"] == 36
    assert softargmax["final_argmax"] != 36
    for figure in (builder, presets, rows, trajectory):
        assert figure["type"] == "plotly"


def test_lesson_step_slider_shows_earlier_rows(client: Client) -> None:
    *_, summary = call_lesson(client, steps=150, step=0)
    assert summary["training"]["step"] == 0
    *_, clamped = call_lesson(client, steps=50, step=150)
    assert clamped["training"]["step"] == 50


def test_smoothing_preserve_area_keeps_determinant(client: Client) -> None:
    kept = call_smoothing(client, example="takeo", preserve_area=True)[-1]
    free = call_smoothing(client, example="takeo", preserve_area=False)[-1]
    kept_determinants = np.linalg.det(np.array(kept["covariances"]))
    free_determinants = np.linalg.det(np.array(free["covariances"]))

    # sigma = 1, so an area-preserving label has det(Sigma) = sigma^4 = 1,
    # except where the min_std / max_std clamp changes an axis.
    assert kept["parameters"]["preserve_area"] is True
    assert np.median(kept_determinants) == pytest.approx(1.0, abs=0.02)
    assert np.median(free_determinants) > 1.05
