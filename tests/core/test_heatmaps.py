import pytest
import torch

from explorer.core.heatmaps import (
    bilinear_distributions,
    decode_argmax,
    decode_refined,
    gaussian_distributions,
    gaussian_heatmaps,
    plateau,
    ring,
    same_soft_argmax_examples,
    single_peak,
    soft_argmax,
    two_peaks,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine"),
    ),
]


def random_points(batch: int, num_landmarks: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(batch, num_landmarks, 2, generator=generator, dtype=torch.float64)
    return points * torch.tensor([width - 1.0, height - 1.0], dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_refined_subpixel_logits(device: str, dtype: torch.dtype) -> None:
    points = random_points(4, 17, 24, 32).to(device=device, dtype=dtype)
    logits = gaussian_heatmaps(points, (24, 32), sigma=1.5).log()
    decoded = decode_refined(logits)
    assert decoded.dtype == dtype
    assert decoded.device.type == device
    assert (decoded - points).abs().max().item() < 0.05


@pytest.mark.parametrize("sigma", [0.8, 1.0, 2.0, 3.0])
def test_decode_refined_subpixel_probabilities(sigma: float) -> None:
    points = random_points(3, 20, 32, 32, seed=1).float()
    heatmaps = gaussian_heatmaps(points, 32, sigma)
    decoded = decode_refined(heatmaps, input_kind="probabilities")
    assert (decoded - points).abs().max().item() < 0.05


def test_decode_refined_softmax_of_logits() -> None:
    points = random_points(2, 10, 16, 16, seed=2).float()
    probabilities = gaussian_distributions(points, 16, sigma=1.2)
    decoded = decode_refined(probabilities, input_kind="probabilities")
    assert (decoded - points).abs().max().item() < 0.05


def test_decode_refined_anisotropic_gaussian() -> None:
    # Rotated covariance: the full 2-D Newton step recovers the centre exactly.
    centre = torch.tensor([13.3, 9.7])
    inverse = torch.linalg.inv(torch.tensor([[4.0, 1.5], [1.5, 2.0]]))
    rows, cols = torch.meshgrid(torch.arange(20.0), torch.arange(28.0), indexing="ij")
    offsets = torch.stack([cols - centre[0], rows - centre[1]], dim=-1)
    logits = -0.5 * torch.einsum("hwi,ij,hwj->hw", offsets, inverse, offsets)
    decoded = decode_refined(logits[None, None])[0, 0]
    assert (decoded - centre).abs().max().item() < 0.05


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_argmax_nearest_pixel(dtype: torch.dtype) -> None:
    points = random_points(4, 17, 24, 32, seed=3).to(dtype)
    heatmaps = gaussian_heatmaps(points, (24, 32), sigma=1.5)
    decoded = decode_argmax(heatmaps)
    assert decoded.dtype == dtype
    assert torch.equal(decoded, torch.round(points))


@pytest.mark.parametrize(
    "point",
    [(0.0, 0.0), (31.0, 0.0), (0.0, 23.0), (31.0, 23.0), (0.2, 11.4), (30.7, 12.1), (15.3, 0.3), (14.6, 22.8)],
)
def test_decode_refined_borders_corners(point: tuple[float, float]) -> None:
    points = torch.tensor([[point]], dtype=torch.float64)
    logits = gaussian_heatmaps(points, (24, 32), sigma=1.0).log()
    decoded = decode_refined(logits)
    assert (decoded - points).abs().max().item() < 0.05


def test_decode_refined_peak_outside_grid_clamped() -> None:
    points = torch.tensor([[[-3.0, 5.0]]])
    logits = gaussian_heatmaps(points, 16, sigma=1.0).log()
    decoded = decode_refined(logits)
    assert decoded[0, 0, 0].item() >= -0.5
    assert decoded[0, 0, 0].item() <= 1.0


@pytest.mark.parametrize("size", [(1, 1), (1, 2), (2, 2), (1, 40), (40, 1)])
def test_decode_refined_tiny_grids(size: tuple[int, int]) -> None:
    logits = torch.randn(2, 3, *size)
    decoded = decode_refined(logits)
    assert decoded.shape == (2, 3, 2)
    assert torch.isfinite(decoded).all()


def test_decode_refined_row_heatmap() -> None:
    points = torch.tensor([[[17.35, 0.0]]])
    logits = gaussian_heatmaps(points, (1, 40), sigma=2.0).log()
    decoded = decode_refined(logits)
    assert abs(decoded[0, 0, 0].item() - 17.35) < 0.05
    assert decoded[0, 0, 1].item() == 0.0


def test_decode_refined_flat_heatmap() -> None:
    decoded = decode_refined(torch.zeros(1, 1, 8, 8))
    assert torch.equal(decoded, torch.zeros(1, 1, 2))


def test_decode_refined_invalid_kind() -> None:
    with pytest.raises(ValueError, match="input_kind"):
        decode_refined(torch.zeros(1, 1, 4, 4), input_kind="softmax")


def test_decoders_reject_3d_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, K, H, W\)"):
        decode_argmax(torch.zeros(4, 4, 4))


@pytest.mark.parametrize("device", DEVICES)
def test_soft_argmax_point_mass(device: str) -> None:
    logits = torch.full((1, 1, 6, 9), -1e4, device=device)
    logits[0, 0, 4, 7] = 0.0
    decoded = soft_argmax(logits)
    assert decoded.device.type == device
    assert decoded.cpu().tolist() == [[[7.0, 4.0]]]


def test_soft_argmax_uniform_is_grid_centre() -> None:
    decoded = soft_argmax(torch.zeros(1, 1, 5, 8, dtype=torch.float64))
    assert torch.allclose(decoded, torch.tensor([[[3.5, 2.0]]], dtype=torch.float64))


def test_soft_argmax_temperature_sharpens() -> None:
    logits = torch.zeros(1, 1, 1, 10)
    logits[0, 0, 0, 8] = 1.0
    warm = soft_argmax(logits, temperature=1.0)[0, 0, 0].item()
    cold = soft_argmax(logits, temperature=0.05)[0, 0, 0].item()
    assert abs(cold - 8.0) < 1e-3
    assert abs(warm - 8.0) > 1.0


def test_soft_argmax_invalid_temperature() -> None:
    with pytest.raises(ValueError, match="temperature"):
        soft_argmax(torch.zeros(1, 1, 4, 4), temperature=0.0)


def test_gaussian_heatmaps_peak_and_shape() -> None:
    points = torch.tensor([[[3.0, 2.0], [0.5, 0.5]]])
    heatmaps = gaussian_heatmaps(points, (5, 7), sigma=1.0)
    assert heatmaps.shape == (1, 2, 5, 7)
    assert heatmaps[0, 0, 2, 3].item() == 1.0
    assert heatmaps.max().item() <= 1.0


def test_gaussian_distributions_sum_to_one() -> None:
    points = torch.tensor([[[3.0, 2.0], [-20.0, 50.0]]], dtype=torch.float64)
    sums = gaussian_distributions(points, (5, 7), sigma=1.0).sum(dim=(-2, -1))
    assert torch.allclose(sums, torch.ones_like(sums))


def test_bilinear_distributions_mean_is_point() -> None:
    points = random_points(2, 5, 9, 11, seed=4)
    weights = bilinear_distributions(points, (9, 11))
    assert torch.allclose(weights.sum(dim=(-2, -1)), torch.ones(2, 5, dtype=torch.float64))
    assert torch.allclose(soft_argmax(weights.clamp_min(1e-300).log()), points)


def test_gaussian_heatmaps_invalid_sigma() -> None:
    with pytest.raises(ValueError, match="sigma"):
        gaussian_heatmaps(torch.zeros(1, 1, 2), 8, sigma=0.0)


@pytest.mark.parametrize("size", [(32, 32), (33, 33), (24, 48), (1, 33), (1, 64), (9, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_soft_argmax_examples_agree(size: tuple[int, int], dtype: torch.dtype) -> None:
    examples = same_soft_argmax_examples(size, dtype=dtype)
    centres = [soft_argmax(logits)[0, 0] for logits in examples.values()]
    for centre in centres[1:]:
        assert (centre - centres[0]).abs().max().item() < 1e-4


@pytest.mark.parametrize("size", [(32, 32), (33, 33), (24, 48), (1, 33), (1, 64), (9, 9)])
def test_same_soft_argmax_examples_argmax_differs(size: tuple[int, int]) -> None:
    examples = same_soft_argmax_examples(size)
    peaks = {tuple(decode_argmax(logits)[0, 0].tolist()) for logits in examples.values()}
    assert len(peaks) == len(examples)


def test_same_soft_argmax_examples_offcentre() -> None:
    examples = same_soft_argmax_examples((20, 40), center=(12, 7))
    for logits in examples.values():
        assert (soft_argmax(logits)[0, 0] - torch.tensor([12.0, 7.0])).abs().max().item() < 1e-4


def test_same_soft_argmax_examples_too_narrow() -> None:
    with pytest.raises(ValueError, match="at least 4 px"):
        same_soft_argmax_examples((8, 8), center=(2, 4))


def test_two_peaks_argmax_on_peak() -> None:
    logits = two_peaks((16, 16), center=(8, 8), offset=(3.0, 2.0), sigma=1.0)
    assert decode_argmax(logits)[0, 0].tolist() == [5.0, 6.0]


def test_two_peaks_unequal_weight_shifts() -> None:
    logits = two_peaks((1, 41), center=(20, 0), offset=6.0, weight=0.8)
    assert soft_argmax(logits)[0, 0, 0].item() < 19.0


def test_ring_centre_is_low() -> None:
    logits = ring(21, center=(10, 10), radius=5.0)
    assert logits[0, 0, 10, 10].item() < logits.max().item() - 10.0


def test_plateau_is_flat_inside() -> None:
    logits = plateau(21, center=(10, 10), radius=3.0)
    assert logits[0, 0, 10, 7:14].abs().max().item() == 0.0


def test_single_peak_rejects_subpixel_centre() -> None:
    with pytest.raises(ValueError, match="pixel centre"):
        single_peak(16, center=(7.5, 7.0))
