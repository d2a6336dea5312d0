"""Images for the app: display views of a photo, landmark drawings, heatmap overlays and label ellipses.

All drawing happens on a :class:`View`, a cut-out of the photo resized for
display, so a 40-megapixel photo costs no more to draw than a small one.
Points stay in image pixels until :meth:`View.to_view` maps them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from matplotlib import colormaps

from explorer.app.config import DISPLAY_MAX_SIDE, FACE_VIEW_SIDE
from explorer.core.geometry import CropGeometry, heatmap_to_image_overlay
from explorer.core.landmarks import LandmarkScheme

# One colour per landmark region (RGB), from matplotlib's "tab10" palette.
REGION_COLOURS = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (188, 189, 34),
    (23, 190, 207),
    (127, 127, 127),
]

# Marker colours shared by images and plots, so a decoder looks the same everywhere.
DECODER_COLOURS = {
    "argmax": (255, 77, 77),
    "refined": (46, 204, 113),
    "soft-argmax": (0, 200, 255),
    "ground truth": (255, 255, 255),
}
MODEL_COLOURS = {"structured": (255, 140, 0), "softargmax": (0, 200, 255)}
SELECTED_COLOUR = (255, 255, 0)


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """Return ``#rrggbb`` for an RGB triple."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


@dataclass(frozen=True)
class View:
    """A rectangle of the photo resized for display.

    View pixel v and image pixel u are related by ``v = (u - origin + 0.5) * factor - 0.5``,
    the pixel-centre convention of ``cv2.resize``.

    Attributes:
        image: (h, w, 3) uint8 display pixels.
        origin: (x, y) of the rectangle's top-left pixel in the photo.
        factor: display pixels per photo pixel.
    """

    image: np.ndarray
    origin: tuple[float, float]
    factor: float

    def to_view(self, points: np.ndarray) -> np.ndarray:
        """Map image points (..., 2) to view points."""
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.origin) + 0.5) * self.factor - 0.5

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Map view points (..., 2) back to image points."""
        return (np.asarray(points, dtype=np.float64) + 0.5) / self.factor - 0.5 + np.asarray(self.origin)

    def crop_geometry(self, geometry: CropGeometry) -> CropGeometry:
        """Return the crop geometry as seen from this view (view pixels -> crop pixels)."""
        offset = (0.5 * self.factor - 0.5) - self.factor * np.asarray(self.origin)
        image_to_view = np.array([[self.factor, 0.0, offset[0]], [0.0, self.factor, offset[1]], [0.0, 0.0, 1.0]])
        image_to_crop = np.vstack([geometry.matrix, [0.0, 0.0, 1.0]])
        return CropGeometry(matrix=(image_to_crop @ np.linalg.inv(image_to_view))[:2], size=geometry.size)


def photo_view_factor(width: int, height: int, max_side: int = DISPLAY_MAX_SIDE) -> float:
    """Return the display pixels per photo pixel that :func:`photo_view` uses for a photo of this size."""
    factor = min(1.0, max_side / max(height, width))
    if factor >= 1.0:
        return 1.0
    # The rounded width defines the true scale, as cv2.resize uses it.
    return max(1, round(width * factor)) / width


def photo_view(rgb: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> View:
    """Return the whole photo, downscaled so its longer side is at most ``max_side``."""
    height, width = rgb.shape[:2]
    factor = photo_view_factor(width, height, max_side)
    if factor >= 1.0:
        return View(image=rgb.copy(), origin=(0.0, 0.0), factor=1.0)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return View(image=cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), origin=(0.0, 0.0), factor=factor)


def crop_box(geometry: CropGeometry) -> np.ndarray:
    """Return the image-pixel bounding box ``[x0, y0, x1, y1]`` of a crop square."""
    last = geometry.size - 1
    corners = geometry.to_image(np.array([[0.0, 0.0], [last, 0.0], [0.0, last], [last, last]]))
    return np.concatenate([corners.min(axis=0), corners.max(axis=0)])


def region_view(rgb: np.ndarray, box: np.ndarray, side: int = FACE_VIEW_SIDE) -> View:
    """Cut the square around ``box`` (image pixels) out of the photo and resize it to ``side`` pixels.

    Parts of the square outside the photo are black, as in the network's crop.
    The square is resampled straight into the ``side``-pixel view, so the
    memory used is bounded by the photo and the view, however large the box.
    """
    box = np.asarray(box, dtype=np.float64)
    centre = 0.5 * (box[:2] + box[2:])
    half = 0.5 * max(box[2] - box[0], box[3] - box[1], 1.0)
    x0 = math.floor(centre[0] - half)
    y0 = math.floor(centre[1] - half)
    extent = max(1, math.ceil(2 * half) + 1)
    factor = side / extent

    # Only the part of the photo inside the square is resampled (a slice, not
    # a copy). A square that misses the photo entirely gives a black view.
    height, width = rgb.shape[:2]
    left, top = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
    right, bottom = max(min(x0 + extent, width), left + 1), max(min(y0 + extent, height), top + 1)
    part = rgb[top:bottom, left:right]

    # The view's map, v = (u - origin + 0.5) * factor - 0.5, for pixels u of the part.
    offset = 0.5 * factor - 0.5
    matrix = np.array([[factor, 0.0, offset + factor * (left - x0)], [0.0, factor, offset + factor * (top - y0)]])
    image = CropGeometry(matrix=matrix, size=side).warp(part, border=cv2.BORDER_CONSTANT, border_value=(0, 0, 0))
    return View(image=image, origin=(float(x0), float(y0)), factor=factor)


def _scale_for(view: View) -> float:
    """Return a drawing scale: 1 for a 512-pixel view, larger for larger views."""
    return max(0.6, max(view.image.shape[:2]) / 512.0)


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour: tuple[int, int, int]) -> None:
    """Draw text with a dark outline so it reads on any background."""
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(2, round(3 * scale)), cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, max(1, round(scale)), cv2.LINE_AA)


def draw_boxes(image: np.ndarray, view: View, boxes: list[np.ndarray], labels: list[str], chosen: int | None) -> None:
    """Draw numbered face boxes; the chosen one is thicker and yellow."""
    scale = _scale_for(view)
    for index, (box, label) in enumerate(zip(boxes, labels)):
        corners = view.to_view(np.reshape(box, (2, 2)))
        first = tuple(int(round(value)) for value in corners[0])
        second = tuple(int(round(value)) for value in corners[1])
        colour = SELECTED_COLOUR if index == chosen else (200, 200, 200)
        thickness = max(1, round(2 * scale)) if index == chosen else 1
        cv2.rectangle(image, first, second, colour, thickness, cv2.LINE_AA)
        _text(image, label, (first[0], max(12, first[1] - 6)), 0.5 * scale, colour)


def draw_landmarks(
    view: View,
    points: np.ndarray,
    scheme: LandmarkScheme,
    selected: int | None = None,
    numbers: bool = True,
    image: np.ndarray | None = None,
    colour: tuple[int, int, int] | None = None,
    radius: float | None = None,
) -> np.ndarray:
    """Draw (K, 2) image points on a view, coloured by region (or in one ``colour``).

    Numbers are drawn only when the face is large enough on screen to read
    them. The ``selected`` landmark gets a yellow ring.
    """
    canvas = view.image.copy() if image is None else image
    scale = _scale_for(view)
    located = view.to_view(points)
    regions = scheme.region_ids()

    # Numbers need about 12 display pixels between neighbouring points.
    extent = located.max(axis=0) - located.min(axis=0)
    show_numbers = numbers and max(extent) >= 220
    dot = radius if radius is not None else max(1.5, 2.2 * scale * min(1.0, max(extent) / 200.0 + 0.3))

    for index, (x, y) in enumerate(located):
        point_colour = colour or REGION_COLOURS[regions[index] % len(REGION_COLOURS)]
        centre = (int(round(x * 16)), int(round(y * 16)))
        cv2.circle(canvas, centre, int(round(dot * 16)), point_colour, -1, cv2.LINE_AA, shift=4)
        if show_numbers:
            _text(canvas, str(index), (int(x + dot + 1), int(y - dot)), 0.32 * scale, point_colour)

    if selected is not None:
        draw_ring(canvas, view, points[selected], dot + 5 * scale)
    return canvas


def draw_ring(image: np.ndarray, view: View, point: np.ndarray, radius: float | None = None) -> np.ndarray:
    """Draw the yellow ring that marks the selected landmark at an image point (2,)."""
    scale = _scale_for(view)
    radius = 7.0 * scale if radius is None else radius
    x, y = view.to_view(np.asarray(point))
    centre = (int(round(x * 16)), int(round(y * 16)))
    cv2.circle(image, centre, int(round(radius * 16)), SELECTED_COLOUR, max(1, round(1.5 * scale)), cv2.LINE_AA, shift=4)
    return image


def draw_markers(
    image: np.ndarray,
    view: View,
    markers: dict[str, np.ndarray],
    size: float = 7.0,
) -> np.ndarray:
    """Draw one marker per decoder (``DECODER_COLOURS`` keys) at image points (2,)."""
    scale = _scale_for(view)
    for name, point in markers.items():
        x, y = view.to_view(np.asarray(point))
        centre = (int(round(x)), int(round(y)))
        colour = DECODER_COLOURS.get(name, (255, 255, 255))
        length = int(round(size * scale))
        if name == "argmax":
            cv2.drawMarker(image, centre, colour, cv2.MARKER_TILTED_CROSS, length * 2, max(1, round(2 * scale)), cv2.LINE_AA)
        elif name == "refined":
            cv2.drawMarker(image, centre, colour, cv2.MARKER_DIAMOND, length * 2, max(1, round(2 * scale)), cv2.LINE_AA)
        elif name == "ground truth":
            cv2.drawMarker(image, centre, colour, cv2.MARKER_STAR, length * 2, max(1, round(1.5 * scale)), cv2.LINE_AA)
        else:
            cv2.circle(image, centre, length, colour, max(1, round(2 * scale)), cv2.LINE_AA)
    return image


@lru_cache(maxsize=4)
def _colour_table(name: str) -> np.ndarray:
    """Return a (256, 3) uint8 lookup table of a matplotlib colormap."""
    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def colourise(values: np.ndarray, vmax: float | None = None, name: str = "inferno") -> np.ndarray:
    """Map non-negative values (H, W) to RGB with a colormap, 0 at the bottom and ``vmax`` at the top."""
    top = float(values.max()) if vmax is None else float(vmax)
    normalised = np.clip(values / max(top, 1e-12), 0.0, 1.0)
    return _colour_table(name)[(normalised * 255).round().astype(np.uint8)]


def overlay_heatmap(
    view: View,
    heatmap: np.ndarray,
    geometry: CropGeometry,
    stride: float,
    vmax: float | None = None,
    opacity: float = 0.8,
) -> np.ndarray:
    """Blend a (H, W) non-negative heatmap, warped onto the photo, over the view.

    Each pixel's opacity grows with its value, so low values leave the photo
    visible and the peak is drawn in full colour.
    """
    warped = heatmap_to_image_overlay(heatmap, view.crop_geometry(geometry), stride, view.image.shape)
    top = float(heatmap.max()) if vmax is None else float(vmax)
    alpha = opacity * np.clip(warped / max(top, 1e-12), 0.0, 1.0)[..., None] ** 0.7
    colours = colourise(warped, top).astype(np.float32)
    dimmed = view.image.astype(np.float32) * 0.75
    return (dimmed * (1.0 - alpha) + colours * alpha).round().clip(0, 255).astype(np.uint8)


def upscale(image: np.ndarray, side: int = FACE_VIEW_SIDE, nearest: bool = False) -> np.ndarray:
    """Resize a square image (a crop or a heatmap picture) to ``side`` pixels."""
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(image, (side, side), interpolation=interpolation)


def draw_ellipses(
    image: np.ndarray,
    centres: np.ndarray,
    covariances: np.ndarray,
    pixels_per_unit: float,
    offset: float,
    colours: list[tuple[int, int, int]],
    sigmas: float = 2.0,
    selected: int | None = None,
) -> np.ndarray:
    """Draw the ``sigmas``-sigma ellipse of each covariance.

    Args:
        image: the canvas (modified in place and returned).
        centres: (K, 2) centres in the covariance's units.
        covariances: (K, 2, 2) covariances in squared units.
        pixels_per_unit: canvas pixels per unit, and ``offset`` the canvas
            position of unit coordinate 0 (``canvas = unit * ppu + offset``).
        colours: one RGB colour per ellipse.
    """
    for index, (centre, covariance) in enumerate(zip(centres, covariances)):
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        major = eigenvectors[:, 1]
        angle = math.degrees(math.atan2(major[1], major[0]))
        axes = sigmas * np.sqrt(np.clip(eigenvalues[::-1], 0.0, None)) * pixels_per_unit
        position = centre * pixels_per_unit + offset
        thickness = 2 if index == selected else 1
        colour = SELECTED_COLOUR if index == selected else colours[index]
        cv2.ellipse(
            image,
            (int(round(position[0] * 16)), int(round(position[1] * 16))),
            (int(round(axes[0] * 16)), int(round(axes[1] * 16))),
            angle,
            0,
            360,
            colour,
            thickness,
            cv2.LINE_AA,
            shift=4,
        )
        cv2.circle(image, (int(round(position[0] * 16)), int(round(position[1] * 16))), 2 * 16, colour, -1, cv2.LINE_AA, shift=4)
    return image
