"""Landmark schemes: point names, regions, horizontal-flip permutations and NME normalisers.

Three schemes are built in, chosen by point count:

=====  ======  ===========================================  ====================
count  name    layout                                       inter-ocular points
=====  ======  ===========================================  ====================
68     ibug68  iBUG 300-W: 0-16 jaw, 17-21 right brow,      36, 45 (outer eye
               22-26 left brow, 27-35 nose, 36-41 right     corners)
               eye, 42-47 left eye, 48-67 mouth
98     wflw98  WFLW: 0-32 jaw, 33-41 right brow, 42-50      60, 72 (outer eye
               left brow, 51-59 nose, 60-67 right eye,      corners)
               68-75 left eye, 76-95 mouth, 96-97 pupils
29     cofw29  COFW: 0-7 brows, 8-17 eyes, 18-21 nose,      8, 9 (outer eye
               22-27 mouth, 28 chin                         corners)
=====  ======  ===========================================  ====================

"Right" and "left" are the subject's: the right eye appears on the image's
left. The WFLW and COFW flip pairs match the ``swap`` entries of the mmpose
dataset configurations ``wflw.py`` and ``cofw.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LandmarkScheme:
    """A landmark layout: names, regions, flip permutation and NME normaliser.

    ``flip_permutation[k]`` is the index of the point that takes the place of
    point ``k`` after a horizontal flip, so ``flipped[k] = mirrored[perm[k]]``.
    ``regions`` lists ``(region name, first index, stop index)`` triples that
    cover ``0..count-1`` without gaps.
    """

    name: str
    count: int
    names: tuple[str, ...]
    flip_permutation: tuple[int, ...]
    normaliser: tuple[int, int]
    regions: tuple[tuple[str, int, int], ...]

    def __post_init__(self) -> None:
        # Every table must describe exactly `count` points, or lookups by
        # index would silently return the wrong point.
        if len(self.names) != self.count:
            raise ValueError(f"scheme {self.name!r}: {len(self.names)} names for {self.count} points")
        if len(set(name.lower() for name in self.names)) != self.count:
            raise ValueError(f"scheme {self.name!r}: point names must be unique (case-insensitive)")
        if sorted(self.flip_permutation) != list(range(self.count)):
            raise ValueError(f"scheme {self.name!r}: flip_permutation is not a permutation of 0..{self.count - 1}")

        # A horizontal flip applied twice is the identity, so its permutation
        # must be an involution.
        for index, partner in enumerate(self.flip_permutation):
            if self.flip_permutation[partner] != index:
                raise ValueError(
                    f"scheme {self.name!r}: flip_permutation maps {index} to {partner} "
                    f"but {partner} to {self.flip_permutation[partner]}; it must be an involution"
                )

        # The regions must tile the index range in order.
        position = 0
        for region, start, stop in self.regions:
            if start != position or stop <= start:
                raise ValueError(f"scheme {self.name!r}: region {region!r} ({start}..{stop}) leaves a gap or overlaps")
            position = stop
        if position != self.count:
            raise ValueError(f"scheme {self.name!r}: regions cover {position} of {self.count} points")

        for index in self.normaliser:
            if not 0 <= index < self.count:
                raise ValueError(f"scheme {self.name!r}: normaliser index {index} is outside 0..{self.count - 1}")

    def region_of(self, index: int) -> str:
        """Return the name of the region that contains point ``index``."""
        for region, start, stop in self.regions:
            if start <= index < stop:
                return region
        raise IndexError(f"point index {index} is outside 0..{self.count - 1} of scheme {self.name!r}")

    def region_ids(self) -> np.ndarray:
        """Return the region number of every point, shape (count,), int64."""
        ids = np.zeros(self.count, dtype=np.int64)
        for number, (_, start, stop) in enumerate(self.regions):
            ids[start:stop] = number
        return ids


def _pairs_to_permutation(count: int, pairs: list[tuple[int, int]]) -> tuple[int, ...]:
    """Build a flip permutation from left-right pairs; unpaired points map to themselves."""
    permutation = list(range(count))
    for a, b in pairs:
        permutation[a] = b
        permutation[b] = a
    return tuple(permutation)


def _ibug68_names() -> tuple[str, ...]:
    # Jaw: 0 is below the subject's right ear, 8 is the chin, 16 below the left ear.
    jaw = [f"jaw {number}" for number in range(1, 18)]
    jaw[0] = "jaw 1 (right)"
    jaw[8] = "jaw 9 (chin)"
    jaw[16] = "jaw 17 (left)"

    right_brow = [
        "right brow, outer end",
        "right brow, outer middle",
        "right brow, middle",
        "right brow, inner middle",
        "right brow, inner end",
    ]
    left_brow = [
        "left brow, inner end",
        "left brow, inner middle",
        "left brow, middle",
        "left brow, outer middle",
        "left brow, outer end",
    ]

    nose = [
        "nose bridge, top",
        "nose bridge 2",
        "nose bridge 3",
        "nose tip",
        "nose base, right wing",
        "nose base, right nostril",
        "nose base, centre",
        "nose base, left nostril",
        "nose base, left wing",
    ]

    right_eye = [
        "right eye, outer corner",
        "right eye, upper lid outer",
        "right eye, upper lid inner",
        "right eye, inner corner",
        "right eye, lower lid inner",
        "right eye, lower lid outer",
    ]
    left_eye = [
        "left eye, inner corner",
        "left eye, upper lid inner",
        "left eye, upper lid outer",
        "left eye, outer corner",
        "left eye, lower lid outer",
        "left eye, lower lid inner",
    ]

    # Outer lip contour runs clockwise on the image from the right mouth corner
    # (48) over the upper lip to the left corner (54) and back under the lower lip.
    outer_mouth = [
        "mouth, right corner",
        "upper lip, outer right",
        "upper lip, outer right peak",
        "upper lip, outer centre",
        "upper lip, outer left peak",
        "upper lip, outer left",
        "mouth, left corner",
        "lower lip, outer left",
        "lower lip, outer left centre",
        "lower lip, outer centre",
        "lower lip, outer right centre",
        "lower lip, outer right",
    ]
    inner_mouth = [
        "mouth, inner right corner",
        "upper lip, inner right",
        "upper lip, inner centre",
        "upper lip, inner left",
        "mouth, inner left corner",
        "lower lip, inner left",
        "lower lip, inner centre",
        "lower lip, inner right",
    ]
    return tuple(jaw + right_brow + left_brow + nose + right_eye + left_eye + outer_mouth + inner_mouth)


def _ibug68_scheme() -> LandmarkScheme:
    pairs = [(index, 16 - index) for index in range(8)]
    pairs += [(17, 26), (18, 25), (19, 24), (20, 23), (21, 22)]
    pairs += [(31, 35), (32, 34)]
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
    pairs += [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]
    pairs += [(60, 64), (61, 63), (65, 67)]
    regions = (
        ("jaw", 0, 17),
        ("right brow", 17, 22),
        ("left brow", 22, 27),
        ("nose", 27, 36),
        ("right eye", 36, 42),
        ("left eye", 42, 48),
        ("mouth", 48, 68),
    )
    return LandmarkScheme(
        name="ibug68",
        count=68,
        names=_ibug68_names(),
        flip_permutation=_pairs_to_permutation(68, pairs),
        normaliser=(36, 45),
        regions=regions,
    )


def _numbered_names(regions: tuple[tuple[str, int, int], ...], special: dict[int, str]) -> tuple[str, ...]:
    """Name each point "REGION N" (N counts from 1 inside the region) unless ``special`` names it."""
    names = []
    for region, start, stop in regions:
        for index in range(start, stop):
            names.append(special.get(index, f"{region} {index - start + 1}"))
    return tuple(names)


def _wflw98_scheme() -> LandmarkScheme:
    pairs = [(index, 32 - index) for index in range(16)]
    pairs += [(33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47)]
    pairs += [(55, 59), (56, 58)]
    pairs += [(60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73)]
    pairs += [(76, 82), (77, 81), (78, 80), (83, 87), (84, 86)]
    pairs += [(88, 92), (89, 91), (93, 95), (96, 97)]
    regions = (
        ("jaw", 0, 33),
        ("right brow", 33, 42),
        ("left brow", 42, 51),
        ("nose", 51, 60),
        ("right eye", 60, 68),
        ("left eye", 68, 76),
        ("mouth", 76, 96),
        ("pupils", 96, 98),
    )
    special = {
        0: "jaw 1 (right)",
        16: "jaw 17 (chin)",
        32: "jaw 33 (left)",
        54: "nose tip",
        60: "right eye, outer corner",
        64: "right eye, inner corner",
        68: "left eye, inner corner",
        72: "left eye, outer corner",
        76: "mouth, right corner",
        82: "mouth, left corner",
        96: "right pupil",
        97: "left pupil",
    }
    return LandmarkScheme(
        name="wflw98",
        count=98,
        names=_numbered_names(regions, special),
        flip_permutation=_pairs_to_permutation(98, pairs),
        normaliser=(60, 72),
        regions=regions,
    )


def _cofw29_scheme() -> LandmarkScheme:
    pairs = [(0, 1), (2, 3), (4, 6), (5, 7), (8, 9), (10, 11), (12, 14), (13, 15), (16, 17), (18, 19), (22, 23)]
    regions = (
        ("brows", 0, 8),
        ("eyes", 8, 18),
        ("nose", 18, 22),
        ("mouth", 22, 28),
        ("chin", 28, 29),
    )
    # NOTE: COFW releases do not name their points; only the region ranges,
    # the flip pairs and the eye corners used for NME are named here.
    special = {8: "eye outer corner A", 9: "eye outer corner B", 16: "pupil A", 17: "pupil B", 28: "chin"}
    return LandmarkScheme(
        name="cofw29",
        count=29,
        names=_numbered_names(regions, special),
        flip_permutation=_pairs_to_permutation(29, pairs),
        normaliser=(8, 9),
        regions=regions,
    )


IBUG68 = _ibug68_scheme()
WFLW98 = _wflw98_scheme()
COFW29 = _cofw29_scheme()

SCHEMES: dict[int, LandmarkScheme] = {scheme.count: scheme for scheme in (IBUG68, WFLW98, COFW29)}


def scheme_for_count(count: int) -> LandmarkScheme:
    """Return the built-in scheme with ``count`` points (68, 98 or 29)."""
    if count not in SCHEMES:
        supported = ", ".join(str(known) for known in sorted(SCHEMES))
        raise ValueError(
            f"no landmark scheme has {count} points; supported counts are {supported} "
            "(iBUG 300-W, WFLW, COFW). Check that the annotation files have the expected number of points."
        )
    return SCHEMES[count]


def landmark_index(scheme: LandmarkScheme, name_or_number: int | str) -> int:
    """Resolve a landmark given as an index, a digit string or a name (case-insensitive).

    Examples for iBUG 68: ``36``, ``"36"`` and ``"Right eye, outer corner"``
    all return 36.
    """
    # bool is a subclass of int, but True is never a meaningful landmark index.
    if isinstance(name_or_number, bool):
        raise TypeError(f"landmark must be an int index or a name, not {name_or_number!r}")

    if isinstance(name_or_number, (int, np.integer)):
        index = int(name_or_number)
    elif isinstance(name_or_number, str):
        text = name_or_number.strip()
        if text.isdigit():
            index = int(text)
        else:
            lowered = " ".join(text.lower().split())
            for candidate, name in enumerate(scheme.names):
                if name.lower() == lowered:
                    return candidate
            examples = ", ".join(repr(name) for name in scheme.names[:3])
            raise ValueError(
                f"no landmark named {name_or_number!r} in scheme {scheme.name!r}; "
                f"use an index 0..{scheme.count - 1} or one of the point names, such as {examples}"
            )
    else:
        raise TypeError(f"landmark must be an int index or a name, not {type(name_or_number).__name__}")

    if not 0 <= index < scheme.count:
        raise ValueError(f"landmark index {index} is outside 0..{scheme.count - 1} of scheme {scheme.name!r}")
    return index


def flip_points(
    points: np.ndarray | torch.Tensor,
    width: float,
    permutation: tuple[int, ...] | LandmarkScheme,
) -> np.ndarray | torch.Tensor:
    """Mirror points horizontally in an image ``width`` pixels wide and swap left and right points.

    Pixel centres sit at integer coordinates, so column ``c`` maps to
    ``width - 1 - c``.

    Args:
        points: (..., K, 2) points (x, y) in pixels.
        width: image width in pixels.
        permutation: a scheme or its ``flip_permutation`` (length K).

    Returns:
        Flipped points, same shape and type as ``points``.
    """
    if isinstance(permutation, LandmarkScheme):
        permutation = permutation.flip_permutation
    if points.shape[-2] != len(permutation) or points.shape[-1] != 2:
        raise ValueError(
            f"points have shape {tuple(points.shape)}, expected (..., {len(permutation)}, 2) "
            "to match the flip permutation"
        )

    # Mirror the x coordinate about the image's centre line, (width - 1) / 2.
    mirrored = points.clone() if isinstance(points, torch.Tensor) else np.array(points, copy=True)
    mirrored[..., 0] = (width - 1) - points[..., 0]

    # The subject's right eye is now where the left one was, so reorder.
    index = list(permutation)
    return mirrored[..., index, :]
