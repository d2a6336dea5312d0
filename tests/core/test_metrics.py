import numpy as np
import pytest
import torch

from explorer.core.metrics import auc, ced_curve, failure_rate, nme, per_landmark_errors


def face(num_points: int, eye_corners: tuple[int, int], eye_distance: float) -> np.ndarray:
    """Return (1, K, 2) distinct points with the two outer eye corners ``eye_distance`` apart."""
    points = np.stack([np.arange(num_points) * 0.1, np.arange(num_points) * 0.05], axis=-1)
    points[eye_corners[0]] = (100.0, 50.0)
    points[eye_corners[1]] = (100.0 + eye_distance, 50.0)
    return points[None].astype(np.float64)


@pytest.mark.parametrize(
    "num_points,eye_corners,eye_distance,offset,expected",
    [
        (68, (36, 45), 10.0, (1.0, 0.0), 10.0),
        (68, (36, 45), 40.0, (0.0, 2.0), 5.0),
        (98, (60, 72), 20.0, (3.0, 4.0), 25.0),
        (29, (8, 9), 5.0, (0.3, 0.4), 10.0),
    ],
)
def test_nme_inter_ocular_table(
    num_points: int,
    eye_corners: tuple[int, int],
    eye_distance: float,
    offset: tuple[float, float],
    expected: float,
) -> None:
    gt = face(num_points, eye_corners, eye_distance)
    pred = gt + np.array(offset)
    assert nme(pred, gt)[0] == pytest.approx(expected)


def test_nme_single_landmark_off() -> None:
    gt = face(29, (8, 9), 5.0)
    pred = gt.copy()
    pred[0, 3] += (0.0, 2.9)
    # mean error 2.9 / 29 = 0.1 px, over 5 px = 2 %.
    assert nme(pred, gt)[0] == pytest.approx(2.0)


def test_nme_bbox_normalizer() -> None:
    gt = np.array([[[0.0, 0.0], [4.0, 9.0], [2.0, 3.0]]])
    pred = gt + np.array([0.0, 0.6])
    # sqrt(4 * 9) = 6, error 0.6 -> 10 %.
    assert nme(pred, gt, normalizer="bbox")[0] == pytest.approx(10.0)


@pytest.mark.parametrize("normalizer,expected", [(2.0, [50.0, 50.0]), (4, [25.0, 25.0])])
def test_nme_number_normalizer(normalizer: float, expected: list[float]) -> None:
    gt = np.zeros((2, 3, 2))
    pred = gt + np.array([1.0, 0.0])
    assert nme(pred, gt, normalizer=normalizer).tolist() == pytest.approx(expected)


def test_nme_array_normalizer_per_face() -> None:
    gt = torch.zeros(2, 3, 2, dtype=torch.float64)
    pred = gt + torch.tensor([0.0, 1.0], dtype=torch.float64)
    values = nme(pred, gt, normalizer=torch.tensor([1.0, 4.0]))
    assert values.tolist() == pytest.approx([100.0, 25.0])


def test_nme_torch_in_torch_out() -> None:
    gt = torch.from_numpy(face(68, (36, 45), 10.0)).float()
    values = nme(gt + 1.0, gt)
    assert isinstance(values, torch.Tensor)
    assert values.dtype == torch.float32
    assert values.shape == (1,)


def test_nme_numpy_in_numpy_out() -> None:
    gt = face(68, (36, 45), 10.0)
    values = nme(gt + 1.0, gt)
    assert isinstance(values, np.ndarray)
    assert values.shape == (1,)


def test_per_landmark_errors_values() -> None:
    gt = face(68, (36, 45), 10.0)
    pred = gt.copy()
    pred[0, 5] += (3.0, 4.0)
    errors = per_landmark_errors(pred, gt)
    assert errors.shape == (1, 68)
    assert errors[0, 5] == pytest.approx(50.0)
    assert errors[0, 6] == 0.0


def test_nme_unknown_scheme_inter_ocular() -> None:
    gt = np.zeros((1, 5, 2))
    with pytest.raises(ValueError, match="normalizer='bbox'"):
        nme(gt, gt)


def test_nme_degenerate_normalizer() -> None:
    gt = np.zeros((1, 68, 2))
    with pytest.raises(ValueError, match="must be > 0"):
        nme(gt, gt)


def test_nme_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"\(B, K, 2\)"):
        nme(np.zeros((1, 68, 2)), np.zeros((1, 67, 2)))


@pytest.mark.parametrize(
    "errors,threshold,expected",
    [
        ([1.0, 5.0, 10.0, 12.0, 20.0], 10.0, 40.0),
        ([1.0, 2.0], 10.0, 0.0),
        ([11.0, 30.0], 10.0, 100.0),
        ([7.0, 8.5, 9.0, 9.5], 8.0, 75.0),
    ],
)
def test_failure_rate_table(errors: list[float], threshold: float, expected: float) -> None:
    assert failure_rate(np.array(errors), threshold) == pytest.approx(expected)


@pytest.mark.parametrize(
    "errors,threshold,expected",
    [
        ([0.0, 5.0, 10.0, 20.0], 10.0, 0.375),
        ([2.0], 10.0, 0.8),
        ([0.0, 0.0], 10.0, 1.0),
        ([15.0], 10.0, 0.0),
        ([1.0, 3.0], 8.0, 0.75),
    ],
)
def test_auc_table(errors: list[float], threshold: float, expected: float) -> None:
    assert auc(np.array(errors), threshold) == pytest.approx(expected)


def test_auc_matches_fine_trapezoid() -> None:
    generator = np.random.default_rng(0)
    errors = generator.uniform(0.0, 15.0, size=200)
    x, y = ced_curve(errors, threshold=10.0, steps=100001)
    trapezoid = float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0) / 10.0
    assert auc(errors, 10.0) == pytest.approx(trapezoid, abs=1e-4)


def test_metrics_accept_torch_errors() -> None:
    errors = torch.tensor([0.0, 5.0, 10.0, 20.0])
    assert auc(errors, 10.0) == pytest.approx(0.375)
    assert failure_rate(errors, 10.0) == pytest.approx(25.0)


def test_ced_curve_values() -> None:
    x, y = ced_curve([1.0, 3.0], threshold=4.0, steps=5)
    assert x.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert y.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]


@pytest.mark.parametrize("function", [failure_rate, auc])
def test_metrics_reject_empty_errors(function) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        function([])


@pytest.mark.parametrize("function", [failure_rate, auc])
def test_metrics_reject_bad_threshold(function) -> None:
    with pytest.raises(ValueError, match="threshold"):
        function([1.0], 0.0)
