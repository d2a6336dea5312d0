"""Interactive plotly figures: heatmaps with decoder markers, error bars and line plots.

Heatmaps are drawn at heatmap resolution (32 x 32 for the shipped models), so
a figure stays a few tens of kilobytes of JSON. Arrays are passed as lists, so
API clients read plain JSON numbers rather than plotly's base64 typed arrays. Heatmap pixel row r, column c is drawn
centred at (x, y) = (c, r), with y growing downwards as in images.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.app.figures import DECODER_COLOURS, MODEL_COLOURS, hex_colour

HEATMAP_COLOURSCALE = "Inferno"

# plotly marker symbol per decoder, matching the OpenCV markers in figures.py.
MARKER_SYMBOLS = {
    "argmax": "x-thin-open",
    "refined": "diamond-open",
    "soft-argmax": "circle-open",
    "ground truth": "star-open",
    "target": "star-open",
    "centre": "cross-thin-open",
}
MARKER_COLOURS = {**{name: hex_colour(colour) for name, colour in DECODER_COLOURS.items()}, "target": "#ffffff", "centre": "#bbbbbb"}

_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}


@dataclass
class HeatmapPanel:
    """One heatmap to plot.

    Attributes:
        title: subplot title.
        values: (H, W) values drawn (probabilities, usually).
        logits: (H, W) raw logits shown on hover, or None.
        markers: ``{name: (x, y)}`` in heatmap pixels; names are keys of ``MARKER_SYMBOLS``.
        background: optional (h, w, 3) uint8 picture drawn under the heatmap over the same extent.
    """

    title: str
    values: np.ndarray
    logits: np.ndarray | None = None
    markers: Mapping[str, Sequence[float]] | None = None
    background: np.ndarray | None = None


def _base_layout(figure: go.Figure, height: int, title: str | None = None) -> None:
    if title:
        figure.update_layout(title={"text": title, "x": 0.0, "xanchor": "left", "font": {"size": 14}})
    figure.update_layout(
        height=height,
        margin={"l": 10, "r": 10, "t": 80 if title else 40, "b": 10},
        font=_FONT,
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        legend={"orientation": "h", "yanchor": "top", "y": -0.04, "x": 0.5, "xanchor": "center"},
    )


def _heatmap_trace(panel: HeatmapPanel, zmax: float | None, show_scale: bool, colourbar_x: float | None) -> go.Heatmap:
    values = np.asarray(panel.values, dtype=np.float64)
    hover = "x %{x}, y %{y}<br>p = %{z:.4f}"
    customdata = None
    if panel.logits is not None:
        customdata = np.round(np.asarray(panel.logits, dtype=np.float64), 3).tolist()
        hover += "<br>logit = %{customdata:.2f}"
    colourbar = {"title": {"text": "p", "side": "right"}, "thickness": 12, "len": 0.8}
    if colourbar_x is not None:
        colourbar["x"] = colourbar_x
    return go.Heatmap(
        z=np.round(values, 6).tolist(),
        customdata=customdata,
        hovertemplate=hover + "<extra></extra>",
        colorscale=HEATMAP_COLOURSCALE,
        zmin=0.0,
        zmax=zmax,
        showscale=show_scale,
        colorbar=colourbar,
        opacity=0.75 if panel.background is not None else 1.0,
    )


def _marker_traces(markers: Mapping[str, Sequence[float]], show_legend: bool) -> list[go.Scatter]:
    traces = []
    for name, point in markers.items():
        colour = MARKER_COLOURS.get(name, "#ffffff")
        traces.append(
            go.Scatter(
                x=[float(point[0])],
                y=[float(point[1])],
                mode="markers",
                name=name,
                legendgroup=name,
                showlegend=show_legend,
                marker={"symbol": MARKER_SYMBOLS.get(name, "circle-open"), "size": 13, "color": colour, "line": {"width": 2.5, "color": colour}},
                hovertemplate=f"{name}<br>x %{{x:.2f}}, y %{{y:.2f}}<extra></extra>",
            )
        )
    return traces


def _background_image(picture: np.ndarray, height: int, width: int, xref: str, yref: str) -> dict:
    """Return a layout image that covers the heatmap extent [-0.5, W - 0.5] x [-0.5, H - 0.5].

    The picture travels as a JPEG data URL, a few kilobytes for a crop.
    """
    encoded, data = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not encoded:
        raise ValueError(f"could not encode a background picture of shape {picture.shape} as JPEG")
    return {
        "source": "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii"),
        "xref": xref,
        "yref": yref,
        "x": -0.5,
        "y": -0.5,
        "sizex": width,
        "sizey": height,
        "sizing": "stretch",
        "layer": "below",
        "xanchor": "left",
        "yanchor": "top",
    }


def heatmaps_figure(
    panels: Sequence[HeatmapPanel],
    height: int = 430,
    shared_scale: bool = False,
    title: str | None = None,
    window: int | None = None,
) -> go.Figure:
    """Plot heatmaps side by side with their decoder markers and hover values.

    ``shared_scale`` gives every panel one colour scale (one colour bar, on the
    right). ``window`` zooms each panel to (2 window + 1) pixels around its
    first marker.
    """
    columns = len(panels)
    figure = make_subplots(rows=1, cols=columns, subplot_titles=[panel.title for panel in panels], horizontal_spacing=0.08)
    zmax = max(float(np.max(panel.values)) for panel in panels) if shared_scale else None

    seen: set[str] = set()
    for column, panel in enumerate(panels, start=1):
        height_px, width_px = panel.values.shape
        show_scale = column == columns if shared_scale else True
        colourbar_x = None if columns == 1 or shared_scale else _colourbar_position(column, columns)
        figure.add_trace(_heatmap_trace(panel, zmax, show_scale, colourbar_x), row=1, col=column)
        for trace in _marker_traces(panel.markers or {}, show_legend=False):
            trace.showlegend = trace.name not in seen
            seen.add(trace.name)
            figure.add_trace(trace, row=1, col=column)

        axis_suffix = "" if column == 1 else str(column)
        x_range = [-0.5, width_px - 0.5]
        y_range = [height_px - 0.5, -0.5]
        if window is not None and panel.markers:
            centre_x, centre_y = (float(value) for value in next(iter(panel.markers.values())))
            x_range = [round(centre_x) - window - 0.5, round(centre_x) + window + 0.5]
            y_range = [round(centre_y) + window + 0.5, round(centre_y) - window - 0.5]
        figure.update_xaxes(range=x_range, showgrid=False, zeroline=False, constrain="domain", row=1, col=column)
        figure.update_yaxes(
            range=y_range,
            showgrid=False,
            zeroline=False,
            scaleanchor=f"x{axis_suffix}",
            constrain="domain",
            row=1,
            col=column,
        )
        if panel.background is not None:
            figure.add_layout_image(_background_image(panel.background, height_px, width_px, f"x{axis_suffix}", f"y{axis_suffix}"))
    _base_layout(figure, height, title)
    # A dark legend keeps the white ground-truth marker visible.
    figure.update_layout(legend={"bgcolor": "rgba(30, 30, 36, 0.9)", "font": {"color": "#f0f0f0"}})
    return figure


def _colourbar_position(column: int, columns: int, spacing: float = 0.08) -> float:
    """Return the x position, in paper coordinates, of a colour bar right of subplot ``column`` (1-based)."""
    width = (1.0 - spacing * (columns - 1)) / columns
    return column * width + (column - 1) * spacing + 0.005


def error_bar_figure(names: Sequence[str], errors: Mapping[str, np.ndarray], labels: Mapping[str, str], height: int = 340, title: str | None = None) -> go.Figure:
    """Plot per-landmark errors (percent of the inter-ocular distance) of several models as grouped bars."""
    figure = go.Figure()
    indices = list(range(len(names)))
    for model, values in errors.items():
        colour = hex_colour(MODEL_COLOURS.get(model, (128, 128, 128)))
        figure.add_trace(
            go.Bar(
                x=indices,
                y=np.round(values, 3).tolist(),
                name=labels.get(model, model),
                marker_color=colour,
                customdata=list(names),
                hovertemplate="%{x}: %{customdata}<br>%{y:.2f}% of inter-ocular<extra>" + labels.get(model, model) + "</extra>",
            )
        )
    figure.update_layout(barmode="group", bargap=0.15, xaxis_title="landmark", yaxis_title="error (% inter-ocular)")
    _base_layout(figure, height, title)
    figure.update_layout(legend={"y": 1.02, "yanchor": "bottom", "x": 1.0, "xanchor": "right"}, margin={"b": 40})
    return figure


def line_figure(
    series: Mapping[str, tuple[np.ndarray, np.ndarray, str, str]],
    x_title: str,
    y_title: str,
    height: int = 320,
    horizontal: Mapping[str, float] | None = None,
    vertical: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Plot named lines ``{name: (x, y, colour, dash)}`` with optional horizontal and vertical guide lines."""
    figure = go.Figure()
    for name, (x, y, colour, dash) in series.items():
        figure.add_trace(go.Scatter(x=np.asarray(x).tolist(), y=np.round(y, 4).tolist(), mode="lines", name=name, line={"color": colour, "dash": dash, "width": 2}))
    for label, value in (horizontal or {}).items():
        figure.add_hline(y=value, line_dash="dot", line_color="#888888", annotation_text=label, annotation_position="top left")
    if vertical is not None:
        figure.add_vline(x=vertical, line_color="#aaaaaa", line_width=1)
    figure.update_layout(xaxis_title=x_title, yaxis_title=y_title)
    _base_layout(figure, height, title)
    figure.update_layout(legend={"y": 1.02, "yanchor": "bottom", "x": 1.0, "xanchor": "right"}, margin={"b": 40})
    return figure
