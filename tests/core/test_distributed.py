"""Multi-process training: data sharding, synchronised BatchNorm and two gloo ranks against one process.

Tolerance of the two-process run against the single-process run of the same
seed, after one epoch of 4 AdamW steps: for every tensor except
``head.bias``, the L2 norm of the difference is at most 1e-3 of the
tensor's norm. Measured: at most 1.1e-4 on 2 CPU cores with torch 2.13. Single elements can
differ more, because Adam divides each gradient by its own running
magnitude, so an element whose gradient is mostly rounding noise moves by
up to the learning rate per step in either run. Every element is therefore
checked against ``2 * lr * steps`` only. The losses are invariant to adding
a constant to a heatmap, so the exact gradient of ``head.bias`` is zero and
that whole tensor is such noise (measured: relative difference 4e-3).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from explorer.core import distributed
from explorer.core.distributed import DistributedContext, EpochShardSampler, ProcessGroupBatchNorm2d, epoch_order
from explorer.core.training import TrainConfig, Trainer
from tests.conftest import REPO

SMALL_MODEL = {"input_size": 64, "stride": 4, "width": 16, "blocks": 1}
RELATIVE_TOLERANCE = 1e-3


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config_values(data: Path, objective: str) -> dict[str, Any]:
    """One epoch of 4 steps of 4 faces: 16 training faces, 4 validation faces, one thread."""
    return {
        "data": str(data),
        "objective": objective,
        "labels": "image-aware",
        "model": SMALL_MODEL,
        "epochs": 1,
        "batch_size": 4,
        "lr": 2e-3,
        "warmup_epochs": 0.25,
        "num_workers": 0,
        "threads": 1,
        "max_train_faces": 16,
        "max_val_faces": 4,
        "seed": 3,
    }


def _train_rank(rank: int, world_size: int, port: int, values: dict[str, Any], out_dir: str) -> None:
    """Train one rank (or the single process when world_size is 1) and save its final weights."""
    from explorer.core.training import train

    if world_size > 1:
        os.environ.update({
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
        })
    trainer = train(TrainConfig.from_dict(values), out_dir, progress=False)
    weights = {f"model.{name}": tensor.contiguous() for name, tensor in trainer.model.state_dict().items()}
    weights |= {f"ema.{name}": tensor.contiguous() for name, tensor in trainer.ema.module.state_dict().items()}
    save_file(weights, str(Path(out_dir) / f"weights-rank{rank}.safetensors"), metadata={"history": json.dumps(trainer.history)})


# ------------------------------------------------------------------ data order


@pytest.mark.parametrize("size", [16, 17])
def test_epoch_order_matches_loader(size: int) -> None:
    generator = torch.Generator().manual_seed(300_012)
    loader = DataLoader(range(size), batch_size=4, shuffle=True, generator=generator)
    visited = [int(index) for batch in loader for index in batch]

    assert epoch_order(size, 300_012) == visited


def test_shards_rebuild_single_batches() -> None:
    dataset = list(range(16))
    world_size, batch_size = 2, 4
    single = [batch.tolist() for batch in DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(7))]

    shards = []
    for rank in range(world_size):
        sampler = EpochShardSampler(dataset, world_size, rank, seed_for_epoch=lambda epoch: 7 + epoch)
        sampler.set_epoch(0)
        shards.append([batch.tolist() for batch in DataLoader(dataset, batch_size=batch_size // world_size, sampler=sampler)])

    assert len(shards[0]) == len(shards[1]) == len(single)
    for step, batch in enumerate(single):
        assert sorted(shards[0][step] + shards[1][step]) == sorted(batch), step


def test_shards_pad_uneven_dataset() -> None:
    dataset = list(range(10))
    samplers = [EpochShardSampler(dataset, 3, rank, seed_for_epoch=lambda epoch: epoch) for rank in range(3)]
    shards = [list(sampler) for sampler in samplers]

    assert [len(shard) for shard in shards] == [4, 4, 4]
    assert set(shards[0] + shards[1] + shards[2]) == set(dataset)


def test_shards_change_with_epoch() -> None:
    sampler = EpochShardSampler(list(range(32)), 2, 0, seed_for_epoch=lambda epoch: epoch)
    sampler.set_epoch(1)
    first = list(sampler)
    sampler.set_epoch(2)

    assert list(sampler) != first
    sampler.set_epoch(1)
    assert list(sampler) == first


# -------------------------------------------------------------- environment


def test_context_absent_without_torchrun() -> None:
    assert distributed.context_from_environment({}) is None


def test_context_reads_torchrun_variables() -> None:
    context = distributed.context_from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})

    assert context == DistributedContext(rank=1, world_size=2, local_rank=1)
    assert context.enabled
    assert not context.is_main


def test_context_rejects_partial_variables() -> None:
    with pytest.raises(ValueError, match="LOCAL_RANK, WORLD_SIZE missing"):
        distributed.context_from_environment({"RANK": "0"})


def test_context_rejects_rank_outside_world() -> None:
    with pytest.raises(ValueError, match="invalid process ranks"):
        distributed.context_from_environment({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_single_process_helpers_are_no_ops() -> None:
    context, created = distributed.init_process_group()
    value = torch.tensor([1.5, 2.0])

    assert context == distributed.SINGLE_PROCESS
    assert not created
    assert distributed.all_reduce_sum(value, context).tolist() == [1.5, 2.0]
    assert distributed.broadcast_json({"nme": 3.0}, context, torch.device("cpu")) == {"nme": 3.0}


def test_trainer_rejects_indivisible_batch(tmp_path: Path) -> None:
    config = TrainConfig.from_dict({"data": str(tmp_path), "batch_size": 4})

    with pytest.raises(ValueError, match="batch_size 4 is not divisible by the 3 training processes"):
        Trainer(config, tmp_path / "run", context=DistributedContext(rank=0, world_size=3))


def test_precision_falls_back_on_cpu(generated_faces: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback; CUDA is available here")
    config = TrainConfig.from_dict(_config_values(generated_faces, "structured") | {"precision": "fp16", "threads": 0})

    trainer = Trainer(config, tmp_path / "run", progress=False)

    assert trainer.autocast_dtype is None
    assert trainer.scaler is None
    assert "applies on CUDA only" in caplog.text


def test_config_rejects_unknown_precision() -> None:
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        TrainConfig(data=".", precision="fp8")


# ---------------------------------------------------------------- BatchNorm


def test_batchnorm_conversion_keeps_state_names() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    names = list(model.state_dict())
    weight = model[1].weight

    distributed.convert_sync_batchnorm(model, torch.device("cpu"))

    assert isinstance(model[1], ProcessGroupBatchNorm2d)
    assert isinstance(model[2][0], ProcessGroupBatchNorm2d)
    assert list(model.state_dict()) == names
    assert model[1].weight is weight


def test_batchnorm_without_group_matches_plain() -> None:
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(4)
    synchronised = distributed.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4)), torch.device("cpu"))[0]
    inputs = torch.randn(3, 4, 5, 5) * 2 + 1

    assert torch.equal(synchronised(inputs), plain(inputs))
    assert torch.equal(synchronised.running_var, plain.running_var)


# --------------------------------------------------------------- processes


@pytest.mark.parametrize("objective", ["structured", "softargmax"])
def test_two_ranks_match_single_process(generated_faces: Path, tmp_path: Path, objective: str) -> None:
    values = _config_values(generated_faces, objective)
    context = torch.multiprocessing.get_context("spawn")

    # The single-process reference also runs in a fresh process, so both use
    # one thread and this test process keeps its own torch settings.
    single = context.Process(target=_train_rank, args=(0, 1, 0, values, str(tmp_path / "single")))
    single.start()
    single.join(timeout=120)
    assert single.exitcode == 0
    torch.multiprocessing.spawn(_train_rank, args=(2, _free_port(), values, str(tmp_path / "ddp")), nprocs=2, join=True)

    reference = load_file(str(tmp_path / "single" / "weights-rank0.safetensors"))
    ranks = [load_file(str(tmp_path / "ddp" / f"weights-rank{rank}.safetensors")) for rank in range(2)]
    for name, tensor in ranks[0].items():
        assert torch.equal(ranks[1][name], tensor), f"ranks differ in {name}"

    steps = 4
    for name, expected in reference.items():
        if not expected.is_floating_point():
            assert torch.equal(ranks[0][name], expected), name
            continue
        difference = ranks[0][name].double() - expected.double()
        largest = difference.abs().max().item()
        assert largest <= 2 * values["lr"] * steps, f"{name} differs from the single-process run by up to {largest:.2e}"
        if name.endswith("head.bias"):
            continue
        relative = (difference.norm() / expected.double().norm().clamp_min(1e-12)).item()
        assert relative <= RELATIVE_TOLERANCE, f"{name} differs from the single-process run by {relative:.2e} of its norm"

    # Rank 0 validated and wrote the run folder; both ranks hold its metrics.
    assert (tmp_path / "ddp" / "best.safetensors").is_file()
    card = json.loads((tmp_path / "ddp" / "best.json").read_text())
    assert card["machine"].endswith("2 processes")


def test_torchrun_command_trains(generated_faces: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
        "-m", "explorer", "train", "--objective", "softargmax", "--data", str(generated_faces), "--out", str(out),
        "--epochs", "1", "--batch-size", "4", "--workers", "0", "--threads", "1",
        "--max-train-faces", "8", "--max-val-faces", "2", "--no-progress",
    ]
    environment = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    completed = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)

    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]
    assert "2 processes" in json.loads((out / "last.json").read_text())["machine"]


def test_torchrun_busy_folder_stops_all_ranks(generated_faces: Path, tmp_path: Path) -> None:
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
        "-m", "explorer", "train", "--objective", "softargmax", "--data", str(generated_faces), "--out", str(out),
        "--epochs", "1", "--batch-size", "4", "--workers", "0", "--threads", "1", "--no-progress",
    ]
    environment = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}

    # Hold the run folder's lock as another trainer would; without the
    # broadcast of rank 0's failure, rank 1 would wait until the timeout.
    with (out / ".lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        completed = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)

    assert completed.returncode != 0
    assert completed.stderr.count("another process is training in") >= 2
    assert not (out / "metrics.jsonl").exists()
