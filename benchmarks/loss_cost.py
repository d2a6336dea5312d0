"""Forward + backward time and peak memory of each training loss at the training shapes.

Usage: ``python benchmarks/loss_cost.py [--threads 1] [--repeats 30]``.

Shapes: B = 32 faces, K = 68 landmarks, 32 x 32 heatmap logits (input 128,
stride 4), as ``configs/cpu.json`` trains. Cases:

* ``structured-isotropic``: StructuredLoss with its default labels (an
  isotropic Gaussian of sigma 1 heatmap pixel, built inside the loss);
* ``structured-image-aware``: the labels from
  :func:`explorer.core.smoothing.image_aware_labels` on (32, 3, 128, 128)
  crops, built in every timed call as training does, then StructuredLoss;
* ``softargmax``: SoftArgmaxLoss (L1), the reference of the ratios;
* ``star``: StarLoss.

Each case runs in a fresh subprocess so that its memory high-water mark is
its own. Memory method: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the
process's peak resident set size, in KiB on Linux) is read after the inputs
exist and one call at B = 1 has initialised torch's kernels and thread pool,
then again after one call at B = 32; the difference is the peak extra
memory of that call, with the C allocator's overhead included. Time is the
median over ``--repeats`` calls after 3 untimed ones, network excluded: the
logits are a leaf tensor that requires grad.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from typing import Any, Callable

from common import machine, print_json, summarise, time_calls, warn_if_busy

CASES = ("softargmax", "structured-isotropic", "structured-image-aware", "star")
BATCH, LANDMARKS, INPUT_SIZE, STRIDE = 32, 68, 128, 4


def _make_step(case: str, batch: int) -> tuple[Callable[[], None], Callable[[], None] | None]:
    """Return a callable that runs the loss forward and backward, and one that builds the labels alone."""
    import torch
    import torch.nn.functional as F

    from explorer.core.losses import build_loss
    from explorer.core.smoothing import image_aware_labels

    generator = torch.Generator().manual_seed(0)
    side = INPUT_SIZE // STRIDE
    logits = (torch.randn(batch, LANDMARKS, side, side, generator=generator) * 2).requires_grad_(True)
    points = torch.rand(batch, LANDMARKS, 2, generator=generator) * (side - 8) + 4
    # Smooth random crops: edges of several scales for the edge map to follow.
    coarse = torch.rand(batch, 3, INPUT_SIZE // 8, INPUT_SIZE // 8, generator=generator)
    images = F.interpolate(coarse, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)

    objective = "structured" if case.startswith("structured") else case
    loss_fn = build_loss(objective)

    def labels() -> Any:
        return image_aware_labels(images, points, (side, side)) if case == "structured-image-aware" else None

    def step() -> None:
        logits.grad = None
        loss_fn(logits, points, labels()).backward()

    return step, (labels if case == "structured-image-aware" else None)


def run_case(case: str, repeats: int, threads: int) -> dict[str, Any]:
    """Measure one case in this process (called in the per-case subprocess)."""
    import torch

    torch.set_num_threads(threads)

    # Memory first, in a process that has run nothing at B = 32 yet.
    small_step, _ = _make_step(case, 1)
    small_step()
    step, labels = _make_step(case, BATCH)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before

    result = {"case": case, "peak_extra_mib": peak_kib / 1024, **summarise(time_calls(step, repeats))}
    if labels is not None:
        result["labels_only"] = summarise(time_calls(labels, repeats))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per case (default 1, as configs/cpu.json trains)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per case (default 30)")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        print(json.dumps(run_case(args.case, args.repeats, args.threads)))
        return 0

    warn_if_busy()
    rows = []
    for case in CASES:
        command = [sys.executable, __file__, "--case", case, "--threads", str(args.threads), "--repeats", str(args.repeats)]
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))

    reference = next(row for row in rows if row["case"] == "softargmax")
    for row in rows:
        row["time_ratio"] = row["median_s"] / reference["median_s"]
        row["memory_ratio"] = row["peak_extra_mib"] / reference["peak_extra_mib"]
    print_json({"machine": machine() | {"torch_threads": args.threads},
                "shapes": {"batch": BATCH, "landmarks": LANDMARKS, "heatmap": INPUT_SIZE // STRIDE}, "cases": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
