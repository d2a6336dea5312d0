"""Contact sheets: a grid of dataset samples with their points, to check crops and augmentation by eye."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np

from explorer.core.data import LandmarkDataset

logger = logging.getLogger(__name__)

# One BGR colour per region of the scheme, cycled when a scheme has more
# regions. The 68- and 98-point schemes have separate right and left brow and
# eye regions, so a flip that does not swap them shows up as swapped colours.
REGION_COLOURS = (
    (255, 255, 255),
    (0, 200, 255),
    (0, 120, 255),
    (80, 220, 80),
    (255, 160, 0),
    (255, 60, 200),
    (60, 60, 255),
    (200, 200, 0),
)

# cv2.circle takes fixed-point centres with this many fractional bits, which
# draws points at sub-pixel positions.
_SHIFT_BITS = 4


def render_sample(image: np.ndarray, points: np.ndarray, region_ids: np.ndarray | None, tile_size: int) -> np.ndarray:
    """Draw one sample as a (tile_size, tile_size, 3) uint8 BGR tile.

    Args:
        image: (3, S, S) float RGB in [0, 1], a dataset item's ``image``.
        points: (K, 2) points in crop pixels.
        region_ids: (K,) region number of each point, or None to draw all points alike.
        tile_size: output side in pixels.
    """
    size = image.shape[-1]
    rgb = np.clip(np.rint(np.asarray(image).transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    tile = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (tile_size, tile_size), interpolation=cv2.INTER_LINEAR)

    # Resizing S -> T pixels maps the crop's pixel centre u to (u + 0.5) * T / S - 0.5.
    factor = tile_size / size
    tile_points = (np.asarray(points, dtype=np.float64) + 0.5) * factor - 0.5
    radius = max(1, round(tile_size / 128))

    for index, (x, y) in enumerate(tile_points):
        colour = REGION_COLOURS[int(region_ids[index]) % len(REGION_COLOURS)] if region_ids is not None else (0, 255, 0)
        centre = (int(round(x * (1 << _SHIFT_BITS))), int(round(y * (1 << _SHIFT_BITS))))
        cv2.circle(tile, centre, radius << _SHIFT_BITS, colour, thickness=-1, lineType=cv2.LINE_AA, shift=_SHIFT_BITS)
    return tile


def sheet_shape(count: int, tile_size: int) -> tuple[int, int]:
    """Return the (height, width) in pixels of a sheet of ``count`` tiles: a near-square grid."""
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    return rows * tile_size, columns * tile_size


def write_contact_sheet(
    dataset: LandmarkDataset,
    out_png: str | Path,
    count: int = 16,
    seed: int = 0,
    tile_size: int = 256,
) -> Path:
    """Draw ``count`` random dataset items with their points into a grid PNG.

    Points are coloured by region of the dataset's landmark scheme. The sheet
    shows ``min(count, len(dataset))`` distinct items in a grid of
    ``ceil(sqrt(n))`` columns, each item scaled to ``tile_size`` pixels. The
    items' augmentation comes from the dataset (its seed and epoch), and
    ``seed`` picks which items are shown.

    Returns:
        The path of the written PNG.
    """
    if count <= 0:
        raise ValueError(f"count must be a positive number of samples, got {count!r}")
    if tile_size < 16:
        raise ValueError(f"tile_size must be at least 16 pixels, got {tile_size!r}")
    out_png = Path(out_png)
    if out_png.suffix.lower() != ".png":
        raise ValueError(f"the contact sheet is written as PNG; give a .png path, not {out_png}")

    # Distinct items, in an order that depends only on `seed`.
    shown_count = min(count, len(dataset))
    if shown_count < count:
        logger.info("the dataset has %d faces, so the sheet shows %d instead of %d", len(dataset), shown_count, count)
    indices = np.random.default_rng(seed).permutation(len(dataset))[:shown_count]

    region_ids = dataset.scheme.region_ids() if dataset.scheme is not None else None
    height, width = sheet_shape(shown_count, tile_size)
    columns = width // tile_size
    sheet = np.zeros((height, width, 3), dtype=np.uint8)
    for position, index in enumerate(indices):
        item = dataset[int(index)]
        tile = render_sample(item["image"].numpy(), item["points"].numpy(), region_ids, tile_size)
        row, column = divmod(position, columns)
        sheet[row * tile_size : (row + 1) * tile_size, column * tile_size : (column + 1) * tile_size] = tile

    out_png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_png), sheet):
        raise OSError(f"could not write the contact sheet to {out_png}")
    logger.info("wrote a contact sheet of %d faces to %s", shown_count, out_png)
    return out_png
