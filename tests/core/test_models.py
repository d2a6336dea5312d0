import json

import pytest
import torch

from explorer.core.models import HeatmapNet, build_model


@pytest.mark.parametrize(
    "config,expected",
    [
        ({}, (2, 68, 32, 32)),
        ({"num_landmarks": 98, "input_size": 64, "width": 8}, (2, 98, 16, 16)),
        ({"num_landmarks": 29, "input_size": 96, "stride": 8, "width": 8}, (2, 29, 12, 12)),
        ({"num_landmarks": 5, "input_size": 64, "stride": 16, "width": 8, "blocks": 1}, (2, 5, 4, 4)),
        ({"num_landmarks": 5, "input_size": 64, "stride": 2, "width": 8, "blocks": 1}, (2, 5, 32, 32)),
    ],
)
def test_model_output_shape(config: dict, expected: tuple[int, ...]) -> None:
    model = build_model(config).eval()
    size = model.input_size
    with torch.no_grad():
        logits = model(torch.rand(2, 3, size, size))
    assert logits.shape == expected
    assert model.heatmap_size == expected[-2:]


def test_model_config_round_trip() -> None:
    model = HeatmapNet(num_landmarks=29, input_size=64, stride=8, width=16, blocks=1)
    config = json.loads(json.dumps(model.config))
    rebuilt = build_model(config)
    assert rebuilt.config == model.config


def test_model_round_trip_same_output() -> None:
    torch.manual_seed(0)
    model = HeatmapNet(num_landmarks=3, input_size=64, width=8).eval()
    rebuilt = build_model(model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(images), rebuilt(images))


def test_model_default_config_values() -> None:
    assert HeatmapNet().config == {"num_landmarks": 68, "input_size": 128, "stride": 4, "width": 32, "blocks": 2}


def test_model_backward_gradients() -> None:
    model = HeatmapNet(num_landmarks=4, input_size=64, width=8, blocks=1)
    model(torch.rand(2, 3, 64, 64)).square().mean().backward()
    gradients = [p.grad for p in model.parameters()]
    assert all(g is not None for g in gradients)
    assert all(torch.isfinite(g).all() for g in gradients)


def test_model_float64() -> None:
    model = HeatmapNet(num_landmarks=2, input_size=32, width=4, blocks=1).double().eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 32, 32, dtype=torch.float64))
    assert logits.dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_model_cuda() -> None:
    model = HeatmapNet(num_landmarks=4, input_size=64, width=8).cuda().eval()
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64, device="cuda"))
    assert logits.device.type == "cuda"


def test_model_normalisation_buffers_not_saved() -> None:
    state = HeatmapNet(num_landmarks=2, input_size=32, width=4).state_dict()
    assert "image_mean" not in state
    assert "image_std" not in state


@pytest.mark.parametrize(
    "config,error,match",
    [
        ({"input_size": 100}, ValueError, "multiple of 32"),
        ({"input_size": 0}, ValueError, "multiple of 32"),
        ({"stride": 3}, ValueError, "stride must be one of"),
        ({"stride": 32}, ValueError, "stride must be one of"),
        ({"width": 7}, ValueError, "width"),
        ({"num_landmarks": 0}, ValueError, "num_landmarks"),
        ({"blocks": 0}, ValueError, "blocks"),
        ({"width": 32.0}, TypeError, "width must be an int"),
        ({"depth": 3}, ValueError, "unknown model config keys"),
    ],
)
def test_model_bad_config(config: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build_model(config)


def test_build_model_rejects_non_dict() -> None:
    with pytest.raises(TypeError, match="config must be a dict"):
        build_model([("width", 8)])


def test_model_rejects_bad_image_shape() -> None:
    model = HeatmapNet(num_landmarks=2, input_size=32, width=4)
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        model(torch.rand(1, 1, 32, 32))


def test_model_rejects_bad_image_side() -> None:
    model = HeatmapNet(num_landmarks=2, input_size=32, width=4)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 40, 40))
