"""Inspect tab: one model's landmarks, one landmark's heatmap and the three decoders on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from explorer.app.common import DownloadFolder, face_status, landmark_label, parse_landmark, point_list, source_stem
from explorer.app.config import MODEL_LABELS
from explorer.app.figures import crop_box, draw_boxes, draw_landmarks, draw_markers, overlay_heatmap, photo_view, photo_view_factor, region_view
from explorer.app.plots import HeatmapPanel, heatmaps_figure
from explorer.app.sources import FaceSelection, FaceSource, Workspace
from explorer.core.evaluation import DECODERS
from explorer.core.geometry import image_to_heatmap
from explorer.inference.predictor import ModelOutput

DECODER_PAIRS = (("argmax", "refined"), ("argmax", "soft-argmax"), ("refined", "soft-argmax"))


@dataclass
class InspectResult:
    """Everything the Inspect tab shows, in the order of its outputs."""

    status: str
    landmarks: np.ndarray
    heatmap: Any
    overlay: np.ndarray
    composite: np.ndarray
    table: pd.DataFrame
    summary: dict[str, Any]
    pts_file: str
    json_file: str

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.status,
            self.landmarks,
            self.heatmap,
            self.overlay,
            self.composite,
            self.table,
            self.summary,
            self.pts_file,
            self.json_file,
        )


def draw_photo(source: FaceSource, selection: FaceSelection, points: np.ndarray, workspace: Workspace, selected: int) -> np.ndarray:
    """Draw the face boxes and one model's landmarks on the whole photo."""
    view = photo_view(source.rgb)
    canvas = view.image.copy()
    boxes = [candidate.box for candidate in selection.candidates]
    labels = [f"face {index}" for index in range(len(boxes))]
    if selection.index is None:
        boxes.append(selection.box)
        labels.append(selection.kind)
        chosen = len(boxes) - 1
    else:
        chosen = selection.index
    draw_boxes(canvas, view, boxes, labels, chosen)
    return draw_landmarks(view, points, workspace.predictor.scheme, selected=selected, image=canvas)


def decoder_distance_table(output: ModelOutput, workspace: Workspace) -> pd.DataFrame:
    """Tabulate the distances between decoders per landmark, largest refined-to-soft-argmax first."""
    scheme = workspace.predictor.scheme
    probabilities = output.probabilities()
    rows = []
    for index in range(scheme.count):
        row: dict[str, Any] = {"#": index, "landmark": scheme.names[index]}
        for first, second in DECODER_PAIRS:
            distance = np.linalg.norm(output.points[first][index] - output.points[second][index])
            row[f"{first} ↔ {second} (px)"] = round(float(distance), 2)
        for first, second in DECODER_PAIRS:
            distance = np.linalg.norm(output.heatmap_points[first][index] - output.heatmap_points[second][index])
            row[f"{first} ↔ {second} (heatmap px)"] = round(float(distance), 3)
        row["peak p"] = round(float(probabilities[index].max()), 4)
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values("refined ↔ soft-argmax (px)", ascending=False, kind="stable").reset_index(drop=True)


def nearest_landmark(summary: dict[str, Any] | None, clicked: Sequence[float]) -> int | None:
    """Return the landmark nearest to a click at (x, y) on the Inspect photo, or None before any result.

    ``summary`` is the tab's JSON result, whose points are in image pixels,
    while the click is in pixels of the downscaled photo on screen.
    """
    if not summary or not summary.get("points"):
        return None
    width, height = summary["image_size"]
    factor = photo_view_factor(width, height)
    position = (np.asarray(clicked, dtype=np.float64) + 0.5) / factor - 0.5
    distances = np.linalg.norm(np.asarray(summary["points"]) - position, axis=1)
    return int(distances.argmin())


def run_inspect(
    workspace: Workspace,
    downloads: DownloadFolder,
    image: str | bytes | None,
    example: str | None,
    data_index: float | None,
    points_file: str | None,
    face: float | None,
    box: str | None,
    landmark: str | None,
    model: str | None,
) -> InspectResult:
    """Run one model on the chosen face and build every output of the Inspect tab."""
    predictor = workspace.predictor
    scheme = predictor.scheme
    model_name = model or predictor.names[0]
    loaded = predictor.model(model_name)
    selected = parse_landmark(landmark, scheme)

    source = workspace.resolve(image, example, data_index, points_file)
    selection = workspace.select(source, face, box)
    output = workspace.predict(source, selection)[model_name]
    points = output.default_points
    probabilities = output.probabilities()

    # The selected landmark's heatmap, with every decoder and the ground truth on it.
    markers = {decoder: output.heatmap_points[decoder][selected] for decoder in DECODERS}
    image_markers = {decoder: output.points[decoder][selected] for decoder in DECODERS}
    if source.ground_truth is not None:
        markers["ground truth"] = image_to_heatmap(source.ground_truth[selected], output.geometry, output.stride)
        image_markers["ground truth"] = source.ground_truth[selected]
    title = f"Landmark {landmark_label(selected, scheme)} · {MODEL_LABELS.get(model_name, model_name)} · softmax"
    figure = heatmaps_figure([HeatmapPanel("", probabilities[selected], output.logits[selected], markers)], title=title)

    # The same heatmap and the composite of all heatmaps, warped onto the face.
    face_view = region_view(source.rgb, crop_box(output.geometry))
    overlay = overlay_heatmap(face_view, probabilities[selected], output.geometry, output.stride)
    overlay = draw_markers(overlay, face_view, image_markers)
    composite_values = probabilities.max(axis=0)
    composite = overlay_heatmap(face_view, composite_values, output.geometry, output.stride)
    composite = draw_landmarks(face_view, points, scheme, selected=selected, numbers=False, image=composite, radius=1.6)

    summary = {
        "image_size": [source.image.width, source.image.height],
        "source": source.label,
        "face": {"kind": selection.kind, "index": selection.index, "box": point_list(selection.box.reshape(2, 2)), "candidates": len(selection.candidates)},
        "model": model_name,
        "objective": loaded.objective,
        "checkpoint": loaded.path.name,
        "device": predictor.device_name,
        "decoder": output.decoder,
        "points": point_list(points),
        "decoders": {decoder: point_list(output.points[decoder]) for decoder in DECODERS},
        "heatmap_shape": list(output.logits.shape),
        "landmark": {"index": selected, "name": scheme.names[selected]},
        "ground_truth": point_list(source.ground_truth) if source.ground_truth is not None else None,
    }
    stem = f"{source_stem(source)}_{model_name}"
    return InspectResult(
        status=face_status(source, selection),
        landmarks=draw_photo(source, selection, points, workspace, selected),
        heatmap=figure,
        overlay=overlay,
        composite=composite,
        table=decoder_distance_table(output, workspace),
        summary=summary,
        pts_file=downloads.write_pts(stem, points),
        json_file=downloads.write_json(stem, summary),
    )


@dataclass
class InspectComponents:
    """The Inspect tab's model choice and outputs."""

    model: gr.Radio
    outputs: list[gr.components.Component]
    landmarks: gr.Image
    summary: gr.JSON


def build_inspect_tab(workspace: Workspace) -> InspectComponents:
    """Lay out the Inspect tab (inside an open ``gr.Tab``) and return its components."""
    predictor = workspace.predictor
    choices = [(f"{MODEL_LABELS.get(name, name)}", name) for name in predictor.names]
    gr.Markdown(
        "One model on one face: the landmarks it predicts, the heatmap behind the selected landmark, and where "
        "each decoder puts the point on that heatmap: **argmax** (✕, red), **refined argmax** (◇, green), "
        "**soft-argmax** (○, cyan), and the annotation (☆) when there is one. Click a point on the photo "
        "to select its landmark.",
        elem_classes=["tab-intro"],
    )
    with gr.Row():
        model = gr.Radio(choices=choices, value=predictor.names[0], label="Model", scale=2)
    status = gr.Markdown(label="Status", elem_classes=["status-line"])
    with gr.Row(equal_height=False):
        landmarks = gr.Image(label="Landmarks on the photo (colour = region, yellow ring = selected)", type="numpy", format="jpeg", interactive=False, height=430, elem_id="inspect-landmarks", buttons=["download", "fullscreen"])
        heatmap = gr.Plot(label="Selected landmark's heatmap", show_label=False, elem_id="inspect-heatmap")
    with gr.Row(equal_height=False):
        overlay = gr.Image(label="Selected heatmap on the face", type="numpy", format="jpeg", interactive=False, height=430, elem_id="inspect-overlay")
        composite = gr.Image(label="All heatmaps: max over landmarks of the softmax probabilities", type="numpy", format="jpeg", interactive=False, height=430, elem_id="inspect-composite")
    table = gr.Dataframe(label="Distances between decoders per landmark, largest refined ↔ soft-argmax first", interactive=False, max_height=320, elem_id="inspect-table")
    with gr.Row():
        pts_file = gr.File(label="Landmarks as 300-W .pts", interactive=False)
        json_file = gr.File(label="Landmarks as JSON", interactive=False)
    with gr.Accordion("JSON result", open=False):
        summary = gr.JSON(label="Result", elem_id="inspect-json")
    outputs = [status, landmarks, heatmap, overlay, composite, table, summary, pts_file, json_file]
    return InspectComponents(model=model, outputs=outputs, landmarks=landmarks, summary=summary)
