"""Crash safety of `explorer train`: SIGKILL at any moment, then the same command resumes exactly.

Each test starts the real command line in a subprocess on generated faces.
Some runs go through a small wrapper that slows the fsync of one kind of
temporary file, so the test can see the file and kill the process while the
write is in progress. After every kill each checkpoint in the run folder must
load, and after the final run the weights must equal those of a run that was
never interrupted (same seed, bit for bit).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from explorer.core.checkpoints import CheckpointError, load_model, load_state, read_card
from explorer.core.training import RunFolderBusyError, TrainConfig, train
from tests.conftest import write_generated_faces

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 4
STEPS_PER_EPOCH = 4  # 16 training faces, batch size 4
STARTED_LINE = b"explorer.core.training: training "

# The first positional argument selects a patch, the rest is the train command line.
WRAPPER = r"""
import os, sys, time
import torch
import explorer.core.training as training
from explorer.cli import main

patch, arguments = sys.argv[1], sys.argv[2:]

if patch.startswith("slow-fsync:"):
    # Sleep before flushing a temporary file whose name contains the pattern.
    pattern = patch.split(":", 1)[1]
    real_fsync = os.fsync

    def slow_fsync(fd):
        try:
            name = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            name = ""
        if pattern in name and name.endswith(".tmp"):
            time.sleep(0.4)
        real_fsync(fd)

    os.fsync = slow_fsync

elif patch.startswith(("nan-loss:", "nan-gradient:")):
    # Break the training loss at one call: 1-based, counted over the whole run.
    mode, call = patch.split(":")
    real_build_loss = training.build_loss

    class BrokenLoss(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.calls = 0

        def forward(self, logits, points, labels):
            self.calls += 1
            loss = self.inner(logits, points, labels)
            if self.calls != int(call):
                return loss
            if mode == "nan-loss":
                return loss * float("nan")
            # A finite value whose gradient is NaN: d sqrt(u)/du is infinite at 0.
            return loss + torch.sqrt(logits.sum() * 0.0)

    training.build_loss = lambda *args, **kwargs: BrokenLoss(real_build_loss(*args, **kwargs))

sys.exit(main(arguments))
"""

needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the fsync wrapper reads /proc/self/fd")


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_generated_faces(tmp_path_factory.mktemp("crash") / "faces", 20)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    model = {"input_size": 64, "stride": 4, "width": 16, "blocks": 1}
    path.write_text(json.dumps({"model": model, "warmup_epochs": 0.25}))
    return path


def train_arguments(faces: Path, config_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--config", str(config_file), "--data", str(faces), "--out", str(out),
        "--epochs", str(EPOCHS), "--batch-size", "4", "--workers", "0", "--threads", "1",
        "--max-train-faces", "16", "--seed", "3", "--no-progress", *extra,
    ]


def start(arguments: list[str], log: Path, patch: str | None = None) -> subprocess.Popen:
    if patch is None:
        command = [sys.executable, "-m", "explorer", *arguments]
    else:
        command = [sys.executable, "-c", WRAPPER, patch, *arguments]
    environment = os.environ | {"PYTHONPATH": str(REPO)}
    with log.open("wb") as stream:
        return subprocess.Popen(command, cwd=REPO, env=environment, stdout=stream, stderr=subprocess.STDOUT)


def run(arguments: list[str], log: Path, patch: str | None = None, timeout: float = 120) -> int:
    process = start(arguments, log, patch)
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_until(process: subprocess.Popen, condition, timeout: float = 60) -> bool:
    """Poll ``condition`` every 2 ms until it is true (return True) or the process exits (return False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return bool(condition())
        time.sleep(0.002)
    process.kill()
    process.wait()
    raise AssertionError(f"timed out after {timeout} s waiting for the training process")


def kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def temporary_files(folder: Path, target: str = "") -> list[Path]:
    return sorted(folder.glob(f".{target}*.tmp"))


def metrics_epochs(folder: Path) -> list[int]:
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines()]


def complete_metrics_lines(folder: Path) -> int:
    path = folder / "metrics.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def check_run_folder(folder: Path) -> dict[str, int]:
    """Load every checkpoint in ``folder`` and return the epoch each one stores (0 when absent)."""
    epochs = {"best": 0, "last": 0, "state": 0}
    for name in ("best", "last"):
        path = folder / f"{name}.safetensors"
        if path.exists():
            model, card = load_model(path)
            assert all(torch.isfinite(tensor).all() for tensor in model.state_dict().values() if tensor.is_floating_point())
            epochs[name] = int(card["epoch"])
            # The JSON copy of the card is written after the weights; it may
            # be one epoch older, but it is never a partial file.
            json.loads((folder / f"{name}.json").read_text())
    if (folder / "state.safetensors").exists():
        epochs["state"] = int(load_state(folder / "state.safetensors")["epoch"])

    # Resume starts from the state, so the weights files may be one epoch
    # ahead of it (a repeated epoch rewrites them), and last is never behind it.
    assert epochs["state"] <= epochs["last"] <= epochs["state"] + 1, epochs
    assert epochs["best"] <= epochs["state"] + 1, epochs
    return epochs


def assert_same_run(folder: Path, reference: Path) -> None:
    """Compare the weights, state and metrics of a finished run with the uninterrupted one."""
    assert temporary_files(folder) == []
    assert metrics_epochs(folder) == list(range(1, EPOCHS + 1))

    state, expected_state = load_state(folder / "state.safetensors"), load_state(reference / "state.safetensors")
    assert state["epoch"] == EPOCHS
    for key in ("model", "ema"):
        for name, tensor in expected_state[key].items():
            assert torch.equal(state[key][name], tensor), f"state {key} {name}"
    for name in ("best", "last"):
        model, card = load_model(folder / f"{name}.safetensors")
        expected_model, expected_card = load_model(reference / f"{name}.safetensors")
        assert card["epoch"] == expected_card["epoch"], name
        for tensor_name, tensor in expected_model.state_dict().items():
            assert torch.equal(model.state_dict()[tensor_name], tensor), f"{name} {tensor_name}"

    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    expected_rows = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    for row, expected in zip(rows, expected_rows, strict=True):
        del row["seconds"]
        del expected["seconds"]
        assert row == expected


class Launched:
    """A training process that runs to its end without a test watching it."""

    def __init__(self, process: subprocess.Popen, folder: Path, log: Path) -> None:
        self.process, self.folder, self.log = process, folder, log

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        """Wait for the process and return its exit code and output."""
        return self.process.wait(timeout=timeout), self.log.read_text()


@pytest.fixture(scope="module")
def launched(faces: Path, config_file: Path, tmp_path_factory: pytest.TempPathFactory):
    """Start the runs that need no kill at once, so their start-up times overlap."""
    root = tmp_path_factory.mktemp("launched")
    plans = {
        "reference": ([], None),
        "absurd-lr": (["--lr", "1e6"], None),
        "nan-loss": ([], f"nan-loss:{STEPS_PER_EPOCH + 2}"),
        "nan-gradient": ([], f"nan-gradient:{2 * STEPS_PER_EPOCH}"),
    }
    runs = {}
    for name, (extra, patch) in plans.items():
        folder, log = root / name, root / f"{name}.log"
        runs[name] = Launched(start(train_arguments(faces, config_file, folder, *extra), log, patch), folder, log)
    yield runs
    for launched_run in runs.values():
        kill(launched_run.process)


@pytest.fixture(scope="module")
def reference_run(launched) -> Path:
    """A run of the same command that nothing interrupts."""
    code, output = launched["reference"].finish()
    assert code == 0, output[-3000:]
    return launched["reference"].folder


# ------------------------------------------------------------------ kills


@needs_proc
def test_kills_resume_to_same_weights(faces, config_file, reference_run, tmp_path):
    folder = tmp_path / "run"
    arguments = train_arguments(faces, config_file, folder)

    # Kill 1: while the first state file is being written (epoch 1).
    process = start(arguments, tmp_path / "kill-1.log", patch="slow-fsync:.state.safetensors.")
    assert wait_until(process, lambda: temporary_files(folder, "state.safetensors"))
    kill(process)
    stray = temporary_files(folder, "state.safetensors")
    assert stray, "the kill did not land during the state write"
    epochs = check_run_folder(folder)
    assert epochs["state"] == 0
    assert epochs["last"] == 1

    # Kills 2 and 3: at seeded random moments after training started.
    delays = random.Random(20_251_204).sample([0.02, 0.1, 0.2, 0.3, 0.45, 0.6], 2)
    for number, delay in enumerate(delays, start=2):
        log = tmp_path / f"kill-{number}.log"
        process = start(arguments, log)
        assert wait_until(process, lambda: STARTED_LINE in log.read_bytes()), log.read_text()[-3000:]
        time.sleep(delay)
        kill(process)

        previous = epochs
        epochs = check_run_folder(folder)
        assert epochs["state"] >= previous["state"], (previous, epochs)
        # The process deletes temporary files of killed writes before it trains.
        assert not any(path.exists() for path in stray)

    # The same command again finishes the run.
    log = tmp_path / "final.log"
    assert run(arguments, log) == 0, log.read_text()[-3000:]
    check_run_folder(folder)
    assert_same_run(folder, reference_run)


@needs_proc
def test_kill_during_final_last_write(faces, config_file, reference_run, tmp_path):
    folder = tmp_path / "run"
    arguments = train_arguments(faces, config_file, folder)

    # Kill while last.safetensors of the final epoch is being written: three
    # epochs are logged and a temporary file of last.safetensors exists.
    process = start(arguments, tmp_path / "kill.log", patch="slow-fsync:.last.safetensors.")
    landed = wait_until(
        process,
        lambda: complete_metrics_lines(folder) == EPOCHS - 1 and bool(temporary_files(folder, "last.safetensors")),
    )
    kill(process)
    assert landed, "the run ended before the final write of last.safetensors"

    # The state is written after last.safetensors, so it still stores epoch 3
    # and the next run repeats epoch 4 instead of keeping a stale last file.
    epochs = check_run_folder(folder)
    assert epochs["state"] == EPOCHS - 1
    assert epochs["last"] == EPOCHS - 1
    assert temporary_files(folder, "last.safetensors")

    log = tmp_path / "final.log"
    assert run(arguments, log) == 0, log.read_text()[-3000:]
    assert b"a temporary file left by an interrupted write" in log.read_bytes()
    assert_same_run(folder, reference_run)


def test_start_removes_only_temporary_files(faces, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    stale = [folder / ".state.safetensors.abc123.tmp", folder / ".last.json.x9.tmp"]
    other_files = [folder / "notes.tmp", folder / ".hidden", folder / "plan.txt"]
    for path in stale + other_files:
        path.write_bytes(b"partial")

    config = TrainConfig.from_dict({
        "data": str(faces), "model": {"input_size": 64, "stride": 4, "width": 16, "blocks": 1},
        "epochs": 1, "batch_size": 4, "num_workers": 0, "max_train_faces": 4, "max_val_faces": 2,
    })
    train(config, folder, progress=False)

    assert not any(path.exists() for path in stale)
    assert all(path.read_bytes() == b"partial" for path in other_files)
    load_state(folder / "state.safetensors")


@pytest.mark.skipif(sys.platform == "win32", reason="the run folder lock uses POSIX flock")
def test_second_trainer_rejected(faces, tmp_path):
    import fcntl

    folder = tmp_path / "run"
    folder.mkdir()
    config = TrainConfig.from_dict({
        "data": str(faces), "model": {"input_size": 64, "stride": 4, "width": 16, "blocks": 1},
        "epochs": 1, "batch_size": 4, "num_workers": 0, "max_train_faces": 4, "max_val_faces": 2,
    })
    in_progress = folder / ".state.safetensors.busy.tmp"
    in_progress.write_bytes(b"being written")

    # Hold the lock as a running trainer would.
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunFolderBusyError, match="another process is training in"):
            train(config, folder, progress=False)
        assert in_progress.exists(), "a rejected trainer must not delete another writer's files"

    # Once the lock is free the run starts.
    train(config, folder, progress=False)
    assert metrics_epochs(folder) == [1]


# ------------------------------------------------------------------ non-finite values


def test_absurd_learning_rate_stops(launched):
    code, output = launched["absurd-lr"].finish()

    assert code == 3, output[-3000:]
    # The weights or the loss turn non-finite within the first steps.
    assert re.search(r"(loss became nan|NaN or infinite after the update) (at|of) epoch 1, step \d+", output), output[-3000:]
    assert "before the first epoch finished" in output
    assert "Traceback" not in output
    assert not list(launched["absurd-lr"].folder.glob("*.safetensors"))


@pytest.mark.parametrize(
    ("run_name", "message"),
    [
        ("nan-loss", "loss became nan at epoch 2, step 2"),
        ("nan-gradient", f"became NaN or infinite after the update of epoch 2, step {STEPS_PER_EPOCH}"),
    ],
    ids=["nan-loss", "nan-gradient"],
)
def test_non_finite_keeps_last_good_checkpoint(launched, run_name, message):
    folder = launched[run_name].folder
    code, output = launched[run_name].finish()

    assert code == 3, output[-3000:]
    assert message in output, output[-3000:]
    assert "the checkpoints of epoch 1" in output
    assert "Traceback" not in output

    # Epoch 1's files are intact and finite, and nothing of epoch 2 was written.
    assert check_run_folder(folder) == {"best": 1, "last": 1, "state": 1}
    assert metrics_epochs(folder) == [1]
    assert temporary_files(folder) == []


# ------------------------------------------------------------------ damaged files


def test_cut_checkpoint_rejected(reference_run, tmp_path):
    # A copy cut short, as an interrupted transfer leaves it.
    data = (reference_run / "last.safetensors").read_bytes()
    for size in (0, 7, 8, 9, 64, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut-{size}.safetensors"
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match=path.name):
            load_model(path)


def test_nested_header_rejected(tmp_path):
    header = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for name, loader in (("model", load_model), ("state", load_state), ("card", read_card)):
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(len(header).to_bytes(8, "little") + header)
        with pytest.raises(CheckpointError, match="not a valid safetensors file"):
            loader(path)
