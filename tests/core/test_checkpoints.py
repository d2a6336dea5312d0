"""Checkpoint files: round trips, atomic writes and clear errors for bad files."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explorer.core.checkpoints import (
    CheckpointError,
    atomic_write_bytes,
    load_model,
    load_state,
    read_card,
    save_model,
    save_state,
)
from explorer.core.models import build_model

CONFIG = {"num_landmarks": 68, "input_size": 64, "stride": 4, "width": 16, "blocks": 1}


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model(CONFIG).eval()
    path = tmp_path / "model.safetensors"
    save_model(path, model, {"objective": "structured", "decoder": "refined"})
    return path, model


def test_model_round_trip(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    loaded, card = load_model(path)
    images = torch.rand(1, 3, 64, 64)

    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    assert card["model"] == model.config
    assert card["objective"] == "structured"


def test_sidecar_card_matches_embedded(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    assert json.loads(path.with_suffix(".json").read_text()) == read_card(path)


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found: .*absent.safetensors"):
        load_model(tmp_path / "absent.safetensors")


def test_pickle_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))

    with pytest.raises(CheckpointError, match="model.safetensors is not a safetensors file"):
        load_model(path)


def test_torch_save_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(build_model(CONFIG).state_dict(), path)

    with pytest.raises(CheckpointError, match="model.pt is not a safetensors file"):
        load_model(path)


def test_random_bytes_rejected(tmp_path: Path) -> None:
    path = tmp_path / "noise.safetensors"
    path.write_bytes(bytes(range(256)) * 4)

    with pytest.raises(CheckpointError, match="noise.safetensors is not a safetensors file"):
        load_model(path)


def test_short_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"abc")

    with pytest.raises(CheckpointError, match="only 3 bytes"):
        load_model(path)


def test_missing_card_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bare.safetensors"
    save_file(build_model(CONFIG).state_dict(), str(path))

    with pytest.raises(CheckpointError, match="bare.safetensors has no 'card' metadata"):
        load_model(path)


def test_missing_tensor_named(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, model = saved
    tensors = dict(model.state_dict())
    del tensors["head.weight"]
    damaged = tmp_path / "damaged.safetensors"
    save_file(tensors, str(damaged), metadata={"card": json.dumps(read_card(path))})

    with pytest.raises(CheckpointError, match=r"damaged.safetensors does not match .*missing tensors: head.weight"):
        load_model(damaged)


def test_mismatched_shape_named(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, _ = saved
    # Weights of a 98-point model under a card that describes 68 points.
    other = build_model(CONFIG | {"num_landmarks": 98})
    damaged = tmp_path / "mismatch.safetensors"
    save_file(other.state_dict(), str(damaged), metadata={"card": json.dumps(read_card(path))})

    with pytest.raises(CheckpointError, match=r"shape mismatches: head.bias \(checkpoint \(98,\), model \(68,\)\)"):
        load_model(damaged)


def test_invalid_model_config_named(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, model = saved
    card = read_card(path) | {"model": CONFIG | {"input_size": 100}}
    damaged = tmp_path / "config.safetensors"
    save_file(model.state_dict(), str(damaged), metadata={"card": json.dumps(card)})

    with pytest.raises(CheckpointError, match="config.safetensors: its model configuration is invalid"):
        load_model(damaged)


def test_state_round_trip(tmp_path: Path) -> None:
    model = build_model(CONFIG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "epoch": 3, "history": [{"nme": 4.5}], "rng": torch.get_rng_state()}

    save_state(tmp_path / "state.safetensors", state)
    loaded = load_state(tmp_path / "state.safetensors")

    assert loaded["epoch"] == 3
    assert loaded["history"] == [{"nme": 4.5}]
    assert torch.equal(loaded["rng"], state["rng"])
    restored = torch.optim.AdamW(model.parameters(), lr=1e-3)
    restored.load_state_dict(loaded["optimizer"])
    first_key = next(iter(optimizer.state_dict()["state"]))
    assert torch.equal(restored.state_dict()["state"][first_key]["exp_avg"], optimizer.state_dict()["state"][first_key]["exp_avg"])


def test_state_file_is_not_a_model(tmp_path: Path) -> None:
    save_state(tmp_path / "state.safetensors", {"epoch": 1})

    with pytest.raises(CheckpointError, match="no 'card' metadata"):
        load_model(tmp_path / "state.safetensors")


def test_atomic_write_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")

    assert target.read_bytes() == b"second"
    assert [path.name for path in tmp_path.iterdir()] == ["file.bin"]


def test_folder_rejected(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a folder; pass a .safetensors file"):
        load_model(tmp_path)
