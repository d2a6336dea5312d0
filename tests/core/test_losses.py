import pytest
import torch
import torch.nn.functional as F

from explorer.core.heatmaps import bilinear_distributions, gaussian_distributions, single_peak
from explorer.core.losses import (
    SoftArgmaxLoss,
    StarLoss,
    StructuredLoss,
    build_loss,
    margin_values,
)

MARGINS = ["smooth_l1", "l1", "l2"]
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine"),
    ),
]


def make_batch(
    batch: int = 3,
    num_landmarks: int = 5,
    size: tuple[int, int] = (12, 16),
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    scale: float = 3.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(batch, num_landmarks, *size, generator=generator, dtype=dtype)
    points = torch.rand(batch, num_landmarks, 2, generator=generator, dtype=dtype)
    points = points * torch.tensor([size[1] - 1.0, size[0] - 1.0], dtype=dtype)
    return logits, points


def integer_point_mass(points: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return bilinear_distributions(torch.round(points), size)


# ---------------------------------------------------------------------------
# Structured loss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("seed", range(5))
def test_structured_nonnegative_random(margin: str, seed: int) -> None:
    logits, points = make_batch(seed=seed)
    values = StructuredLoss(margin=margin, reduction="none")(logits, points)
    assert values.min().item() >= 0.0


@pytest.mark.parametrize("margin", MARGINS)
def test_structured_nonnegative_point_mass(margin: str) -> None:
    logits, points = make_batch(seed=7, scale=20.0)
    values = StructuredLoss(margin=margin, sigma=0.0, reduction="none")(logits, points)
    assert values.min().item() >= 0.0


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("epsilon,alpha", [(1.0, 0.1), (0.5, 1.0), (2.0, 0.0)])
def test_structured_gradient_closed_form(margin: str, epsilon: float, alpha: float) -> None:
    logits, points = make_batch(seed=1)
    logits.requires_grad_(True)
    labels = gaussian_distributions(points, (12, 16), sigma=1.3)
    loss = StructuredLoss(margin=margin, epsilon=epsilon, alpha=alpha, reduction="none")
    (gradient,) = torch.autograd.grad(loss(logits, points, labels).sum(), logits)

    augmented = (logits.detach().flatten(2) + alpha * margin_values(points, (12, 16), margin)) / epsilon
    expected = torch.softmax(augmented, dim=-1).reshape(logits.shape) - labels
    assert (gradient - expected).abs().max().item() < 1e-5


def test_structured_mean_reduction() -> None:
    logits, points = make_batch(seed=2)
    per_landmark = StructuredLoss(reduction="none")(logits, points)
    mean = StructuredLoss()(logits, points)
    assert per_landmark.shape == (3, 5)
    assert torch.allclose(mean, per_landmark.mean())


@pytest.mark.parametrize("margin", MARGINS)
def test_structured_epsilon_to_zero_hinge(margin: str) -> None:
    logits, points = make_batch(seed=3)
    size = (12, 16)
    labels = integer_point_mass(points, size)
    alpha = 0.5
    loss = StructuredLoss(margin=margin, epsilon=1e-4, alpha=alpha, reduction="none")(logits, points.round(), labels)

    scores = logits.flatten(2)
    augmented = scores + alpha * margin_values(points.round(), size, margin)
    target_index = (points.round()[..., 1] * size[1] + points.round()[..., 0]).long()
    hinge = augmented.amax(dim=-1) - scores.gather(-1, target_index[..., None])[..., 0]
    assert (loss - hinge).abs().max().item() < 1e-3


def test_structured_epsilon_convergence_monotone() -> None:
    logits, points = make_batch(seed=4)
    points = points.round()
    labels = integer_point_mass(points, (12, 16))
    gaps = []
    for epsilon in (1.0, 0.1, 0.01):
        smoothed = StructuredLoss(epsilon=epsilon, alpha=0.5)(logits, points, labels)
        hard = StructuredLoss(epsilon=1e-6, alpha=0.5)(logits, points, labels)
        gaps.append((smoothed - hard).item())
    assert gaps[0] > gaps[1] > gaps[2] >= 0.0


def test_structured_cross_entropy_case() -> None:
    logits, points = make_batch(seed=5)
    labels = gaussian_distributions(points, (12, 16), sigma=1.0)
    loss = StructuredLoss(epsilon=1.0, alpha=0.0)(logits, points, labels)
    cross_entropy = F.cross_entropy(logits.flatten(0, 1).flatten(1), labels.flatten(0, 1).flatten(1))
    assert abs(loss.item() - cross_entropy.item()) < 1e-10


def test_structured_large_target_margin_near_zero() -> None:
    size = (12, 16)
    points = torch.tensor([[[5.0, 7.0], [0.0, 11.0]]])
    logits = torch.zeros(1, 2, *size)
    logits[0, 0, 7, 5] = 60.0
    logits[0, 1, 11, 0] = 60.0
    loss = StructuredLoss(alpha=0.1)(logits, points, integer_point_mass(points, size))
    assert loss.item() < 1e-6


def test_structured_default_label_is_gaussian() -> None:
    logits, points = make_batch(seed=6)
    loss = StructuredLoss(sigma=1.5)
    explicit = loss(logits, points, gaussian_distributions(points, (12, 16), 1.5))
    assert torch.allclose(loss(logits, points), explicit)


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("epsilon", [1.0, 0.01])
def test_structured_extreme_logits_finite(margin: str, dtype: torch.dtype, epsilon: float) -> None:
    logits, points = make_batch(dtype=dtype, seed=8)
    logits = (1e4 * torch.sign(logits)).requires_grad_(True)
    loss = StructuredLoss(margin=margin, epsilon=epsilon)(logits, points)
    (gradient,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss).item()
    assert torch.isfinite(gradient).all().item()
    assert loss.item() >= 0.0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_structured_device_dtype(device: str, dtype: torch.dtype) -> None:
    logits, points = make_batch(dtype=dtype, seed=9)
    loss = StructuredLoss()(logits.to(device), points.to(device))
    assert loss.dtype == dtype
    assert loss.device.type == device
    assert torch.isfinite(loss).item()


def test_structured_monte_carlo_approaches_expectation() -> None:
    logits, points = make_batch(seed=10)
    torch.manual_seed(0)
    sampled = StructuredLoss(num_samples=20000)(logits, points)
    exact = StructuredLoss()(logits, points)
    assert abs(sampled.item() - exact.item()) < 0.05


def test_structured_monte_carlo_gradient_finite() -> None:
    logits, points = make_batch(seed=11)
    logits.requires_grad_(True)
    torch.manual_seed(0)
    (gradient,) = torch.autograd.grad(StructuredLoss(num_samples=4)(logits, points), logits)
    assert torch.isfinite(gradient).all().item()


@pytest.mark.parametrize(
    "options,match",
    [
        ({"margin": "l3"}, "margin"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"alpha": -1.0}, "alpha"),
        ({"sigma": -0.5}, "sigma"),
        ({"num_samples": 0}, "num_samples"),
        ({"reduction": "sum"}, "reduction"),
    ],
)
def test_structured_invalid_options(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StructuredLoss(**options)


def test_structured_shape_mismatch() -> None:
    logits, points = make_batch()
    with pytest.raises(ValueError, match="points"):
        StructuredLoss()(logits, points[:, :3])


def test_structured_label_shape_mismatch() -> None:
    logits, points = make_batch()
    with pytest.raises(ValueError, match="label_dist"):
        StructuredLoss()(logits, points, torch.ones(3, 5, 4, 4))


def test_margin_values_zero_at_point() -> None:
    points = torch.tensor([[[3.0, 2.0]]])
    for margin in MARGINS:
        values = margin_values(points, (5, 7), margin).reshape(5, 7)
        assert values[2, 3].item() == 0.0


def test_margin_values_smooth_l1_hand() -> None:
    points = torch.tensor([[[0.0, 0.0]]])
    values = margin_values(points, (1, 4), "smooth_l1")[0, 0]
    assert values.tolist() == [0.0, 0.5, 1.5, 2.5]


# ---------------------------------------------------------------------------
# Soft-argmax loss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["l1", "smooth_l1", "l2"])
def test_softargmax_zero_error_minimum(distance: str) -> None:
    logits = single_peak((16, 16), center=(7, 9), sigma=1.5, dtype=torch.float64)
    points = torch.tensor([[[7.0, 9.0]]], dtype=torch.float64)
    loss = SoftArgmaxLoss(distance=distance)
    at_truth = loss(logits, points).item()
    assert at_truth < 1e-8

    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        noisy = logits + 0.5 * torch.randn(logits.shape, generator=generator, dtype=torch.float64)
        assert loss(noisy, points).item() > at_truth
        moved = points + torch.randn(points.shape, generator=generator, dtype=torch.float64)
        assert loss(logits, moved).item() > at_truth


@pytest.mark.parametrize("distance", ["l1", "smooth_l1", "l2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softargmax_gradient_finite(distance: str, dtype: torch.dtype) -> None:
    logits, points = make_batch(dtype=dtype, seed=12)
    logits = (1e4 * logits).requires_grad_(True)
    (gradient,) = torch.autograd.grad(SoftArgmaxLoss(distance=distance)(logits, points), logits)
    assert torch.isfinite(gradient).all().item()


def test_softargmax_ignores_label_dist() -> None:
    logits, points = make_batch(seed=13)
    loss = SoftArgmaxLoss()
    labels = gaussian_distributions(points, (12, 16), 2.0)
    assert loss(logits, points, labels).item() == loss(logits, points).item()


def test_softargmax_l1_hand_value() -> None:
    logits = torch.full((1, 1, 1, 5), -1e4)
    logits[0, 0, 0, 3] = 0.0
    points = torch.tensor([[[1.0, 0.5]]])
    assert SoftArgmaxLoss(distance="l1")(logits, points).item() == pytest.approx(2.5)


def test_softargmax_invalid_distance() -> None:
    with pytest.raises(ValueError, match="distance"):
        SoftArgmaxLoss(distance="huber")


# ---------------------------------------------------------------------------
# STAR loss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["smooth_l1", "l1"])
def test_star_zero_error_minimum_points(distance: str) -> None:
    logits = single_peak((16, 16), center=(7, 9), sigma=1.5, dtype=torch.float64)
    points = torch.tensor([[[7.0, 9.0]]], dtype=torch.float64)
    loss = StarLoss(distance=distance)
    at_truth = loss(logits, points).item()

    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        moved = points + 0.5 * torch.randn(points.shape, generator=generator, dtype=torch.float64)
        assert loss(logits, moved).item() > at_truth


@pytest.mark.parametrize("distance", ["smooth_l1", "l1"])
def test_star_zero_error_term_is_zero(distance: str) -> None:
    logits = single_peak((16, 16), center=(7, 9), sigma=1.5, dtype=torch.float64)
    points = torch.tensor([[[7.0, 9.0]]], dtype=torch.float64)
    assert StarLoss(distance=distance, weight=0.0)(logits, points).item() < 1e-12


def test_star_zero_error_minimum_heatmap() -> None:
    logits = single_peak((16, 16), center=(7, 9), sigma=1.5, dtype=torch.float64)
    points = torch.tensor([[[7.0, 9.0]]], dtype=torch.float64)
    loss = StarLoss(weight=0.0)
    at_truth = loss(logits, points).item()

    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        noisy = logits + 0.5 * torch.randn(logits.shape, generator=generator, dtype=torch.float64)
        assert loss(noisy, points).item() > at_truth


def test_star_error_along_major_axis_cheaper() -> None:
    # A heatmap elongated along x tolerates an x error better than the same y error.
    size = (32, 32)
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    logits = (-((cols - 15.0) ** 2) / (2 * 4.0**2) - ((rows - 15.0) ** 2) / (2 * 1.0**2)).reshape(1, 1, *size)
    loss = StarLoss(weight=0.0)
    along = loss(logits, torch.tensor([[[17.0, 15.0]]])).item()
    across = loss(logits, torch.tensor([[[15.0, 17.0]]])).item()
    assert along < across


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "kind",
    ["random", "isotropic", "point_mass", "extreme"],
)
def test_star_gradient_finite(dtype: torch.dtype, kind: str) -> None:
    logits, points = make_batch(dtype=dtype, seed=14)
    if kind == "isotropic":
        logits = single_peak((12, 16), center=(7, 5), sigma=1.0, dtype=dtype).expand(3, 5, 12, 16).clone()
    elif kind == "point_mass":
        logits = torch.full_like(logits, -1e4)
        logits[..., 4, 6] = 0.0
    elif kind == "extreme":
        logits = 1e4 * torch.sign(logits)
    logits.requires_grad_(True)
    loss = StarLoss()(logits, points)
    (gradient,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss).item()
    assert torch.isfinite(gradient).all().item()


def test_star_row_heatmap_finite() -> None:
    logits, points = make_batch(size=(1, 32), seed=15)
    points[..., 1] = 0.0
    logits.requires_grad_(True)
    (gradient,) = torch.autograd.grad(StarLoss()(logits, points), logits)
    assert torch.isfinite(gradient).all().item()


@pytest.mark.parametrize("device", DEVICES)
def test_star_device_dtype(device: str) -> None:
    logits, points = make_batch(dtype=torch.float32, seed=16)
    loss = StarLoss()(logits.to(device), points.to(device))
    assert loss.dtype == torch.float32
    assert loss.device.type == device


# ---------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,cls",
    [("structured", StructuredLoss), ("softargmax", SoftArgmaxLoss), ("star", StarLoss)],
)
def test_build_loss_names(name: str, cls: type) -> None:
    assert isinstance(build_loss(name), cls)


def test_build_loss_passes_options() -> None:
    loss = build_loss("structured", margin="l1", alpha=0.3)
    assert loss.margin == "l1"
    assert loss.alpha == 0.3


def test_build_loss_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("wing")


@pytest.mark.parametrize(
    ("margin", "per_coordinate"),
    [
        ("l1", lambda offsets: offsets.abs()),
        ("l2", lambda offsets: offsets.square()),
        ("smooth_l1", lambda offsets: torch.where(offsets.abs() < 1, 0.5 * offsets.square(), offsets.abs() - 0.5)),
    ],
)
def test_margin_values_match_offsets(margin: str, per_coordinate) -> None:
    # The separable computation must equal the sum over the (x, y) offsets of
    # every pixel centre, on a non-square grid with off-grid points.
    points = torch.tensor([[[2.3, 4.7], [-1.5, 9.2], [11.0, 0.0]]], dtype=torch.float64)
    height, width = 7, 12
    rows, columns = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    grid = torch.stack([columns, rows], dim=-1).reshape(-1, 2).to(torch.float64)
    expected = per_coordinate(grid[None, None] - points[:, :, None, :]).sum(dim=-1)

    torch.testing.assert_close(margin_values(points, (height, width), margin), expected)


def test_gaussian_distributions_match_direct() -> None:
    points = torch.tensor([[[2.3, 4.7], [-1.5, 9.2]]], dtype=torch.float64)
    rows, columns = torch.meshgrid(torch.arange(7), torch.arange(12), indexing="ij")
    squared = (columns - points[0, :, 0, None, None]).square() + (rows - points[0, :, 1, None, None]).square()
    expected = torch.softmax((-squared / (2 * 1.5**2)).reshape(2, -1), dim=-1).reshape(1, 2, 7, 12)

    torch.testing.assert_close(gaussian_distributions(points, (7, 12), 1.5), expected)
