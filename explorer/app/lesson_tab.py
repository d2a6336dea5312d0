"""Soft-argmax lesson tab: heatmaps that soft-argmax cannot tell apart, and how each loss reshapes a heatmap.

Builder and presets use the failure-case heatmaps of :mod:`explorer.core.heatmaps`.
The training demo optimises the logits of one heatmap row directly (no
network) with :class:`SoftArgmaxLoss` and with :class:`StructuredLoss`, on a
(1, 1, 1, W) tensor, and records the row after every step.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from explorer.app.components import CheckedSlider
from explorer.app.plots import MARKER_COLOURS, HeatmapPanel, heatmaps_figure, line_figure
from explorer.core.heatmaps import decode_argmax, decode_refined, plateau, ring, same_soft_argmax_examples, single_peak, soft_argmax, two_peaks
from explorer.core.losses import SoftArgmaxLoss, StructuredLoss
from explorer.inference.predictor import InputError

# Side of the builder's square grid. Odd, so the default centre is the middle pixel.
BUILDER_GRID = 31

# Width of the trained heatmap row.
ROW_WIDTH = 64

# Logit floor of the initial row. The core builders' default (-50) gives
# pixels a softmax weight of about 1e-22, where no loss gradient can revive
# them, so the row starts at a floor that training can still move.
ROW_MIN_LOGIT = -10.0

# Spread of the two initial peaks, in heatmap pixels.
ROW_PEAK_SIGMA = 2.0

MAX_STEPS = 400

SHAPES = ("single peak", "two peaks", "plateau", "ring")
OPTIMISERS = ("SGD", "Adam")
LOSS_LABELS = {"softargmax": "soft-argmax loss (L1)", "structured": "structured loss"}
LOSS_COLOURS = {"softargmax": "#00c8ff", "structured": "#ff8c00"}


@dataclass
class LessonResult:
    """Everything the Soft-argmax lesson tab shows, in the order of its outputs."""

    builder: go.Figure
    presets: go.Figure
    rows: go.Figure
    trajectory: go.Figure
    summary: dict[str, Any]

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.builder, self.presets, self.rows, self.trajectory, self.summary)


def _decoded(logits: torch.Tensor, temperature: float = 1.0) -> dict[str, list[float]]:
    """Decode a (1, 1, H, W) heatmap with every decoder, as (x, y) lists."""
    return {
        "argmax": decode_argmax(logits)[0, 0].tolist(),
        "refined": decode_refined(logits)[0, 0].tolist(),
        "soft-argmax": soft_argmax(logits, temperature)[0, 0].tolist(),
    }


def build_heatmap(shape: str, centre_x: float, centre_y: float, sigma: float, distance: float, weight: float) -> torch.Tensor:
    """Build the builder's (1, 1, G, G) logits for one of ``SHAPES``."""
    centre = (int(round(centre_x)), int(round(centre_y)))
    size = (BUILDER_GRID, BUILDER_GRID)
    if shape == "single peak":
        return single_peak(size, centre, sigma)
    if shape == "two peaks":
        return two_peaks(size, centre, float(distance), sigma, weight)
    if shape == "plateau":
        return plateau(size, centre, float(distance), sigma)
    if shape == "ring":
        return ring(size, centre, float(distance), sigma)
    raise InputError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")


def builder_figure(logits: torch.Tensor, temperature: float, centre: tuple[int, int], decoded: dict[str, list[float]]) -> go.Figure:
    """Plot the built heatmap (softmax at the temperature) and its profile along the centre row."""
    probabilities = torch.softmax(logits.flatten() / temperature, dim=0).reshape(logits.shape[-2:]).numpy()
    row = centre[1]

    figure = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], subplot_titles=[f"softmax(H / τ), τ = {temperature:g}", f"profile along row y = {row}"], horizontal_spacing=0.1)
    figure.add_trace(
        go.Heatmap(z=np.round(probabilities, 6).tolist(), colorscale="Inferno", zmin=0, showscale=False, hovertemplate="x %{x}, y %{y}<br>p = %{z:.4f}<extra></extra>"),
        row=1,
        col=1,
    )

    # The 2-D heatmap with every decoder and the centre marked.
    markers = {**decoded, "centre": list(centre)}
    for name, point in markers.items():
        colour = MARKER_COLOURS.get(name, "#ffffff")
        symbol = {"argmax": "x-thin-open", "refined": "diamond-open", "soft-argmax": "circle-open", "centre": "cross-thin-open"}[name]
        figure.add_trace(
            go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name=name, marker={"symbol": symbol, "size": 14, "color": colour, "line": {"width": 2.5, "color": colour}}, hovertemplate=f"{name}: x %{{x:.2f}}, y %{{y:.2f}}<extra></extra>"),
            row=1,
            col=1,
        )

    # The profile along the centre row, with argmax and soft-argmax as vertical lines.
    figure.add_trace(
        go.Scatter(x=list(range(BUILDER_GRID)), y=np.round(probabilities[row], 6).tolist(), mode="lines", line={"shape": "hvh", "color": "#ff8c00"}, fill="tozeroy", name="p on the centre row", showlegend=False),
        row=1,
        col=2,
    )
    for name in ("argmax", "soft-argmax"):
        figure.add_vline(x=decoded[name][0], line_color=MARKER_COLOURS[name], line_dash="dash" if name == "argmax" else "solid", row=1, col=2)

    figure.update_xaxes(range=[-0.5, BUILDER_GRID - 0.5], showgrid=False, row=1, col=1)
    figure.update_yaxes(range=[BUILDER_GRID - 0.5, -0.5], scaleanchor="x", showgrid=False, row=1, col=1)
    figure.update_xaxes(title_text="x (heatmap px)", row=1, col=2)
    figure.update_yaxes(title_text="probability", row=1, col=2)
    figure.update_layout(height=380, margin={"l": 10, "r": 10, "t": 40, "b": 10}, legend={"orientation": "h", "y": -0.12, "x": 0.3}, paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    return figure


@lru_cache(maxsize=4)
def presets(sigma: float = 1.0) -> tuple[go.Figure, dict[str, dict[str, list[float]]]]:
    """Plot the four heatmaps of ``same_soft_argmax_examples`` with their decoders."""
    examples = same_soft_argmax_examples((BUILDER_GRID, BUILDER_GRID), sigma=sigma)
    panels = []
    decoded_all = {}
    for name, logits in examples.items():
        decoded = _decoded(logits)
        decoded_all[name] = decoded
        probabilities = torch.softmax(logits.flatten(), dim=0).reshape(logits.shape[-2:]).numpy()
        markers = {decoder: decoded[decoder] for decoder in ("argmax", "soft-argmax")}
        panels.append(HeatmapPanel(name.replace("_", " "), probabilities, logits[0, 0].numpy(), markers))
    figure = heatmaps_figure(panels, height=320, title="Same soft-argmax, different shapes: each heatmap's soft-argmax is the centre")
    figure.update_traces(showscale=False, selector={"type": "heatmap"})
    return figure, decoded_all


@dataclass(frozen=True)
class TrainingRecord:
    """One loss's training run on a heatmap row.

    Attributes:
        probabilities: (steps + 1, W) softmax of the row before the first step and after every step.
        soft_argmax: (steps + 1,) soft-argmax position after every step.
        argmax: (steps + 1,) argmax position.
        loss: (steps + 1,) loss value.
    """

    probabilities: np.ndarray
    soft_argmax: np.ndarray
    argmax: np.ndarray
    loss: np.ndarray


def train_row(
    loss_name: str,
    target: float,
    start_centre: int,
    start_offset: float,
    steps: int,
    learning_rate: float,
    optimiser: str,
    report: Callable[[int], None] | None = None,
) -> TrainingRecord:
    """Optimise one heatmap row's logits towards ``target`` and record every step."""
    loss_function = SoftArgmaxLoss("l1") if loss_name == "softargmax" else StructuredLoss()
    initial = two_peaks((1, ROW_WIDTH), (start_centre, 0), start_offset, ROW_PEAK_SIGMA, 0.5, min_logit=ROW_MIN_LOGIT)
    logits = initial.clone().requires_grad_(True)
    if optimiser == "Adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam([logits], lr=learning_rate)
    else:
        optimizer = torch.optim.SGD([logits], lr=learning_rate)
    points = torch.tensor([[[float(target), 0.0]]])

    probabilities = np.zeros((steps + 1, ROW_WIDTH))
    mean = np.zeros(steps + 1)
    peak = np.zeros(steps + 1)
    losses = np.zeros(steps + 1)
    for step in range(steps + 1):
        loss = loss_function(logits, points)
        with torch.no_grad():
            probabilities[step] = torch.softmax(logits.flatten(), dim=0).numpy()
            mean[step] = soft_argmax(logits)[0, 0, 0].item()
            peak[step] = decode_argmax(logits)[0, 0, 0].item()
            losses[step] = loss.item()
        if step == steps:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if report is not None:
            report(step)
    return TrainingRecord(probabilities, mean, peak, losses)


_training_cache: dict[tuple[Any, ...], dict[str, TrainingRecord]] = {}

# Guards _training_cache, which concurrent lesson events read and trim.
_training_cache_lock = threading.Lock()


def train_both(
    target: float,
    start_centre: int,
    start_offset: float,
    steps: int,
    learning_rate: float,
    optimiser: str,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, TrainingRecord]:
    """Train the row with both losses, reusing the last few runs with the same settings."""
    key = (float(target), int(start_centre), float(start_offset), int(steps), float(learning_rate), optimiser)
    with _training_cache_lock:
        cached = _training_cache.get(key)
    if cached is not None:
        return cached
    records = {}
    for number, name in enumerate(LOSS_LABELS):
        def report(step: int, number: int = number, name: str = name) -> None:
            if progress is not None and step % 10 == 0:
                progress((number * steps + step) / (2 * steps), f"training with the {LOSS_LABELS[name]}")

        records[name] = train_row(name, target, start_centre, start_offset, steps, learning_rate, optimiser, report)
    with _training_cache_lock:
        while len(_training_cache) >= 8:
            _training_cache.pop(next(iter(_training_cache)))
        _training_cache[key] = records
    return records


def rows_figure(records: dict[str, TrainingRecord], step: int, target: float) -> go.Figure:
    """Plot each loss's row at one step, with the target and both decoders."""
    names = list(records)
    titles = [
        f"{LOSS_LABELS[name]}: soft-argmax {records[name].soft_argmax[step]:.2f}, argmax {records[name].argmax[step]:.0f}, loss {records[name].loss[step]:.3f}"
        for name in names
    ]
    figure = make_subplots(rows=len(names), cols=1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.14)
    x = np.arange(ROW_WIDTH)
    for row, name in enumerate(names, start=1):
        record = records[name]
        figure.add_trace(
            go.Bar(x=x.tolist(), y=np.round(record.probabilities[step], 5).tolist(), marker_color=LOSS_COLOURS[name], name=LOSS_LABELS[name], hovertemplate="x %{x}: p = %{y:.4f}<extra></extra>"),
            row=row,
            col=1,
        )
        figure.add_vline(x=target, line_color="#555555", line_dash="dot", line_width=2, row=row, col=1)
        figure.add_vline(x=record.soft_argmax[step], line_color=MARKER_COLOURS["soft-argmax"], line_width=2, row=row, col=1)
        figure.add_vline(x=record.argmax[step], line_color=MARKER_COLOURS["argmax"], line_dash="dash", line_width=2, row=row, col=1)
        figure.update_yaxes(title_text="p", row=row, col=1)
    figure.update_xaxes(title_text="x (heatmap px); grey dotted = target, cyan = soft-argmax, red dashed = argmax", row=len(names), col=1)
    figure.update_layout(height=440, showlegend=False, bargap=0.05, margin={"l": 10, "r": 10, "t": 40, "b": 10}, paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)")
    return figure


def trajectory_figure(records: dict[str, TrainingRecord], step: int, target: float) -> go.Figure:
    """Plot the decoded positions of both rows against the training step."""
    series = {}
    for name, record in records.items():
        steps = np.arange(len(record.soft_argmax))
        series[f"{LOSS_LABELS[name]}: soft-argmax"] = (steps, record.soft_argmax, LOSS_COLOURS[name], "solid")
        series[f"{LOSS_LABELS[name]}: argmax"] = (steps, record.argmax, LOSS_COLOURS[name], "dash")
    return line_figure(series, "training step", "decoded x (heatmap px)", horizontal={"target": target}, vertical=step, title="Decoded position against training step")


def run_lesson(
    shape: str = "two peaks",
    centre_x: float = 15,
    centre_y: float = 15,
    sigma: float = 1.5,
    distance: float = 6,
    weight: float = 0.5,
    temperature: float = 1.0,
    target: float = 36,
    start_centre: float = 30,
    start_offset: float = 12,
    steps: float = 150,
    learning_rate: float = 1.0,
    optimiser: str = "SGD",
    step: float = 150,
    progress: Callable[[float, str], None] | None = None,
) -> LessonResult:
    """Build the lesson's heatmap, the same-soft-argmax presets and the row-training demo."""
    numbers = {
        "centre_x": centre_x,
        "centre_y": centre_y,
        "sigma": sigma,
        "distance": distance,
        "weight": weight,
        "temperature": temperature,
        "target": target,
        "start_centre": start_centre,
        "start_offset": start_offset,
        "steps": steps,
        "learning_rate": learning_rate,
        "step": step,
    }
    for name, value in numbers.items():
        if not math.isfinite(float(value)):
            raise InputError(f"{name} {value} is not a finite number; choose a value on the slider")
    if not 0 < float(temperature):
        raise InputError(f"temperature {temperature} must be above 0")
    if optimiser not in OPTIMISERS:
        raise InputError(f"optimiser {optimiser!r} is not one of {', '.join(OPTIMISERS)}")
    steps = int(round(float(steps)))
    if not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps {steps} must be between 1 and {MAX_STEPS}")
    if not 0 <= float(target) <= ROW_WIDTH - 1:
        raise InputError(f"target {target} must lie on the row, between 0 and {ROW_WIDTH - 1}")
    if not float(learning_rate) > 0:
        raise InputError(f"learning rate {learning_rate} must be above 0")
    shown_step = min(max(int(round(float(step))), 0), steps)

    centre = (int(round(centre_x)), int(round(centre_y)))
    logits = build_heatmap(shape, centre_x, centre_y, float(sigma), float(distance), float(weight))
    decoded = _decoded(logits, float(temperature))
    builder = builder_figure(logits, float(temperature), centre, decoded)
    preset_figure, preset_points = presets()

    records = train_both(float(target), int(round(float(start_centre))), float(start_offset), steps, float(learning_rate), optimiser, progress)
    summary = {
        "builder": {"shape": shape, "centre": list(centre), "temperature": float(temperature), **{name: [round(v, 4) for v in point] for name, point in decoded.items()}},
        "presets": {name: {decoder: [round(v, 4) for v in point] for decoder, point in points.items()} for name, points in preset_points.items()},
        "training": {
            "target": float(target),
            "steps": steps,
            "step": shown_step,
            "optimiser": optimiser,
            "learning_rate": float(learning_rate),
            **{
                name: {
                    "soft_argmax": np.round(record.soft_argmax, 4).tolist(),
                    "argmax": record.argmax.tolist(),
                    "loss": np.round(record.loss, 5).tolist(),
                    "final_soft_argmax": round(float(record.soft_argmax[-1]), 4),
                    "final_argmax": float(record.argmax[-1]),
                    "final_peak_probability": round(float(record.probabilities[-1].max()), 4),
                }
                for name, record in records.items()
            },
        },
    }
    return LessonResult(
        builder=builder,
        presets=preset_figure,
        rows=rows_figure(records, shown_step, float(target)),
        trajectory=trajectory_figure(records, shown_step, float(target)),
        summary=summary,
    )


@dataclass
class LessonComponents:
    """The lesson tab's inputs (in ``run_lesson`` order) and outputs."""

    inputs: list[gr.components.Component]
    outputs: list[gr.components.Component]
    step: CheckedSlider
    steps: CheckedSlider
    train: gr.Button


def build_lesson_tab() -> LessonComponents:
    """Lay out the Soft-argmax lesson tab (inside an open ``gr.Tab``) and return its components."""
    gr.Markdown(
        "Soft-argmax decodes a heatmap to the **mean** of softmax(H / τ). Very different heatmaps share one mean, "
        "so a loss on the soft-argmax cannot tell a confident heatmap from a confused one. Build a heatmap below and "
        "watch argmax (✕ red), refined argmax (◇ green) and soft-argmax (○ cyan).",
        elem_classes=["tab-intro"],
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            shape = gr.Radio(list(SHAPES), value="two peaks", label="Shape")
            centre_x = CheckedSlider(0, BUILDER_GRID - 1, value=15, step=1, label="centre x (heatmap px)")
            centre_y = CheckedSlider(0, BUILDER_GRID - 1, value=15, step=1, label="centre y (heatmap px)")
            sigma = CheckedSlider(0.5, 4.0, value=1.5, step=0.1, label="spread σ (heatmap px)")
            distance = CheckedSlider(0, 12, value=6, step=1, label="peak offset / plateau or ring radius (heatmap px)")
            weight = CheckedSlider(0.05, 0.95, value=0.5, step=0.05, label="weight of the left peak (two peaks)")
            temperature = CheckedSlider(0.1, 4.0, value=1.0, step=0.05, label="soft-argmax temperature τ")
        with gr.Column(scale=3):
            builder = gr.Plot(label="Your heatmap", show_label=False, elem_id="lesson-builder")
            presets_plot = gr.Plot(label="Same soft-argmax, different shapes", show_label=False, elem_id="lesson-presets")
    gr.Markdown(
        "### How each loss reshapes a heatmap\n"
        f"One heatmap row of {ROW_WIDTH} logits starts as two peaks away from the target and is trained directly, once with "
        "the soft-argmax L1 loss and once with the structured loss. The soft-argmax loss is satisfied as soon as the "
        "mean reaches the target, whatever the shape. The structured loss raises the target pixel and lowers every other, "
        "so one peak grows at the target.",
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            target = CheckedSlider(0, ROW_WIDTH - 1, value=36, step=1, label="target x")
            start_centre = CheckedSlider(4, ROW_WIDTH - 5, value=30, step=1, label="start: centre between the two peaks")
            start_offset = CheckedSlider(1, 20, value=12, step=1, label="start: peak offset from the centre")
            optimiser = gr.Radio(list(OPTIMISERS), value="SGD", label="optimiser")
            learning_rate = CheckedSlider(0.01, 10.0, value=1.0, step=0.01, label="learning rate")
            steps = CheckedSlider(10, MAX_STEPS, value=150, step=10, label="training steps")
            train = gr.Button("Train both rows", variant="primary")
        with gr.Column(scale=3):
            # The API accepts any step up to MAX_STEPS; the page narrows the
            # range to the number of training steps when it loads and whenever
            # that number changes.
            step = CheckedSlider(0, MAX_STEPS, value=150, step=1, label="show the rows after this many steps", elem_id="lesson-step")
            rows = gr.Plot(label="Each row after the chosen step", show_label=False, elem_id="lesson-rows")
            trajectory = gr.Plot(label="Decoded position against training step", show_label=False, elem_id="lesson-trajectory")
    with gr.Accordion("JSON result", open=False):
        summary = gr.JSON(label="Result")
    inputs = [shape, centre_x, centre_y, sigma, distance, weight, temperature, target, start_centre, start_offset, steps, learning_rate, optimiser, step]
    return LessonComponents(inputs=inputs, outputs=[builder, presets_plot, rows, trajectory, summary], step=step, steps=steps, train=train)
