"""Forward time of the heatmap network at batch 1 and batch 32, on the CPU and on CUDA when present.

Usage: ``python benchmarks/forward.py [--checkpoint FILE] [--threads N] [--device cpu|cuda|all]``.

The model runs in eval mode under ``torch.inference_mode``, as the app and
``explorer predict`` run it. Each size is called a few times untimed, then
timed ``--repeats`` times; CUDA timings synchronise after every call. The
script prints one JSON object with the medians and 95th percentiles.
"""

from __future__ import annotations

import argparse
import sys

from common import machine, print_json, summarise, time_calls, warn_if_busy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="checkpoint to time (default: a random network of the default configuration)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)")
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all", help="devices to time (default: all present)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls at batch 1; batch 32 gets a fifth (default 50)")
    args = parser.parse_args()

    import torch

    from explorer.core.checkpoints import load_model
    from explorer.core.models import build_model

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    warn_if_busy()
    if args.checkpoint:
        model, _ = load_model(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = build_model({})
    model.eval()

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    results = {"machine": machine(), "model": model.config, "checkpoint": args.checkpoint, "timings": []}
    for device_name in devices:
        if device_name == "cuda" and not torch.cuda.is_available():
            results["timings"].append({"device": "cuda", "skipped": "CUDA is not available"})
            continue
        device = torch.device(device_name)
        model.to(device)
        synchronize = torch.cuda.synchronize if device.type == "cuda" else None
        for batch, repeats in ((1, args.repeats), (32, max(5, args.repeats // 5))):
            images = torch.rand(batch, 3, model.input_size, model.input_size, device=device)
            with torch.inference_mode():
                timings = time_calls(lambda: model(images), repeats, warmup=3, synchronize=synchronize)
            row = {"device": device_name, "batch": batch, **summarise(timings)}
            row["per_image_ms"] = 1000 * row["median_s"] / batch
            results["timings"].append(row)
    print_json(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
