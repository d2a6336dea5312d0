"""Process-group helpers for multi-process training with DistributedDataParallel.

``torchrun --nproc_per_node=N -m explorer train ...`` starts N processes and
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` in each. :func:`init_process_group` reads them and joins the
group (NCCL on CUDA, gloo on the CPU). Without those variables every helper
here is a no-op, so single-process training runs exactly as before.

N processes train the same model as one process with the same
``batch_size``, up to floating-point rounding:

* each rank takes ``batch_size / world_size`` faces of every global batch,
  and the global batches are the single-process batches, in the same order
  (:class:`EpochShardSampler`);
* each rank's loss is a mean over its faces and DistributedDataParallel
  averages the gradients over ranks, which gives the mean gradient of the
  whole batch because all ranks hold the same number of faces;
* BatchNorm layers are replaced by synchronised ones
  (:func:`convert_sync_batchnorm`), so the batch statistics are those of the
  whole global batch, as in one process.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.distributed import _functional_collectives as functional_collectives
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

logger = logging.getLogger(__name__)

__all__ = [
    "DistributedContext",
    "SINGLE_PROCESS",
    "EpochShardSampler",
    "ProcessGroupBatchNorm2d",
    "all_reduce_sum",
    "barrier",
    "broadcast_json",
    "context_from_environment",
    "convert_sync_batchnorm",
    "current_context",
    "destroy_process_group",
    "device_for",
    "epoch_order",
    "init_process_group",
]

# Variables that torchrun sets in every process it starts.
ENVIRONMENT_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")

# How long a collective waits for the other ranks before it raises. Validation
# on rank 0 runs while the other ranks wait at a barrier, so this must exceed
# the longest validation pass; 30 minutes is torch's own default for gloo.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the process group.

    Attributes:
        rank: global rank, 0 for the process that validates and writes files.
        world_size: number of processes; 1 means single-process training.
        local_rank: rank on this machine, which selects the CUDA device.
        backend: ``"gloo"`` or ``"nccl"``, or None without a process group.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process validates, writes checkpoints and logs."""
        return self.rank == 0


SINGLE_PROCESS = DistributedContext()


def _read_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; start the processes with torchrun") from None


def context_from_environment(environ: dict[str, str] | None = None) -> DistributedContext | None:
    """Return the rank and world size from torchrun's variables, or None when they are absent.

    Raises:
        ValueError: when only some of the variables are set, or their values
            are not consistent.
    """
    environ = dict(os.environ if environ is None else environ)
    present = [key for key in ENVIRONMENT_KEYS if key in environ]
    if not present:
        return None
    if len(present) != len(ENVIRONMENT_KEYS):
        missing = sorted(set(ENVIRONMENT_KEYS) - set(present))
        raise ValueError(
            f"{', '.join(present)} set but {', '.join(missing)} missing; start multi-process training with "
            "torchrun, which sets all of them"
        )
    rank = _read_int("RANK", environ["RANK"])
    world_size = _read_int("WORLD_SIZE", environ["WORLD_SIZE"])
    local_rank = _read_int("LOCAL_RANK", environ["LOCAL_RANK"])
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(f"invalid process ranks: RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank}")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def current_context() -> DistributedContext:
    """Return the context of the process group this process has joined, or :data:`SINGLE_PROCESS`."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE_PROCESS
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, dist.get_backend())


def init_process_group() -> tuple[DistributedContext, bool]:
    """Join the process group that torchrun's variables describe.

    Returns the context and whether this call created the group (the caller
    then destroys it with :func:`destroy_process_group`). Without torchrun's
    variables, or with ``WORLD_SIZE=1``, nothing is initialised. A group that
    already exists is reused.
    """
    if dist.is_available() and dist.is_initialized():
        return current_context(), False
    context = context_from_environment()
    if context is None or not context.enabled:
        return SINGLE_PROCESS, False
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; install a build with distributed support")

    use_cuda = torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        if context.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {context.local_rank} has no CUDA device ({torch.cuda.device_count()} visible); "
                "start at most one process per GPU"
            )
        torch.cuda.set_device(context.local_rank)
    dist.init_process_group(
        backend=backend, init_method="env://", rank=context.rank, world_size=context.world_size, timeout=COLLECTIVE_TIMEOUT
    )
    logger.info("joined the %s process group as rank %d of %d", backend, context.rank, context.world_size)
    return DistributedContext(context.rank, context.world_size, context.local_rank, backend), True


def destroy_process_group(context: DistributedContext) -> None:
    """Leave the process group, if one was joined."""
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def device_for(context: DistributedContext) -> torch.device:
    """Return the device this process trains on: its own GPU under CUDA, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if context.enabled:
        return torch.device("cuda", context.local_rank)
    return torch.device("cuda")


def barrier(context: DistributedContext) -> None:
    """Wait until every rank reaches this point."""
    if context.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place, and return it."""
    if context.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_json(value: Any, context: DistributedContext, device: torch.device, source: int = 0) -> Any:
    """Send a JSON-serialisable value from rank ``source`` to every rank and return it.

    The value travels as UTF-8 bytes in a tensor, so no rank unpickles data
    from another one. ``device`` must be the device the backend communicates
    on (the rank's GPU under NCCL).
    """
    if not context.enabled:
        return value
    payload = json.dumps(value).encode("utf-8") if context.rank == source else b""
    length = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    dist.broadcast(length, src=source)
    buffer = torch.zeros(int(length.item()), dtype=torch.uint8, device=device)
    if context.rank == source:
        buffer.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    dist.broadcast(buffer, src=source)
    return json.loads(bytes(buffer.cpu().tolist()).decode("utf-8"))


# ---------------------------------------------------------------------------
# Data order
# ---------------------------------------------------------------------------


def epoch_order(size: int, seed: int) -> list[int]:
    """Return the order in which a shuffling DataLoader with ``Generator().manual_seed(seed)`` visits ``size`` items.

    The single-process trainer shuffles with such a loader. Running the same
    DataLoader machinery over ``range(size)`` reproduces its order exactly,
    including the draw the loader makes from the generator for its worker
    seed before it shuffles.
    """
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(range(size), batch_size=None, shuffle=True, generator=generator, num_workers=0)
    return [int(index) for index in loader]


class EpochShardSampler(DistributedSampler):
    """A DistributedSampler whose global order is the single-process shuffle of each epoch.

    Rank ``r`` of ``W`` takes every W-th index of the epoch's order, starting
    at ``r``. With ``batch_size / W`` faces per rank and step, the union of the
    ranks' step ``j`` batches is then exactly the single-process batch ``j``.
    When the dataset size is not a multiple of W, the order is padded with
    its first indices (as DistributedSampler does), so up to W - 1 faces are
    seen twice per epoch.

    Call :meth:`set_epoch` before each epoch. The order depends only on
    ``seed_for_epoch(epoch)``, so a resumed run gets the same batches.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed_for_epoch: Callable[[int], int]) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, drop_last=False)
        self.seed_for_epoch = seed_for_epoch

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(len(self.dataset), self.seed_for_epoch(self.epoch))
        padding = self.total_size - len(order)
        while padding > 0:
            order += order[:padding]
            padding = self.total_size - len(order)
        return iter(order[self.rank : self.total_size : self.num_replicas])


# ---------------------------------------------------------------------------
# Synchronised BatchNorm
# ---------------------------------------------------------------------------


def _differentiable_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks; the backward pass sums the gradients over the ranks too.

    NOTE: torch 2.13 deprecates ``torch.distributed.nn.functional.all_reduce``
    in favour of this functional collective, whose module is still private.
    """
    return functional_collectives.all_reduce(tensor, "sum", dist.group.WORLD)


class ProcessGroupBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole batch across all ranks.

    ``torch.nn.SyncBatchNorm`` (torch 2.13) runs on GPUs only, so this layer
    does the same on the CPU with two differentiable all-reduces per call.
    The first sums each channel, the second sums the squared deviations from
    the global mean. Two passes, like the single-process kernel, avoid the
    cancellation of E[x^2] - E[x]^2. In eval mode, or without a
    process group, it is a plain BatchNorm2d. Its parameters and buffers have
    the names of BatchNorm2d, so checkpoints load into either.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - the name BatchNorm2d uses
        if not self.training or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return super().forward(input)
        self._check_input_dim(input)

        channels = input.shape[1]
        local_count = input.numel() // channels

        # Global mean (the per-channel element count travels with the sums), then the global
        # biased variance around it.
        sums = _differentiable_sum(torch.cat([input.sum(dim=(0, 2, 3)), input.new_tensor([float(local_count)])]))
        count = sums[channels]
        mean = sums[:channels] / count
        centred = input - mean.view(1, -1, 1, 1)
        variance = _differentiable_sum((centred * centred).sum(dim=(0, 2, 3))) / count

        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = variance * (count / max(float(count) - 1.0, 1.0))
                self.running_mean.mul_(1.0 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1.0 - momentum).add_(unbiased.detach(), alpha=momentum)

        normalised = centred * torch.rsqrt(variance + self.eps).view(1, -1, 1, 1)
        if self.affine:
            normalised = normalised * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return normalised


def _replace_batchnorm(module: nn.Module, factory: Callable[[nn.BatchNorm2d], nn.Module]) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        return factory(module)
    for name, child in module.named_children():
        module.add_module(name, _replace_batchnorm(child, factory))
    return module


def _process_group_batchnorm(layer: nn.BatchNorm2d) -> ProcessGroupBatchNorm2d:
    replacement = ProcessGroupBatchNorm2d(
        layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
        track_running_stats=layer.track_running_stats,
    )
    # Share the parameter and buffer objects, so an optimiser built earlier
    # and the layer keep pointing at the same tensors.
    if layer.affine:
        replacement.weight = layer.weight
        replacement.bias = layer.bias
    if layer.track_running_stats:
        replacement.running_mean = layer.running_mean
        replacement.running_var = layer.running_var
        replacement.num_batches_tracked = layer.num_batches_tracked
    replacement.train(layer.training)
    return replacement


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d of ``model`` by a synchronised one, in place, and return the model.

    On CUDA this is ``torch.nn.SyncBatchNorm``; on the CPU it is
    :class:`ProcessGroupBatchNorm2d`. State-dict names do not change.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _replace_batchnorm(model, _process_group_batchnorm)
