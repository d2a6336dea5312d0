"""Label smoothing tab: the image-aware training labels of a face and the edges they follow."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import cv2
import gradio as gr
import numpy as np
import pandas as pd
import torch

from explorer.app.common import face_status, landmark_label, parse_landmark, point_list
from explorer.app.components import CheckedSlider
from explorer.app.config import FACE_VIEW_SIDE
from explorer.app.figures import REGION_COLOURS, colourise, draw_ellipses, upscale
from explorer.app.plots import HeatmapPanel, heatmaps_figure
from explorer.app.sources import Workspace
from explorer.core.data import crop_to_tensor
from explorer.core.geometry import box_from_points, crop_from_box, image_to_heatmap
from explorer.core.heatmaps import gaussian_distributions
from explorer.core.smoothing import SmoothingParams, covariance_distributions, edge_map, label_covariances
from explorer.inference.predictor import InputError

# Slider ranges (minimum, maximum, step) for the SmoothingParams fields, in
# the units the dataclass documents (heatmap pixels, weights, grey levels).
PARAMETER_RANGES: dict[str, tuple[float, float, float]] = {
    "sigma": (0.5, 4.0, 0.1),
    "window": (1, 8, 1),
    "edge_sigma": (0.0, 6.0, 0.25),
    "edge_weight": (0.0, 1.0, 0.05),
    "smooth_sigma": (0.0, 2.0, 0.1),
    "min_edge_scale": (0.01, 0.5, 0.01),
    "min_std": (0.1, 2.0, 0.05),
    "max_std": (1.0, 8.0, 0.25),
}

PARAMETER_HELP = {
    "sigma": "std of the isotropic part (heatmap px)",
    "window": "half-size of the edge window (heatmap px)",
    "edge_sigma": "distance weighting of the edges, 0 = none (heatmap px)",
    "edge_weight": "weight of the edges against the isotropic Gaussian",
    "smooth_sigma": "blur before the Sobel operator (heatmap px)",
    "min_edge_scale": "floor of the edge-map divisor",
    "min_std": "smallest std along an axis (heatmap px)",
    "max_std": "largest std along an axis (heatmap px)",
}

# Rows of the anisotropy table.
TABLE_ROWS = 68

# The label plots show (2 * LABEL_WINDOW + 1) heatmap pixels around the landmark.
LABEL_WINDOW = 8


@dataclass
class SmoothingResult:
    """Everything the Label smoothing tab shows, in the order of its outputs."""

    status: str
    edges: np.ndarray
    ellipses: np.ndarray
    labels: Any
    table: pd.DataFrame
    summary: dict[str, Any]

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.status, self.edges, self.ellipses, self.labels, self.table, self.summary)


def smoothing_parameters(values: dict[str, Any]) -> SmoothingParams:
    """Build SmoothingParams from slider values; ``window`` is rounded to an int, missing fields keep their defaults."""
    known = {field.name for field in dataclasses.fields(SmoothingParams)}
    settings = {}
    for name, value in values.items():
        if name not in known or value is None:
            continue
        if name == "preserve_area":
            if not isinstance(value, bool):
                raise InputError(f"preserve_area {value!r} is not true or false; tick or clear the box")
            settings[name] = value
            continue
        if not math.isfinite(float(value)):
            raise InputError(f"{name} {value} is not a finite number; choose a value on the slider")
        settings[name] = int(round(float(value))) if name == "window" else float(value)

    # SmoothingParams checks this too, but its message uses "<", which the
    # error pop-up would show as HTML entities.
    min_std = settings.get("min_std", SmoothingParams.min_std)
    max_std = settings.get("max_std", SmoothingParams.max_std)
    if min_std > max_std:
        raise InputError(f"min_std={min_std}, max_std={max_std}: min_std must not exceed max_std; lower min_std or raise max_std")
    return SmoothingParams(**settings)


def _to_display(points: np.ndarray, grid: int, side: int = FACE_VIEW_SIDE) -> np.ndarray:
    """Map heatmap points to a ``side``-pixel picture of the grid (pixel-centre convention)."""
    return (np.asarray(points) + 0.5) * (side / grid) - 0.5


def run_smoothing(
    workspace: Workspace,
    image: str | bytes | None,
    example: str | None,
    data_index: float | None,
    points_file: str | None,
    face: float | None,
    box: str | None,
    landmark: str | None,
    **parameters: float,
) -> SmoothingResult:
    """Compute the edge map, label covariances and label distributions of a face."""
    predictor = workspace.predictor
    scheme = predictor.scheme
    selected = parse_landmark(landmark, scheme)
    params = smoothing_parameters(parameters)

    source = workspace.resolve(image, example, data_index, points_file)
    selection = workspace.select(source, face, box)
    model_name = "structured" if "structured" in predictor.models else predictor.names[0]
    loaded = predictor.models[model_name]

    # Landmarks: the annotation when there is one (cropped as in training, from
    # the box of the points), else the structured model's prediction.
    if source.ground_truth is not None:
        points = source.ground_truth
        origin = f"ground truth ({source.ground_truth_origin})"
        geometry = crop_from_box(box_from_points(points), loaded.input_size)
    else:
        output = workspace.predict(source, selection)[model_name]
        points = output.default_points
        origin = "predicted by the structured-loss model (no ground truth for this photo)"
        geometry = output.geometry
    stride = loaded.stride
    grid = loaded.input_size // stride
    crop = geometry.warp(source.rgb)

    images = crop_to_tensor(crop)[None]
    heatmap_points = torch.from_numpy(image_to_heatmap(points, geometry, stride)).float()[None]
    with torch.inference_mode():
        edges = edge_map(images, (grid, grid), params.smooth_sigma, params.min_edge_scale)[0, 0].numpy()
        covariances = label_covariances(images, heatmap_points, (grid, grid), params)
        chosen = heatmap_points[:, selected : selected + 1]
        isotropic = gaussian_distributions(chosen, (grid, grid), params.sigma)[0, 0].numpy()
        image_aware = covariance_distributions(chosen, covariances[:, selected : selected + 1], (grid, grid))[0, 0].numpy()
    covariances = covariances[0].double().numpy()
    centres = heatmap_points[0].double().numpy()

    # Edge map and ellipses, both drawn over the crop at display size.
    scale = FACE_VIEW_SIDE / grid
    edges_picture = upscale(colourise(edges, 1.0, "magma"), nearest=True)
    regions = scheme.region_ids()
    colours = [REGION_COLOURS[region % len(REGION_COLOURS)] for region in regions]
    for index, (x, y) in enumerate(_to_display(centres, grid)):
        colour = (255, 255, 0) if index == selected else (120, 220, 255)
        cv2.circle(edges_picture, (int(round(x)), int(round(y))), 3 if index == selected else 2, colour, -1, cv2.LINE_AA)
    ellipses = draw_ellipses(upscale(crop), centres, covariances, scale, 0.5 * scale - 0.5, colours, sigmas=2.0, selected=selected)

    # The selected landmark's two label distributions over the crop.
    background = upscale(crop, side=grid * 8)
    marker = {"target": centres[selected]}
    figure = heatmaps_figure(
        [
            HeatmapPanel(f"isotropic Gaussian, σ = {params.sigma:g}", isotropic, None, marker, background),
            HeatmapPanel("image-aware N(y, Σ)", image_aware, None, marker, background),
        ],
        height=420,
        shared_scale=True,
        title=f"Landmark {landmark_label(selected, scheme)}: training label distributions over the crop",
        window=LABEL_WINDOW,
    )

    # Anisotropy per landmark: ratio of the covariance's eigenvalues.
    eigenvalues, eigenvectors = np.linalg.eigh(covariances)
    major_std = np.sqrt(eigenvalues[:, 1])
    minor_std = np.sqrt(eigenvalues[:, 0])
    ratio = eigenvalues[:, 1] / eigenvalues[:, 0]
    angles = np.degrees(np.arctan2(eigenvectors[:, 1, 1], eigenvectors[:, 0, 1])) % 180.0
    table = pd.DataFrame(
        {
            "#": np.arange(scheme.count),
            "landmark": list(scheme.names),
            "region": [scheme.region_of(index) for index in range(scheme.count)],
            "eigenvalue ratio": np.round(ratio, 2),
            "major std (heatmap px)": np.round(major_std, 2),
            "minor std (heatmap px)": np.round(minor_std, 2),
            "major axis angle (°)": np.round(angles, 1),
        }
    )
    table = table.sort_values("eigenvalue ratio", ascending=False, kind="stable").head(TABLE_ROWS).reset_index(drop=True)

    summary = {
        "source": source.label,
        "points_from": "ground truth" if source.ground_truth is not None else "prediction",
        "heatmap_size": [grid, grid],
        "parameters": dataclasses.asdict(params),
        "landmark": {"index": selected, "name": scheme.names[selected]},
        "points_heatmap": point_list(centres, 3),
        "covariances": np.round(covariances, 4).tolist(),
        "eigenvalue_ratio": np.round(ratio, 3).tolist(),
    }
    status = f"{face_status(source, selection)} · landmarks: **{origin}** · landmark {landmark_label(selected, scheme)}"
    return SmoothingResult(status, edges_picture, ellipses, figure, table, summary)


@dataclass
class SmoothingComponents:
    """The Label smoothing tab's parameter sliders and outputs."""

    sliders: dict[str, CheckedSlider]
    preserve_area: gr.Checkbox
    outputs: list[gr.components.Component]


def build_smoothing_tab(workspace: Workspace) -> SmoothingComponents:
    """Lay out the Label smoothing tab (inside an open ``gr.Tab``) and return its components."""
    gr.Markdown(
        "Annotators disagree most **along** image edges: a jaw point can slide along the jaw line but hardly across it. "
        "Image-aware smoothing turns each landmark's training label into a Gaussian N(y, Σ) whose covariance Σ comes "
        "from the edge map around the point. Ellipses show 2σ of each Σ over the network's crop.",
        elem_classes=["tab-intro"],
    )
    status = gr.Markdown(label="Status", elem_classes=["status-line"])
    defaults = SmoothingParams()
    sliders: dict[str, CheckedSlider] = {}
    fields = [field for field in dataclasses.fields(SmoothingParams) if field.name in PARAMETER_RANGES]
    with gr.Accordion("Smoothing parameters (release a slider to update)", open=True):
        for start in range(0, len(fields), 4):
            with gr.Row():
                for field in fields[start : start + 4]:
                    low, high, step = PARAMETER_RANGES[field.name]
                    sliders[field.name] = CheckedSlider(
                        low, high, value=getattr(defaults, field.name), step=step, label=field.name, info=PARAMETER_HELP.get(field.name), min_width=160
                    )
        preserve_area = gr.Checkbox(
            value=defaults.preserve_area, label="preserve_area",
            info="scale each label to the isotropic label's area, so edges change its shape but not its spread",
        )
    with gr.Row(equal_height=False):
        edges = gr.Image(label="Edge map at heatmap resolution (landmarks in cyan)", type="numpy", format="png", interactive=False, height=430, elem_id="smoothing-edges")
        ellipses = gr.Image(label="Label covariances: 2σ ellipses on the crop", type="numpy", format="jpeg", interactive=False, height=430, elem_id="smoothing-ellipses")
    labels = gr.Plot(label="Selected landmark's label: isotropic vs image-aware", show_label=False, elem_id="smoothing-labels")
    table = gr.Dataframe(label="Landmarks ranked by anisotropy (eigenvalue ratio of Σ)", interactive=False, max_height=360)
    with gr.Accordion("JSON result", open=False):
        summary = gr.JSON(label="Result")
    return SmoothingComponents(sliders=sliders, preserve_area=preserve_area, outputs=[status, edges, ellipses, labels, table, summary])
