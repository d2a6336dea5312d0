"""Helpers shared by the benchmark scripts: machine description, timing statistics, checkpoints.

The scripts run from the repository root as ``python benchmarks/NAME.py``;
Python then puts ``benchmarks/`` on the import path, so they import this
module as ``common``.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

# The shipped checkpoints, and the training runs they are copied from.
SHIPPED = {"structured": REPOSITORY / "checkpoints" / "structured.safetensors",
           "softargmax": REPOSITORY / "checkpoints" / "softargmax.safetensors"}
RUN_BEST = {"structured": REPOSITORY / "runs" / "structured" / "best.safetensors",
            "softargmax": REPOSITORY / "runs" / "softargmax" / "best.safetensors"}


def cpu_model() -> str:
    """Return the CPU model name that ``lscpu`` reports, or the platform's processor string."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in output.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    return platform.processor() or "unknown CPU"


def training_processes() -> list[str]:
    """Return the command lines of running ``explorer train`` processes, which would distort timings."""
    try:
        output = subprocess.run(["pgrep", "-af", "explorer train"], capture_output=True, text=True).stdout
    except OSError:
        return []
    own = str(os.getpid())
    # Keep the Python processes (trainers and their DataLoader workers), not
    # shells that wait to start one.
    return [
        line for line in output.splitlines()
        if line and not line.startswith(own + " ") and "python" in line.split(" ", 2)[1]
    ]


def machine() -> dict[str, Any]:
    """Describe the machine and software a measurement ran on."""
    import torch

    description = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + shlex.join(sys.argv),
        "concurrent_training_processes": len(training_processes()),
    }
    if torch.cuda.is_available():
        description["gpu"] = torch.cuda.get_device_name(0)
    return description


def warn_if_busy() -> None:
    """Print a warning to stderr when training processes share the machine."""
    busy = training_processes()
    if busy:
        print(f"warning: {len(busy)} 'explorer train' processes are running; timings include their contention",
              file=sys.stderr)


def time_calls(function: Callable[[], Any], repeats: int, warmup: int = 3, synchronize: Callable[[], None] | None = None) -> list[float]:
    """Call ``function`` ``warmup`` times untimed, then ``repeats`` times; return each call's seconds."""
    for _ in range(warmup):
        function()
    if synchronize:
        synchronize()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        if synchronize:
            synchronize()
        timings.append(time.perf_counter() - started)
    return timings


def percentile(values: list[float], fraction: float) -> float:
    """Return the ``fraction`` quantile of ``values`` by linear interpolation (numpy's default method)."""
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def summarise(timings: list[float]) -> dict[str, float]:
    """Return the median, 95th percentile, minimum and count of timings in seconds."""
    return {
        "median_s": statistics.median(timings),
        "p95_s": percentile(timings, 0.95),
        "min_s": min(timings),
        "runs": len(timings),
    }


def checkpoint_paths() -> dict[str, Path]:
    """Return the shipped checkpoints, or the training runs' best checkpoints where those are missing."""
    paths = {}
    for name, shipped in SHIPPED.items():
        paths[name] = shipped if shipped.is_file() else RUN_BEST[name]
        if not paths[name].is_file():
            sys.exit(f"checkpoint {shipped} not found (nor {RUN_BEST[name]}); train the models first")
    return paths


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))
