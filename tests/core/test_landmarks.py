import re

import numpy as np
import pytest
import torch

from explorer.core.landmarks import (
    COFW29,
    IBUG68,
    WFLW98,
    LandmarkScheme,
    flip_points,
    landmark_index,
    scheme_for_count,
)

ALL_SCHEMES = [IBUG68, WFLW98, COFW29]


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda scheme: scheme.name)
def test_flip_permutation_is_involution(scheme):
    permutation = np.array(scheme.flip_permutation)
    assert np.array_equal(permutation[permutation], np.arange(scheme.count))


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda scheme: scheme.name)
def test_flip_swaps_outer_eye_corners(scheme):
    right, left = scheme.normaliser
    assert scheme.flip_permutation[right] == left


@pytest.mark.parametrize("scheme", ALL_SCHEMES, ids=lambda scheme: scheme.name)
def test_scheme_lookup_by_count(scheme):
    assert scheme_for_count(scheme.count) is scheme


def test_scheme_lookup_unknown_count():
    with pytest.raises(ValueError, match="no landmark scheme has 5 points"):
        scheme_for_count(5)


def test_ibug68_names_key_points():
    assert IBUG68.names[36] == "right eye, outer corner"
    assert IBUG68.names[45] == "left eye, outer corner"
    assert IBUG68.names[30] == "nose tip"
    assert IBUG68.names[48] == "mouth, right corner"
    assert IBUG68.names[54] == "mouth, left corner"
    assert IBUG68.names[0] == "jaw 1 (right)"
    assert IBUG68.names[8] == "jaw 9 (chin)"


def test_ibug68_flip_partners_swap_side_names():
    # Jaw points are numbered along the contour, so only the other regions
    # name their side.
    swap = {"right": "left", "left": "right"}
    for index, partner in enumerate(IBUG68.flip_permutation):
        name = IBUG68.names[index]
        if name.startswith("jaw"):
            continue
        mirrored = re.sub(r"right|left", lambda match: swap[match.group()], name)
        assert IBUG68.names[partner] == mirrored, f"point {index} ({name}) flips to {partner}"


def test_ibug68_regions():
    assert IBUG68.region_of(0) == "jaw"
    assert IBUG68.region_of(21) == "right brow"
    assert IBUG68.region_of(42) == "left eye"
    assert IBUG68.region_of(67) == "mouth"


def test_landmark_index_accepts_int():
    assert landmark_index(IBUG68, 36) == 36


def test_landmark_index_accepts_digit_string():
    assert landmark_index(IBUG68, " 45 ") == 45


def test_landmark_index_accepts_name_any_case():
    assert landmark_index(IBUG68, "Right Eye, Outer Corner") == 36


def test_landmark_index_rejects_unknown_name():
    with pytest.raises(ValueError, match="no landmark named 'ear'"):
        landmark_index(IBUG68, "ear")


def test_landmark_index_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside 0..67"):
        landmark_index(IBUG68, 68)


def test_landmark_index_rejects_bool():
    with pytest.raises(TypeError):
        landmark_index(IBUG68, True)


def test_flip_points_twice_is_identity():
    points = np.random.default_rng(0).uniform(0, 100, size=(68, 2)).astype(np.float32)
    twice = flip_points(flip_points(points, 120, IBUG68), 120, IBUG68)
    assert np.allclose(twice, points)


def test_flip_points_swaps_eye_corners():
    points = np.random.default_rng(1).uniform(0, 100, size=(68, 2))
    width = 120
    flipped = flip_points(points, width, IBUG68)
    assert np.allclose(flipped[36], [width - 1 - points[45, 0], points[45, 1]])
    assert np.allclose(flipped[45], [width - 1 - points[36, 0], points[36, 1]])


def test_flip_points_torch_batch():
    points = torch.rand(2, 68, 2) * 100
    flipped = flip_points(points, 100, IBUG68)
    assert flipped.shape == (2, 68, 2)
    assert torch.allclose(flipped[:, 36, 0], 99 - points[:, 45, 0])


def test_flip_points_rejects_wrong_count():
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 68, 2\)"):
        flip_points(np.zeros((5, 2)), 10, IBUG68)


def test_scheme_rejects_non_involution():
    with pytest.raises(ValueError, match="involution"):
        LandmarkScheme(
            name="broken",
            count=3,
            names=("a", "b", "c"),
            flip_permutation=(1, 2, 0),
            normaliser=(0, 1),
            regions=(("all", 0, 3),),
        )
