"""Training loop: every objective learns, checkpoints reload exactly, resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from explorer.core.checkpoints import load_model
from explorer.core.training import NonFiniteLossError, TrainConfig, Trainer, train
from tests.conftest import data_root

SMALL_MODEL = {"input_size": 64, "stride": 4, "width": 16, "blocks": 1}


def small_config(data: Path, objective: str, **overrides) -> TrainConfig:
    """A run of a few seconds: 16 training faces, 4 validation faces, no workers."""
    values = {
        "data": str(data),
        "objective": objective,
        "model": SMALL_MODEL,
        "epochs": 2,
        "batch_size": 4,
        "lr": 2e-3,
        "warmup_epochs": 0.25,
        "num_workers": 0,
        "max_train_faces": 16,
        "max_val_faces": 4,
        "seed": 3,
    }
    values.update(overrides)
    return TrainConfig.from_dict(values)


@pytest.fixture(scope="module")
def faces(generated_faces: Path) -> Path:
    """Real 300-W faces when EXPLORER_DATA is set, generated faces otherwise."""
    return data_root() or generated_faces


@pytest.mark.parametrize(
    ("objective", "labels"),
    [("structured", "image-aware"), ("structured", "isotropic"), ("softargmax", "isotropic"), ("star", "isotropic")],
)
def test_objective_smoke(faces: Path, tmp_path: Path, objective: str, labels: str) -> None:
    trainer = train(small_config(faces, objective, labels=labels), tmp_path, progress=False)
    losses = [row["train_loss"] for row in trainer.history]

    assert len(losses) == 2
    assert losses[1] < losses[0]

    # The saved EMA weights must reproduce the in-memory model bit for bit.
    model, card = load_model(tmp_path / "last.safetensors")
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = trainer.ema.module.eval()(images)
        reloaded = model(images)
    assert torch.equal(reloaded, expected)
    assert card["objective"] == objective


def test_run_files_written(faces: Path, tmp_path: Path) -> None:
    train(small_config(faces, "structured", epochs=1), tmp_path, progress=False)
    names = {path.name for path in tmp_path.iterdir()}

    assert {"best.safetensors", "best.json", "last.safetensors", "last.json", "state.safetensors", "metrics.jsonl"} <= names
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]
    assert {"train_loss", "nme", "fr", "auc", "lr", "seconds"} <= set(rows[0])


def test_card_records_run(faces: Path, tmp_path: Path) -> None:
    train(small_config(faces, "structured", epochs=1), tmp_path, command="explorer train --test", progress=False)
    card = json.loads((tmp_path / "best.json").read_text())

    assert card["command"] == "explorer train --test"
    assert card["data"]["train_faces"] == 16
    assert "non-commercial" in card["licence"]
    assert card["validation"]["decoder"] == "refined"


def test_resume_matches_uninterrupted(faces: Path, tmp_path: Path) -> None:
    config = small_config(faces, "structured", epochs=2)
    uninterrupted = train(config, tmp_path / "whole", progress=False)

    # Stop after one epoch, then run the same command again in a new process state.
    train(config, tmp_path / "split", progress=False, stop_after_epochs=1)
    resumed = train(config, tmp_path / "split", progress=False)

    assert [row["epoch"] for row in resumed.history] == [1, 2]
    for name, tensor in uninterrupted.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name
    for name, tensor in uninterrupted.ema.module.state_dict().items():
        assert torch.equal(resumed.ema.module.state_dict()[name], tensor), name


def test_resume_drops_unfinished_log_line(faces: Path, tmp_path: Path) -> None:
    config = small_config(faces, "structured", epochs=2)
    train(config, tmp_path, progress=False, stop_after_epochs=1)

    # A kill between the state write and the next state write leaves a log
    # line for an epoch the state does not have.
    with (tmp_path / "metrics.jsonl").open("a") as stream:
        stream.write(json.dumps({"epoch": 2, "nme": 1.0}) + "\n")
    trainer = Trainer(config, tmp_path, progress=False)
    trainer.resume()

    rows = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1


def test_resume_rejects_other_config(faces: Path, tmp_path: Path) -> None:
    train(small_config(faces, "structured", epochs=1), tmp_path, progress=False)

    with pytest.raises(ValueError, match="different configuration"):
        train(small_config(faces, "structured", epochs=1, lr=1e-4), tmp_path, progress=False)


def test_non_finite_loss_keeps_checkpoint(faces: Path, tmp_path: Path) -> None:
    config = small_config(faces, "softargmax", epochs=2)
    train(config, tmp_path, progress=False, stop_after_epochs=1)
    before = (tmp_path / "last.safetensors").read_bytes()

    trainer = Trainer(config, tmp_path, progress=False)
    trainer.loss_fn = lambda logits, points, labels: logits.sum() * float("nan")
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 1"):
        trainer.fit()

    assert (tmp_path / "last.safetensors").read_bytes() == before
    model, _ = load_model(tmp_path / "last.safetensors")
    assert model.config["input_size"] == 64


def test_config_rejects_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown training config keys: learning_rate"):
        TrainConfig.from_dict({"data": ".", "learning_rate": 0.1})


def test_config_rejects_unknown_objective() -> None:
    with pytest.raises(ValueError, match="objective must be one of"):
        TrainConfig(data=".", objective="mse")


def test_resume_allows_other_thread_count(faces: Path, tmp_path: Path) -> None:
    train(small_config(faces, "structured", epochs=2), tmp_path, progress=False, stop_after_epochs=1)
    resumed = train(small_config(faces, "structured", epochs=2, threads=1), tmp_path, progress=False)

    assert [row["epoch"] for row in resumed.history] == [1, 2]


def test_config_differences_name_values() -> None:
    saved = TrainConfig(data=".", lr=2e-3, num_workers=2)
    requested = TrainConfig(data=".", lr=1e-2, num_workers=0)

    assert requested.differences(saved) == ["lr: run has 0.002, this command 0.01"]


def test_card_records_loss_defaults(faces: Path, tmp_path: Path) -> None:
    train(small_config(faces, "structured", epochs=1), tmp_path, progress=False)
    card = json.loads((tmp_path / "best.json").read_text())

    assert card["loss"]["alpha"] == 0.1
    assert card["loss"]["margin"] == "smooth_l1"
