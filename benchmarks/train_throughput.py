"""Training throughput, in images per second, with the settings of configs/cpu.json.

Usage: ``EXPLORER_DATA=/path/to/300w python benchmarks/train_throughput.py [--faces 320] [--epochs 3]``.

For each objective this builds the real :class:`explorer.core.training.Trainer`
on the first ``--faces`` training faces of the 300-W folder, with every
value of ``configs/cpu.json`` (batch 32, 1 DataLoader worker, 1 torch
thread, augmentation on). It times ``--epochs`` training epochs, each
with data loading, augmentation, labels, forward, loss, backward, AdamW and
the EMA update. Validation and checkpoint writes are not included. Images
are decoded into the cache before the clock starts, as the trainer does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

from common import REPOSITORY, machine, print_json, warn_if_busy

CASES = (("structured", "image-aware"), ("structured", "isotropic"), ("softargmax", "isotropic"), ("star", "isotropic"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPOSITORY / "configs" / "cpu.json"), help="training config (default: configs/cpu.json)")
    parser.add_argument("--faces", type=int, default=320, help="training faces per epoch (default 320, 10 steps of 32)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per objective (default 3)")
    args = parser.parse_args()

    root = os.environ.get("EXPLORER_DATA")
    if not root:
        sys.exit("set EXPLORER_DATA to a folder in 300-W layout")

    from explorer.core.training import TrainConfig, Trainer, set_seed

    warn_if_busy()
    base = json.loads(open(args.config).read())
    rows = []
    for objective, labels in CASES:
        values = base | {"data": root, "objective": objective, "labels": labels,
                         "max_train_faces": args.faces, "max_val_faces": 1}
        set_seed(values.get("seed", 0))
        with tempfile.TemporaryDirectory() as folder:
            trainer = Trainer(TrainConfig.from_dict(values), folder, progress=False)
            seconds = []
            for epoch in range(1, args.epochs + 1):
                started = time.perf_counter()
                trainer._train_epoch(epoch)
                seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        rows.append({
            "objective": objective, "labels": labels if objective == "structured" else None,
            "faces_per_epoch": args.faces, "epoch_seconds": [round(value, 3) for value in seconds],
            "images_per_second": args.faces / median,
        })
    print_json({"machine": machine(), "config": base, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
