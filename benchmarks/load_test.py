"""Drive the explorer's ``/inspect`` endpoint with concurrent gradio_client clients and record latency and memory.

Usage::

    python benchmarks/load_test.py                       # start the app on a free port and test it
    python benchmarks/load_test.py --url http://127.0.0.1:7860/ --pid 12345
    EXPLORER_DATA=../shared/data/300w python benchmarks/load_test.py --clients 16 --requests 50

Each client sends its requests one after the other and cycles through the
faces: the bundled examples by name, the same examples as uploads, and, when
``EXPLORER_DATA`` is set, uploads of that folder's photos. The landmark and
the model change from request to request, so the server's caches do not hide
the work. The server's resident memory (VmRSS of /proc/PID/status) is sampled
every 0.5 s. The slope over the second half of the run shows whether memory
still grows once the caches are full.

Prints a JSON summary and, with ``--markdown FILE``, writes the same numbers
as a Markdown section.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from gradio_client import Client, handle_file

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPOSITORY_ROOT / "explorer" / "assets" / "examples"
EXAMPLE_NAMES = ("breakingbad", "einstein", "takeo")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm")

# Data-folder photos used as uploads, at most this many, so a large folder
# does not fill the server's upload cache with thousands of files.
MAX_DATA_FACES = 40

# Seconds to wait for a started server to respond.
STARTUP_TIMEOUT = 180.0

# Seconds between two memory samples.
SAMPLE_INTERVAL = 0.5


@dataclass(frozen=True)
class Job:
    """One ``/inspect`` request: a face given by example name or by file, a landmark and a model."""

    label: str
    example: str = ""
    image: Path | None = None


@dataclass
class Outcome:
    """What one client saw: request latencies in seconds and error messages."""

    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def build_jobs(data_root: Path | None) -> list[Job]:
    """List the faces to send: each example by name and as an upload, then the data folder's photos."""
    jobs = [Job(f"example {name}", example=name) for name in EXAMPLE_NAMES]
    for name in EXAMPLE_NAMES:
        path = next(path for path in sorted(EXAMPLES_DIR.glob(f"{name}.*")) if path.suffix.lower() in IMAGE_SUFFIXES)
        jobs.append(Job(f"upload {path.name}", image=path))
    if data_root is not None:
        photos = sorted(path for path in data_root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.with_suffix(".pts").is_file())
        step = max(1, len(photos) // MAX_DATA_FACES)
        jobs.extend(Job(f"data {path.relative_to(data_root)}", image=path) for path in photos[::step][:MAX_DATA_FACES])
    return jobs


def inspect_arguments(job: Job, number: int) -> dict[str, Any]:
    """Return the ``/inspect`` keyword arguments of request ``number`` for ``job``."""
    return {
        "image": handle_file(str(job.image)) if job.image is not None else None,
        "example": job.example,
        "data_index": -1,
        "points_file": None,
        "face": 0,
        "box": "",
        "landmark": str((number * 7) % 68),
        "model": "structured" if number % 2 == 0 else "softargmax",
        "api_name": "/inspect",
    }


def run_client(url: str, jobs: Sequence[Job], requests: int, offset: int, outcome: Outcome, start: threading.Barrier) -> None:
    """Send ``requests`` requests in turn from one client, starting at job ``offset``."""
    try:
        client = Client(url, verbose=False, download_files=False)
    except Exception as error:  # noqa: BLE001 - every failure is a result of the test
        outcome.errors.append(f"client could not connect: {type(error).__name__}: {error}")
        start.wait()
        return
    start.wait()
    for number in range(requests):
        job = jobs[(offset + number) % len(jobs)]
        began = time.perf_counter()
        try:
            result = client.predict(**inspect_arguments(job, offset + number))
        except Exception as error:  # noqa: BLE001 - every failure is a result of the test
            outcome.errors.append(f"{job.label}: {type(error).__name__}: {str(error)[:300]}")
            continue
        elapsed = time.perf_counter() - began
        points = result[6].get("points") if isinstance(result[6], dict) else None
        if not points or len(points) != 68:
            outcome.errors.append(f"{job.label}: the result has no 68 points")
            continue
        outcome.latencies.append(elapsed)


def read_rss_bytes(pid: int) -> int | None:
    """Return the resident memory of process ``pid`` in bytes, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class MemorySampler(threading.Thread):
    """Sample a process's resident memory every ``interval`` seconds until stopped."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        began = time.perf_counter()
        while not self._stop_event.is_set():
            rss = read_rss_bytes(self.pid)
            if rss is not None:
                self.samples.append((time.perf_counter() - began, rss))
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def slope_mb_per_minute(samples: Sequence[tuple[float, int]]) -> float | None:
    """Return the least-squares slope of resident memory against time, in MB per minute."""
    if len(samples) < 2:
        return None
    times = [time_s for time_s, _ in samples]
    values = [rss / 1e6 for _, rss in samples]
    mean_time = statistics.fmean(times)
    mean_value = statistics.fmean(values)
    spread = sum((time_s - mean_time) ** 2 for time_s in times)
    if spread == 0:
        return None
    covariance = sum((time_s - mean_time) * (value - mean_value) for time_s, value in zip(times, values))
    return covariance / spread * 60.0


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the ``fraction`` quantile by linear interpolation, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    lower = int(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def run_load(url: str, pid: int | None, clients: int, requests: int, data_root: Path | None = None) -> dict[str, Any]:
    """Run ``clients`` concurrent clients of ``requests`` requests each against ``url`` and summarise the run.

    ``pid`` is the server's process id for the memory samples, or None to skip them.
    """
    jobs = build_jobs(data_root)
    outcomes = [Outcome() for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    threads = [
        threading.Thread(target=run_client, args=(url, jobs, requests, index * 5, outcomes[index], start), daemon=True)
        for index in range(clients)
    ]
    sampler = MemorySampler(pid) if pid is not None else None
    for thread in threads:
        thread.start()
    start.wait()
    if sampler is not None:
        sampler.start()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    duration = time.perf_counter() - began
    if sampler is not None:
        sampler.stop()

    latencies = [latency for outcome in outcomes for latency in outcome.latencies]
    errors = [error for outcome in outcomes for error in outcome.errors]
    samples = sampler.samples if sampler is not None else []
    second_half = [sample for sample in samples if sample[0] >= duration / 2]
    summary: dict[str, Any] = {
        "url": url,
        "clients": clients,
        "requests_per_client": requests,
        "faces": len(jobs),
        "data_faces": sum(job.label.startswith("data ") for job in jobs),
        "requests": clients * requests,
        "succeeded": len(latencies),
        "errors": len(errors),
        "error_messages": sorted(set(errors))[:20],
        "duration_s": round(duration, 1),
        "throughput_per_s": round(len(latencies) / duration, 2) if duration > 0 else None,
        "latency_median_s": _rounded(statistics.median(latencies) if latencies else None),
        "latency_p95_s": _rounded(percentile(latencies, 0.95)),
        "latency_max_s": _rounded(max(latencies) if latencies else None),
        "rss_samples": len(samples),
    }
    if samples:
        summary |= {
            "rss_start_mb": round(samples[0][1] / 1e6, 1),
            "rss_max_mb": round(max(rss for _, rss in samples) / 1e6, 1),
            "rss_end_mb": round(samples[-1][1] / 1e6, 1),
            "rss_slope_second_half_mb_per_min": _rounded(slope_mb_per_minute(second_half)),
        }
    return summary


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(port: int, log_path: Path, data_root: Path | None) -> subprocess.Popen[bytes]:
    """Start ``python app.py`` on 127.0.0.1:``port`` and wait until it responds; raise RuntimeError otherwise."""
    environment = dict(os.environ)
    environment.pop("EXPLORER_HOST", None)
    if data_root is not None:
        environment["EXPLORER_DATA"] = str(data_root)
    log = log_path.open("wb")
    server = subprocess.Popen([sys.executable, str(REPOSITORY_ROOT / "app.py"), "--port", str(port)], cwd=REPOSITORY_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    url = f"http://127.0.0.1:{port}/"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with status {server.returncode} during start-up; see {log_path}")
        try:
            if httpx.get(f"{url}config", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    stop_server(server)
    raise RuntimeError(f"the app did not answer on {url} within {STARTUP_TIMEOUT:.0f} s; see {log_path}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Stop the started server by its process id, first politely, then by force."""
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def markdown_section(summary: dict[str, Any], command: str, machine: str) -> str:
    """Format a run's numbers as the Markdown section "Load test"."""
    lines = [
        "## Load test",
        "",
        f"Command: `{command}`",
        "",
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}. Machine: {machine}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| clients x requests | {summary['clients']} x {summary['requests_per_client']} = {summary['requests']} |",
        f"| faces cycled (data-folder photos) | {summary['faces']} ({summary['data_faces']}) |",
        f"| succeeded / errors | {summary['succeeded']} / {summary['errors']} |",
        f"| duration | {summary['duration_s']} s |",
        f"| throughput | {summary['throughput_per_s']} requests/s |",
        f"| latency median / p95 / max | {summary['latency_median_s']} / {summary['latency_p95_s']} / {summary['latency_max_s']} s |",
    ]
    if "rss_start_mb" in summary:
        lines.append(f"| server RSS start / max / end | {summary['rss_start_mb']} / {summary['rss_max_mb']} / {summary['rss_end_mb']} MB |")
        lines.append(f"| RSS slope over the second half | {summary['rss_slope_second_half_mb_per_min']} MB/min ({summary['rss_samples']} samples) |")
    if summary["error_messages"]:
        lines += ["", "Errors:", ""] + [f"- {message}" for message in summary["error_messages"]]
    return "\n".join(lines) + "\n"


def describe_machine() -> str:
    """Summarise ``lscpu``: CPU model and count."""
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "lscpu not available"
    fields = dict(line.split(":", 1) for line in output.splitlines() if ":" in line)
    model = fields.get("Model name", "unknown CPU").strip()
    cpus = fields.get("CPU(s)", "?").strip()
    return f"{model}, {cpus} CPUs (lscpu)"


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Load-test the explorer's /inspect endpoint with concurrent gradio_client clients.")
    parser.add_argument("--url", help="test a running app at this URL instead of starting one")
    parser.add_argument("--pid", type=int, help="process id of the app at --url, for the memory samples")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--requests", type=int, default=50, help="requests per client (default 50)")
    parser.add_argument("--data", help="300-W style folder whose photos are uploaded too (default: EXPLORER_DATA)")
    parser.add_argument("--log", default="load_test_server.log", help="server log file when the app is started here")
    parser.add_argument("--markdown", help="write the results as a Markdown section to this file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    data = arguments.data or os.environ.get("EXPLORER_DATA") or None
    data_root = Path(data) if data else None
    if data_root is not None and not data_root.is_dir():
        sys.exit(f"data folder {data_root} not found; set EXPLORER_DATA or --data to a 300-W style folder")

    server = None
    if arguments.url:
        url, pid = arguments.url, arguments.pid
    else:
        port = free_port()
        server = start_server(port, Path(arguments.log), data_root)
        url, pid = f"http://127.0.0.1:{port}/", server.pid
    try:
        summary = run_load(url, pid, arguments.clients, arguments.requests, data_root)
    finally:
        if server is not None:
            stop_server(server)

    print(json.dumps(summary, indent=2))
    if arguments.markdown:
        command = "python benchmarks/load_test.py " + " ".join(argv if argv is not None else sys.argv[1:])
        if data_root is not None:
            command = f"EXPLORER_DATA={data} {command}"
        Path(arguments.markdown).write_text(markdown_section(summary, command.strip(), describe_machine()), encoding="utf-8")
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
