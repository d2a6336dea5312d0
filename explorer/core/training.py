"""Training loop for heatmap networks, with exact resume after an interruption.

One run lives in one output folder:

=====================  ======================================================
``state.safetensors``  everything needed to resume: model, EMA, optimizer,
                       scheduler, epoch, best metric, random generator state
``last.safetensors``   EMA weights after the latest epoch, with a JSON card
``best.safetensors``   EMA weights with the lowest validation NME so far
``metrics.jsonl``      one JSON object per completed epoch
``config.json``        the run's configuration
=====================  ======================================================

Each epoch ends by writing, in this order, ``best`` (when it improved),
``last``, the state, then the metrics line. All writes are atomic, so a
process killed at any moment resumes from the last complete epoch, and
re-running that epoch reproduces the same numbers: the data order and
augmentation depend only on (seed, epoch, sample index), never on how often
the process was restarted. The state goes after the weights because resume
starts from it. A kill before the state write repeats the epoch and rewrites
``best`` and ``last`` with the same weights, while a kill after it finds
every file up to date.

While it trains, a process holds an exclusive lock on ``.lock`` in the run
folder (POSIX ``flock``), so a second trainer on the same folder fails at
once. On start it deletes the temporary files that killed writes left behind.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import errno
import json
import logging
import math
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # Windows has no flock.
    fcntl = None
from torch.utils.data import DataLoader
from tqdm import tqdm

from explorer.core.checkpoints import atomic_write_bytes, load_state, remove_temporary_files, save_model, save_state
from explorer.core import distributed
from explorer.core.data import SPLIT_RULE, LandmarkDataset, scan_folder, split_records
from explorer.core.evaluation import default_decoder, evaluate_model
from explorer.core.geometry import crop_to_heatmap
from explorer.core.losses import build_loss
from explorer.core.models import build_model
from explorer.core.smoothing import SmoothingParams, image_aware_labels
from explorer.core.transforms import Augmentation, AugmentationConfig

logger = logging.getLogger(__name__)

OBJECTIVES = ("structured", "softargmax", "star")
LABELS = ("image-aware", "isotropic")

# Mixed precision of the forward pass on CUDA. Losses and labels always run in
# float32. On the CPU, training always runs in float32.
PRECISIONS = ("fp32", "bf16", "fp16")

LICENCE_NOTE = (
    "Trained on 300-W (iBUG, Imperial College London) images and annotations, which are licensed "
    "for non-commercial research use only; these weights inherit that restriction."
)


# Settings that change how fast a run goes, not what it computes, so a run
# may resume with other values. NOTE: another thread count can change the
# order of float reductions, so a resumed run may then differ from an
# uninterrupted one in the last bits.
SPEED_ONLY_FIELDS = ("num_workers", "threads")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or weights; the last good checkpoint is kept."""


class RunFolderBusyError(ValueError):
    """Another process holds the lock of the run folder."""


@dataclass
class TrainConfig:
    """Everything that determines a training run; two equal configs give equal runs.

    The learning rate applies per step of ``batch_size`` images. It ramps up
    linearly from 0 over ``warmup_epochs``, then a cosine schedule decays it
    to ``min_lr_ratio × lr`` at the last epoch.
    """

    data: str
    objective: str = "structured"
    labels: str = "image-aware"
    model: dict[str, Any] = field(default_factory=lambda: {"input_size": 128, "stride": 4, "width": 32})
    epochs: int = 40
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    ema_decay: float = 0.998
    seed: int = 0
    num_workers: int = 2
    threads: int = 0
    loss: dict[str, Any] = field(default_factory=dict)
    smoothing: dict[str, Any] = field(default_factory=dict)
    augmentation: dict[str, Any] = field(default_factory=dict)
    max_train_faces: int = 0
    max_val_faces: int = 0
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.labels not in LABELS:
            raise ValueError(f"labels must be one of {', '.join(LABELS)}, got {self.labels!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training config keys: {', '.join(unknown)}; valid keys are {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def differences(self, other: "TrainConfig") -> list[str]:
        """List the values that differ from ``other``, ignoring :data:`SPEED_ONLY_FIELDS`."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [
            f"{key}: run has {json.dumps(theirs[key])}, this command {json.dumps(mine[key])}"
            for key in mine if key not in SPEED_ONLY_FIELDS and mine[key] != theirs[key]
        ]


class ModelEma:
    """Exponential moving average of a model's weights and buffers.

    The averaged copy is what gets evaluated and shipped: it is smoother than
    the raw weights late in training. The decay ramps up as
    ``min(decay, (1 + step) / (10 + step))`` so early, random weights are
    forgotten quickly.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        source = model.state_dict()
        for name, average in self.module.state_dict().items():
            if average.dtype.is_floating_point:
                average.mul_(decay).add_(source[name].detach(), alpha=1.0 - decay)
            else:
                average.copy_(source[name])


def _lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Return the learning-rate multiplier: linear warm-up, then cosine decay."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _seed_worker(worker_id: int) -> None:
    # Augmentation draws from generators seeded per sample, so workers only
    # need distinct global seeds for any library that uses them.
    torch.manual_seed(torch.initial_seed() % 2**31 + worker_id)


class Trainer:
    """Train one model in one output folder, resuming where a previous run stopped.

    Args:
        config: the run's configuration.
        out_dir: the run folder (created if missing).
        command: the command line recorded in checkpoint cards.
        progress: show tqdm progress bars.
        context: this process's rank in a DistributedDataParallel run; None
            takes the process group already joined, if any (see
            :mod:`explorer.core.distributed`). Rank 0 validates and writes
            the run folder while the other ranks wait.
    """

    def __init__(self, config: TrainConfig, out_dir: str | Path, command: str = "", progress: bool = True,
                 context: distributed.DistributedContext | None = None) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.command = command or " ".join(sys.argv)
        self.context = context or distributed.current_context()
        self.progress = progress and self.context.is_main

        if config.threads > 0:
            torch.set_num_threads(config.threads)
        self.device = distributed.device_for(self.context)
        if config.batch_size % self.context.world_size != 0:
            raise ValueError(
                f"batch_size {config.batch_size} is not divisible by the {self.context.world_size} training processes; "
                "each process takes batch_size / processes faces per step, so pick a multiple of the process count"
            )
        self.rank_batch_size = config.batch_size // self.context.world_size

        # Data: the deterministic train/validation split of one 300-W folder.
        records = scan_folder(config.data)
        self.train_records = split_records(records, "train")
        self.val_records = split_records(records, "val")
        if config.max_train_faces:
            self.train_records = self.train_records[: config.max_train_faces]
        if config.max_val_faces:
            self.val_records = self.val_records[: config.max_val_faces]
        if not self.train_records or not self.val_records:
            raise ValueError(
                f"{config.data} gives {len(self.train_records)} training and {len(self.val_records)} validation "
                "faces; both must be non-empty. Point --data at a folder with at least 2 annotated faces."
            )
        num_landmarks = int(self.train_records[0].points.shape[0])

        model_config = dict(config.model)
        model_config["num_landmarks"] = num_landmarks
        self.model = build_model(model_config).to(self.device)
        if self.context.enabled:
            distributed.convert_sync_batchnorm(self.model, self.device)
        self.stride = int(self.model.config["stride"])
        input_size = int(self.model.config["input_size"])

        augmentation = Augmentation(AugmentationConfig(**config.augmentation))
        self.train_set = LandmarkDataset(self.train_records, input_size=input_size, augmentation=augmentation, seed=config.seed)
        self.val_set = LandmarkDataset(self.val_records, input_size=input_size, augmentation=None, seed=config.seed)

        # Decode every image once in this process; forked DataLoader workers
        # then share the cache instead of each decoding its own copy.
        self.train_set.preload()
        self.val_set.preload()

        # Loss and labels.
        self.loss_fn = build_loss(config.objective, **config.loss).to(self.device)
        self.smoothing = SmoothingParams(**config.smoothing)
        self.decoder = default_decoder(config.objective)
        self.temperature = float(config.loss.get("temperature", 1.0))

        # Optimiser and a per-step schedule.
        self.steps_per_epoch = math.ceil(len(self.train_set) / config.batch_size)
        total_steps = self.steps_per_epoch * config.epochs
        warmup_steps = max(1, round(config.warmup_epochs * self.steps_per_epoch))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: _lr_factor(step, warmup_steps, total_steps, config.min_lr_ratio)
        )
        self.ema = ModelEma(self.model, config.ema_decay)

        # The forward pass goes through the DDP wrapper, which averages the
        # gradients over ranks; self.model stays the plain network that EMA,
        # checkpoints and resume see.
        self.train_model: torch.nn.Module = self.model
        if self.context.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
        if self.device.type != "cuda" and self.autocast_dtype is not None:
            logger.warning("precision %s applies on CUDA only; training on the CPU in float32", config.precision)
            self.autocast_dtype = None
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None

        self.epoch = 0
        self.best_nme = math.inf
        self.best_epoch = 0
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ paths

    @property
    def state_path(self) -> Path:
        return self.out_dir / "state.safetensors"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    # ----------------------------------------------------------------- resume

    def resume(self) -> bool:
        """Load the last complete epoch from the run folder; return whether there was one."""
        if not self.state_path.exists():
            return False
        state = load_state(self.state_path)
        # Options added after a run started take their defaults.
        changes = self.config.differences(TrainConfig.from_dict(state["config"]))
        if changes:
            raise ValueError(
                f"{self.out_dir} contains a run with a different configuration ({'; '.join(changes)}); "
                "rerun with the run's options to resume it, or pass a new --out folder to start another run"
            )

        self.model.load_state_dict(state["model"])
        self.ema.module.load_state_dict(state["ema"])
        self.ema.updates = int(state["ema_updates"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])
        self.best_nme = float(state["best_nme"])
        self.best_epoch = int(state["best_epoch"])
        self.history = list(state["history"])

        # Drop metrics lines of an epoch that finished after the state was
        # written, so the log matches the state we resume from.
        if self.context.is_main:
            self._write_metrics_log()
        logger.info("resumed %s after epoch %d (best NME %.3f at epoch %d)", self.out_dir, self.epoch, self.best_nme, self.best_epoch)
        return True

    def _write_metrics_log(self) -> None:
        lines = "".join(json.dumps(row) + "\n" for row in self.history)
        atomic_write_bytes(self.metrics_path, lines.encode("utf-8"))

    def _state(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict(),
            "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "best_nme": self.best_nme,
            "best_epoch": self.best_epoch,
            "history": self.history,
        }

    # --------------------------------------------------------------- training

    def _shuffle_seed(self, epoch: int) -> int:
        # The order depends on (seed, epoch) only, so a resumed run gets the
        # same batches as an uninterrupted one.
        return self.config.seed * 100_003 + epoch

    def _loader(self, dataset: LandmarkDataset, shuffle_epoch: int | None) -> DataLoader:
        if shuffle_epoch is not None and self.context.enabled:
            # Each rank loads its share of the single-process batches.
            sampler = distributed.EpochShardSampler(
                dataset, self.context.world_size, self.context.rank, seed_for_epoch=self._shuffle_seed
            )
            sampler.set_epoch(shuffle_epoch)
            return DataLoader(
                dataset,
                batch_size=self.rank_batch_size,
                sampler=sampler,
                num_workers=self.config.num_workers,
                worker_init_fn=_seed_worker,
                drop_last=False,
                persistent_workers=False,
            )
        generator = None
        if shuffle_epoch is not None:
            generator = torch.Generator().manual_seed(self._shuffle_seed(shuffle_epoch))
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=shuffle_epoch is not None,
            generator=generator,
            num_workers=self.config.num_workers,
            worker_init_fn=_seed_worker,
            drop_last=False,
            persistent_workers=False,
        )

    def _labels(self, images: torch.Tensor, heatmap_points: torch.Tensor, heatmap_size: tuple[int, int]) -> torch.Tensor | None:
        if self.config.objective != "structured" or self.config.labels == "isotropic":
            return None
        return image_aware_labels(images, heatmap_points, heatmap_size, params=self.smoothing)

    def _train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.train_set.set_epoch(epoch)
        loader = self._loader(self.train_set, shuffle_epoch=epoch)
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{self.config.epochs}", leave=False, disable=not self.progress, unit="batch")
        for step, batch in enumerate(bar, start=1):
            images = batch["image"].to(self.device, non_blocking=True)
            heatmap_points = crop_to_heatmap(batch["points"].to(self.device), self.stride)

            with self._autocast():
                logits = self.train_model(images)
            logits = logits.float()
            labels = self._labels(images, heatmap_points, tuple(logits.shape[-2:]))
            loss = self.loss_fn(logits, heatmap_points, labels)
            # Every rank checks the mean loss over ranks, so all of them stop together.
            step_loss = self._mean_over_ranks(loss.detach())
            if not torch.isfinite(step_loss):
                raise NonFiniteLossError(
                    f"the {self.config.objective} loss became {step_loss.item()} at epoch {epoch}, step {step}; "
                    f"{self._kept_checkpoints()}. Lower the learning rate (--lr) or check the data."
                )

            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
            self.scheduler.step()

            # A finite loss can still give non-finite gradients. Stop before
            # they reach the EMA weights, which the checkpoints store.
            non_finite = self._non_finite_tensor()
            if non_finite is not None:
                raise NonFiniteLossError(
                    f"the model tensor {non_finite} became NaN or infinite after the update of epoch {epoch}, step {step}; "
                    f"{self._kept_checkpoints()}. Lower the learning rate (--lr) or check the data."
                )
            self.ema.update(self.model)

            total += loss.item() * images.shape[0]
            count += images.shape[0]
            bar.set_postfix(loss=f"{step_loss.item():.4f}" if self.context.enabled else f"{total / count:.4f}")
        if self.context.enabled:
            # The epoch's loss is the mean over every face that every rank saw.
            sums = distributed.all_reduce_sum(torch.tensor([total, float(count)], dtype=torch.float64, device=self.device), self.context)
            total, count = float(sums[0]), int(sums[1])
        return total / max(count, 1)

    def _kept_checkpoints(self) -> str:
        if self.epoch == 0:
            return f"training stopped before the first epoch finished, so {self.out_dir} has no checkpoint"
        return f"training stopped and the checkpoints of epoch {self.epoch} in {self.out_dir} are kept"

    def _non_finite_tensor(self) -> str | None:
        """Return the name of the first model parameter or buffer that is not finite, or None."""
        tensors = [(name, tensor) for name, tensor in self.model.state_dict().items() if tensor.is_floating_point()]
        # One reduction for the common case, so the check costs one device sync per step.
        if torch.stack([torch.isfinite(tensor).all() for _, tensor in tensors]).all():
            return None
        return next(name for name, tensor in tensors if not torch.isfinite(tensor).all())

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.autocast_dtype)

    def _mean_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        if not self.context.enabled:
            return value
        return distributed.all_reduce_sum(value.clone(), self.context) / self.context.world_size

    def validate(self) -> dict[str, float | int | str]:
        """Evaluate the EMA weights on the validation split with the objective's decoder."""
        results = evaluate_model(
            self.ema.module, self._loader(self.val_set, shuffle_epoch=None),
            decoders=(self.decoder,), temperature=self.temperature, device=self.device,
        )
        return results[self.decoder].summary()

    def _loss_settings(self) -> dict[str, Any]:
        """Return the loss's effective settings (defaults included), for the card."""
        return {
            name: value for name, value in vars(self.loss_fn).items()
            if not name.startswith("_") and name != "training" and isinstance(value, (bool, int, float, str, type(None)))
        }

    def _card(self, metrics: dict[str, Any]) -> dict[str, Any]:
        root = Path(self.config.data)
        folders = sorted({str(Path(record.image_path).parent.relative_to(root)) for record in self.train_records + self.val_records})
        return {
            "objective": self.config.objective,
            "labels": self.config.labels if self.config.objective == "structured" else None,
            "loss": self._loss_settings(),
            "smoothing": dataclasses.asdict(self.smoothing) if self.config.labels == "image-aware" else None,
            "decoder": self.decoder,
            "temperature": self.temperature,
            "data": {
                "root": root.name,
                "folders": folders,
                "split_rule": SPLIT_RULE,
                "train_faces": len(self.train_records),
                "val_faces": len(self.val_records),
            },
            "epochs": self.config.epochs,
            "epoch": metrics["epoch"],
            "validation": {key: metrics[key] for key in ("nme", "fr", "auc", "count", "decoder", "threshold")},
            "training": self.config.to_dict() | {"data": root.name},
            "command": self.command,
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {self.device.type}"
                       + (f", {self.context.world_size} processes" if self.context.enabled else ""),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "licence": LICENCE_NOTE,
        }

    def fit(self, stop_after_epochs: int | None = None, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Train until ``config.epochs`` (or ``stop_after_epochs`` more epochs) and return the history.

        Raises:
            RunFolderBusyError: another process is training in ``out_dir``.
            NonFiniteLossError: the loss or the weights became NaN or infinite.
        """
        with self._lock_run_folder():
            return self._fit(stop_after_epochs, on_epoch)

    @contextlib.contextmanager
    def _lock_run_folder(self) -> Iterator[None]:
        """Hold the run folder's lock (rank 0 only) and delete temporary files of killed writes.

        Under DDP, rank 0 sends the outcome to every rank, so all ranks raise
        :class:`RunFolderBusyError` together instead of the others waiting in
        their first collective until it times out.
        """
        with contextlib.ExitStack() as stack:
            failure = None
            if self.context.is_main:
                try:
                    stack.enter_context(self._hold_lock())
                except RunFolderBusyError as error:
                    failure = str(error)
            failure = distributed.broadcast_json(failure, self.context, self.device)
            if failure is not None:
                raise RunFolderBusyError(failure)
            yield

    @contextlib.contextmanager
    def _hold_lock(self) -> Iterator[None]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with (self.out_dir / ".lock").open("a") as lock:
            if fcntl is not None:
                try:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as error:
                    if error.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    raise RunFolderBusyError(
                        f"another process is training in {self.out_dir}; wait for it to finish, "
                        "or pass another --out folder"
                    ) from None
            # NOTE: without fcntl (Windows) nothing stops a second trainer,
            # which would lose its temporary files here.
            for path in remove_temporary_files(self.out_dir):
                logger.warning("deleted %s, a temporary file left by an interrupted write", path)
            yield

    def _fit(self, stop_after_epochs: int | None, on_epoch: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
        main = self.context.is_main
        if main:
            config_text = json.dumps(self.config.to_dict(), indent=2) + "\n"
            atomic_write_bytes(self.out_dir / "config.json", config_text.encode("utf-8"))
        self.resume()

        if main:
            labels = f" with {self.config.labels} labels" if self.config.objective == "structured" else ""
            processes = f", {self.context.world_size} processes" if self.context.enabled else ""
            logger.info(
                "training %s%s on %d faces, validating on %d, %d epochs, device %s%s",
                self.config.objective, labels, len(self.train_set), len(self.val_set), self.config.epochs, self.device,
                processes,
            )
        last_epoch = self.config.epochs if stop_after_epochs is None else min(self.config.epochs, self.epoch + stop_after_epochs)
        epochs = tqdm(range(self.epoch + 1, last_epoch + 1), desc="training", disable=not self.progress, unit="epoch",
                      initial=self.epoch, total=self.config.epochs)
        for epoch in epochs:
            started = time.perf_counter()
            learning_rate = self.optimizer.param_groups[0]["lr"]
            train_loss = self._train_epoch(epoch)
            row = None
            if main:
                metrics = self.validate()
                row = {
                    "epoch": epoch,
                    "train_loss": round(train_loss, 6),
                    **metrics,
                    "lr": learning_rate,
                    "seconds": round(time.perf_counter() - started, 2),
                }
            # Under DDP the other ranks wait here until rank 0 has validated,
            # then take its metrics so that every rank has the same history.
            row = distributed.broadcast_json(row, self.context, self.device)

            # Write best, last, the state, then the log line (see the module docstring).
            self.epoch = epoch
            self.history.append(row)
            if row["nme"] < self.best_nme:
                self.best_nme, self.best_epoch = float(row["nme"]), epoch
                if main:
                    save_model(self.out_dir / "best.safetensors", self.ema.module, self._card(row))
            if main:
                save_model(self.out_dir / "last.safetensors", self.ema.module, self._card(row))
                save_state(self.state_path, self._state())
                with self.metrics_path.open("a") as stream:
                    stream.write(json.dumps(row) + "\n")
                logger.info(
                    "epoch %d/%d: train loss %.4f, val NME %.3f%% (%s), lr %.2e, %.1f s",
                    epoch, self.config.epochs, train_loss, row["nme"], self.decoder, learning_rate, row["seconds"],
                )
            epochs.set_postfix(nme=f"{row['nme']:.3f}")
            if on_epoch is not None:
                on_epoch(row)
        return self.history


def set_seed(seed: int) -> None:
    """Seed torch and numpy's global generators (model initialisation uses torch's)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def train(config: TrainConfig, out_dir: str | Path, command: str = "", progress: bool = True,
          stop_after_epochs: int | None = None) -> Trainer:
    """Train (or resume) a run and return the trainer; ``trainer.history`` contains the metrics.

    Under torchrun (``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set) every
    process calls this; it joins the process group and leaves it when done.
    """
    context, created = distributed.init_process_group()
    try:
        set_seed(config.seed)
        trainer = Trainer(config, out_dir, command=command, progress=progress, context=context)
        trainer.fit(stop_after_epochs=stop_after_epochs)
    finally:
        if created:
            distributed.destroy_process_group(context)
    return trainer
