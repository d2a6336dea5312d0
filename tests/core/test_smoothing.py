import math

import pytest
import torch

from explorer.core.smoothing import (
    SmoothingParams,
    covariance_distributions,
    edge_map,
    image_aware_labels,
    label_covariances,
)

CROP = 128
HEATMAP = 32
STRIDE = CROP // HEATMAP
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine"),
    ),
]


def heatmap_to_crop(point: torch.Tensor) -> torch.Tensor:
    return point * STRIDE + (STRIDE - 1) / 2


def edge_image(point: tuple[float, float], angle_degrees: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Return a (1, 3, CROP, CROP) step image whose edge passes through ``point`` (heatmap pixels) at the angle."""
    centre = heatmap_to_crop(torch.tensor(point, dtype=torch.float64))
    angle = math.radians(angle_degrees)
    normal = (-math.sin(angle), math.cos(angle))
    rows, cols = torch.meshgrid(
        torch.arange(CROP, dtype=torch.float64), torch.arange(CROP, dtype=torch.float64), indexing="ij"
    )
    side = (cols - centre[0]) * normal[0] + (rows - centre[1]) * normal[1]
    grey = 0.2 + 0.6 * (side > 0).to(torch.float64)
    return grey.to(dtype)[None, None].expand(1, 3, CROP, CROP).contiguous()


def principal_axes(covariance: torch.Tensor) -> tuple[float, float]:
    """Return (eigenvalue ratio major / minor, major-axis angle in degrees in [0, 180))."""
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
    major = eigenvectors[:, 1]
    angle = math.degrees(math.atan2(major[1].item(), major[0].item())) % 180.0
    return (eigenvalues[1] / eigenvalues[0]).item(), angle


def angle_difference(first: float, second: float) -> float:
    difference = abs(first - second) % 180.0
    return min(difference, 180.0 - difference)


@pytest.mark.parametrize("point", [(16.0, 16.0), (5.3, 20.7), (0.0, 0.0), (31.0, 12.0)])
def test_covariance_flat_image_isotropic(point: tuple[float, float]) -> None:
    images = torch.full((1, 3, CROP, CROP), 0.5)
    covariance = label_covariances(images, torch.tensor([[point]]), HEATMAP)[0, 0]
    ratio, _ = principal_axes(covariance)
    assert ratio < 1.2


def test_covariance_flat_image_is_sigma_squared() -> None:
    images = torch.full((2, 3, CROP, CROP), 0.3, dtype=torch.float64)
    points = torch.tensor([[[10.0, 10.0]], [[20.5, 3.2]]], dtype=torch.float64)
    covariances = label_covariances(images, points, HEATMAP, sigma=1.5)
    expected = 2.25 * torch.eye(2, dtype=torch.float64).expand(2, 1, 2, 2)
    assert torch.allclose(covariances, expected)


def test_covariance_noisy_flat_image_isotropic() -> None:
    generator = torch.Generator().manual_seed(0)
    images = 0.5 + 0.005 * torch.randn(1, 3, CROP, CROP, generator=generator)
    covariance = label_covariances(images, torch.tensor([[[16.0, 16.0]]]), HEATMAP)[0, 0]
    ratio, _ = principal_axes(covariance)
    assert ratio < 1.2


@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0, 30.0, 135.0])
@pytest.mark.parametrize("point", [(16.0, 16.0), (12.4, 18.7)])
def test_covariance_follows_straight_edge(angle: float, point: tuple[float, float]) -> None:
    images = edge_image(point, angle)
    covariance = label_covariances(images, torch.tensor([[point]]), HEATMAP)[0, 0]
    ratio, major_angle = principal_axes(covariance)
    assert angle_difference(major_angle, angle) < 10.0
    assert ratio >= 3.0


def test_covariance_edge_weight_zero_isotropic() -> None:
    images = edge_image((16.0, 16.0), 45.0)
    covariance = label_covariances(images, torch.tensor([[[16.0, 16.0]]]), HEATMAP, edge_weight=0.0)[0, 0]
    ratio, _ = principal_axes(covariance)
    assert ratio < 1.0 + 1e-6


def test_covariance_spread_capped() -> None:
    images = edge_image((16.0, 16.0), 0.0)
    params = SmoothingParams(window=12, edge_weight=1.0, max_std=2.0, min_std=0.9)
    covariance = label_covariances(images, torch.tensor([[[16.0, 16.0]]]), HEATMAP, params)[0, 0]
    eigenvalues = torch.linalg.eigvalsh(covariance)
    assert eigenvalues.max().item() <= 4.0 + 1e-5
    assert eigenvalues.min().item() >= 0.81 - 1e-5


def test_covariance_edge_weight_one_flat_image() -> None:
    images = torch.full((1, 3, CROP, CROP), 0.5)
    covariance = label_covariances(images, torch.tensor([[[16.0, 16.0]]]), HEATMAP, edge_weight=1.0)[0, 0]
    assert torch.isfinite(covariance).all().item()
    assert torch.allclose(covariance, torch.eye(2))


def test_covariance_points_outside_grid() -> None:
    images = edge_image((16.0, 16.0), 45.0)
    points = torch.tensor([[[-100.0, 16.0], [-2.0, -3.0], [40.0, 33.0], [16.0, 1e4]]])
    covariances = label_covariances(images, points, HEATMAP)
    assert torch.isfinite(covariances).all().item()
    assert torch.allclose(covariances[0, 0], torch.eye(2))


def test_labels_sum_to_one() -> None:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(3, 3, CROP, CROP, generator=generator)
    points = torch.rand(3, 7, 2, generator=generator) * (HEATMAP - 1)
    labels = image_aware_labels(images, points, HEATMAP)
    sums = labels.sum(dim=(-2, -1))
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert labels.min().item() >= 0.0


def test_labels_batched_shapes() -> None:
    images = torch.rand(4, 3, 64, 64)
    points = torch.rand(4, 9, 2) * 15
    assert label_covariances(images, points, (16, 16)).shape == (4, 9, 2, 2)
    assert image_aware_labels(images, points, (16, 16)).shape == (4, 9, 16, 16)


def test_labels_grey_input_matches_rgb() -> None:
    images = edge_image((16.0, 16.0), 30.0)
    points = torch.tensor([[[16.0, 16.0]]])
    rgb = label_covariances(images, points, HEATMAP)
    grey = label_covariances(images[:, :1], points, HEATMAP)
    assert torch.allclose(rgb, grey, atol=1e-5)


def test_labels_batch_independent() -> None:
    first = edge_image((16.0, 16.0), 0.0)
    second = edge_image((16.0, 16.0), 90.0)
    points = torch.tensor([[[16.0, 16.0]]])
    together = label_covariances(torch.cat([first, second]), points.expand(2, 1, 2), HEATMAP)
    alone = label_covariances(second, points, HEATMAP)
    assert torch.allclose(together[1], alone[0], atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_labels_keep_device_dtype(device: str, dtype: torch.dtype) -> None:
    images = edge_image((16.0, 16.0), 45.0, dtype=dtype).to(device)
    points = torch.tensor([[[16.0, 16.0], [3.5, 7.25]]], dtype=dtype, device=device)
    labels = image_aware_labels(images, points, HEATMAP)
    covariances = label_covariances(images, points, HEATMAP)
    assert labels.dtype == dtype
    assert labels.device.type == device
    assert covariances.dtype == dtype
    assert covariances.device.type == device


def test_labels_peak_at_point() -> None:
    images = edge_image((16.0, 16.0), 45.0)
    labels = image_aware_labels(images, torch.tensor([[[16.0, 16.0]]]), HEATMAP)
    flat_index = labels.flatten(2).argmax(dim=-1).item()
    assert divmod(flat_index, HEATMAP) == (16, 16)


def test_covariance_distributions_moments() -> None:
    covariance = torch.tensor([[[[3.0, 1.0], [1.0, 2.0]]]], dtype=torch.float64)
    points = torch.tensor([[[20.0, 18.0]]], dtype=torch.float64)
    weights = covariance_distributions(points, covariance, (40, 40))[0, 0]
    rows, cols = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    dx = cols.double() - 20.0
    dy = rows.double() - 18.0
    assert abs((weights * dx * dx).sum().item() - 3.0) < 1e-3
    assert abs((weights * dx * dy).sum().item() - 1.0) < 1e-3
    assert abs((weights * dy * dy).sum().item() - 2.0) < 1e-3


def test_edge_map_range_and_shape() -> None:
    images = edge_image((16.0, 16.0), 45.0)
    edges = edge_map(images, (HEATMAP, HEATMAP))
    assert edges.shape == (1, 1, HEATMAP, HEATMAP)
    assert edges.min().item() >= 0.0
    assert edges.max().item() == pytest.approx(1.0)


def test_edge_map_flat_is_zero() -> None:
    edges = edge_map(torch.full((2, 3, 64, 64), 0.7))
    assert edges.abs().max().item() < 1e-6


def test_edge_map_faint_edge_stays_small() -> None:
    images = 0.5 + 0.01 * (torch.arange(64.0) >= 32).float().view(1, 1, 1, 64).expand(1, 3, 64, 64)
    edges = edge_map(images, smooth_sigma=0.0)
    assert edges.max().item() < 0.2


def test_edge_map_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="integer stride"):
        edge_map(torch.rand(1, 3, 128, 128), (30, 30))


def test_params_reject_invalid() -> None:
    with pytest.raises(ValueError, match="edge_weight"):
        SmoothingParams(edge_weight=1.5)


def test_params_reject_unknown_override() -> None:
    with pytest.raises(TypeError, match="unknown smoothing parameters"):
        label_covariances(torch.rand(1, 3, 64, 64), torch.rand(1, 2, 2), 16, radius=3)


def test_params_overrides_match_dataclass() -> None:
    images = edge_image((16.0, 16.0), 45.0)
    points = torch.tensor([[[16.0, 16.0]]])
    from_keywords = label_covariances(images, points, HEATMAP, window=3, edge_weight=0.3)
    from_params = label_covariances(images, points, HEATMAP, SmoothingParams(window=3, edge_weight=0.3))
    assert torch.equal(from_keywords, from_params)
