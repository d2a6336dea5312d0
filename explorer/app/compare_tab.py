"""Compare tab: the structured-loss model and the soft-argmax model on the same face."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from explorer.app.common import face_status, landmark_label, parse_landmark, point_list
from explorer.app.config import MODEL_LABELS
from explorer.app.figures import MODEL_COLOURS, crop_box, draw_landmarks, draw_markers, draw_ring, region_view
from explorer.app.plots import HeatmapPanel, error_bar_figure, heatmaps_figure
from explorer.app.sources import Workspace
from explorer.core.geometry import image_to_heatmap
from explorer.core.metrics import nme, per_landmark_errors
from explorer.inference.predictor import InputError

# Rows of the disagreement table.
TABLE_ROWS = 20


@dataclass
class CompareResult:
    """Everything the Compare tab shows, in the order of its outputs."""

    status: str
    photo: np.ndarray
    heatmaps: Any
    metrics: str
    errors: Any
    table: pd.DataFrame
    summary: dict[str, Any]

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.status, self.photo, self.heatmaps, self.metrics, self.errors, self.table, self.summary)


def _compared_models(workspace: Workspace) -> list[str]:
    names = workspace.predictor.names
    if len(names) < 2:
        raise InputError(f"comparing needs two models but only {', '.join(names)} is loaded; load both checkpoints")
    preferred = [name for name in ("structured", "softargmax") if name in names]
    return preferred if len(preferred) == 2 else names[:2]


def run_compare(
    workspace: Workspace,
    image: str | bytes | None,
    example: str | None,
    data_index: float | None,
    points_file: str | None,
    face: float | None,
    box: str | None,
    landmark: str | None,
) -> CompareResult:
    """Run both models on the chosen face and build every output of the Compare tab."""
    predictor = workspace.predictor
    scheme = predictor.scheme
    models = _compared_models(workspace)
    selected = parse_landmark(landmark, scheme)

    source = workspace.resolve(image, example, data_index, points_file)
    selection = workspace.select(source, face, box)
    outputs = workspace.predict(source, selection)
    points = {name: outputs[name].default_points for name in models}
    truth = source.ground_truth

    # Both landmark sets on the face, each model in its own colour.
    first = outputs[models[0]]
    view = region_view(source.rgb, crop_box(first.geometry))
    canvas = view.image.copy()
    if truth is not None:
        canvas = draw_landmarks(view, truth, scheme, numbers=False, image=canvas, colour=(255, 255, 255), radius=1.8)
    for name in models:
        canvas = draw_landmarks(view, points[name], scheme, numbers=False, image=canvas, colour=MODEL_COLOURS.get(name), radius=2.4)
    canvas = draw_markers(canvas, view, {"ground truth": truth[selected]} if truth is not None else {})
    canvas = draw_ring(canvas, view, points[models[0]][selected])

    # The selected landmark's heatmap from each model, side by side.
    panels = []
    for name in models:
        output = outputs[name]
        markers = {decoder: output.heatmap_points[decoder][selected] for decoder in ("argmax", "refined", "soft-argmax")}
        if truth is not None:
            markers["ground truth"] = image_to_heatmap(truth[selected], output.geometry, output.stride)
        title = f"{MODEL_LABELS.get(name, name)} · {output.decoder}"
        panels.append(HeatmapPanel(title, output.probabilities()[selected], output.logits[selected], markers))
    figure = heatmaps_figure(panels, height=420, shared_scale=True, title=f"Landmark {landmark_label(selected, scheme)}: softmax, one colour scale")

    # Where the two models disagree most, in pixels and in percent of the eye distance.
    gap = np.linalg.norm(points[models[0]] - points[models[1]], axis=1)
    reference = truth if truth is not None else points[models[0]]
    first_eye, second_eye = scheme.normaliser
    eye_distance = float(np.linalg.norm(reference[first_eye] - reference[second_eye]))
    table = pd.DataFrame({"#": np.arange(scheme.count), "landmark": list(scheme.names), "models apart (px)": np.round(gap, 2)})
    if eye_distance > 0:
        table["models apart (% inter-ocular)"] = np.round(100.0 * gap / eye_distance, 2)

    summary: dict[str, Any] = {
        "image_size": [source.image.width, source.image.height],
        "source": source.label,
        "face": {"kind": selection.kind, "index": selection.index, "box": point_list(selection.box.reshape(2, 2))},
        "device": predictor.device_name,
        "landmark": {"index": selected, "name": scheme.names[selected]},
        "models": {
            name: {
                "checkpoint": predictor.models[name].path.name,
                "decoder": outputs[name].decoder,
                "points": point_list(points[name]),
                "heatmap_shape": list(outputs[name].logits.shape),
            }
            for name in models
        },
        "mean_distance_px": round(float(gap.mean()), 3),
        "ground_truth": None,
    }

    errors_figure = None
    if truth is not None:
        lines = [f"Ground truth: {source.ground_truth_origin}."]
        errors = {}
        for name in models:
            face_nme = float(nme(points[name][None], truth[None])[0])
            errors[name] = per_landmark_errors(points[name][None], truth[None])[0]
            table[f"{MODEL_LABELS.get(name, name)} error (%)"] = np.round(errors[name], 2)
            summary["models"][name]["nme"] = round(face_nme, 3)
            summary["models"][name]["per_landmark_error"] = np.round(errors[name], 3).tolist()
            lines.append(f"- **{MODEL_LABELS.get(name, name)}**: NME {face_nme:.2f}% of the inter-ocular distance")
        summary["ground_truth"] = point_list(truth)
        metrics = "\n".join(lines)
        errors_figure = error_bar_figure(list(scheme.names), errors, MODEL_LABELS, title="Per-landmark error of each model (% of the inter-ocular distance)")
    else:
        metrics = (
            "No ground truth for this photo, so no NME. Pick an example face, a data face, "
            "or upload the photo's .pts file to see each model's error."
        )

    table = table.sort_values("models apart (px)", ascending=False, kind="stable").head(TABLE_ROWS).reset_index(drop=True)
    return CompareResult(
        status=face_status(source, selection) + f" · landmark {landmark_label(selected, scheme)}",
        photo=canvas,
        heatmaps=figure,
        metrics=metrics,
        errors=errors_figure,
        table=table,
        summary=summary,
    )


@dataclass
class CompareComponents:
    """The Compare tab's outputs."""

    outputs: list[gr.components.Component]
    errors: gr.Plot
    summary: gr.JSON


def build_compare_tab(workspace: Workspace) -> CompareComponents:
    """Lay out the Compare tab (inside an open ``gr.Tab``) and return its components."""
    structured = MODEL_LABELS["structured"]
    softargmax = MODEL_LABELS["softargmax"]
    gr.Markdown(
        f"The same face through the **{structured}** model "
        f"(<span style='color:#ff8c00'>●</span> orange, decoded with refined argmax) and the **{softargmax}** model "
        f"(<span style='color:#00c8ff'>●</span> cyan, decoded with soft-argmax). White points are the annotation "
        "when the photo has one. Both networks are identical; only the training loss differs.",
        elem_classes=["tab-intro"],
    )
    status = gr.Markdown(label="Status", elem_classes=["status-line"])
    with gr.Row(equal_height=False):
        photo = gr.Image(label="Both models' landmarks on the face", type="numpy", format="jpeg", interactive=False, height=430, elem_id="compare-photo", scale=2)
        with gr.Column(scale=3):
            heatmaps = gr.Plot(label="Selected landmark's heatmap from each model", show_label=False, elem_id="compare-heatmaps")
            metrics = gr.Markdown(label="Metrics", elem_id="compare-metrics")
    errors = gr.Plot(label="Per-landmark error of each model", show_label=False, elem_id="compare-errors")
    table = gr.Dataframe(label=f"The {TABLE_ROWS} landmarks where the models disagree most", interactive=False, max_height=360)
    with gr.Accordion("JSON result", open=False):
        summary = gr.JSON(label="Result")
    return CompareComponents(outputs=[status, photo, heatmaps, metrics, errors, table, summary], errors=errors, summary=summary)
