"""A small run of benchmarks/load_test.py against the test server: concurrent clients, no errors."""

from __future__ import annotations

import os

from tests.app.conftest import RunningApp, load_benchmark


def test_load_concurrent_clients_no_errors(running_app: RunningApp) -> None:
    benchmark = load_benchmark()
    # The test server runs in this process, so its memory is this process's.
    summary = benchmark.run_load(running_app.url, os.getpid(), clients=4, requests=5)
    assert summary["error_messages"] == []
    assert summary["errors"] == 0
    assert summary["succeeded"] == 20
    assert summary["rss_samples"] > 0
    assert summary["latency_p95_s"] >= summary["latency_median_s"] > 0


def test_load_summary_statistics() -> None:
    benchmark = load_benchmark()
    samples = [(float(second), 100_000_000 + 1_000_000 * second) for second in range(10)]
    assert abs(benchmark.slope_mb_per_minute(samples) - 60.0) < 1e-9
    assert benchmark.slope_mb_per_minute(samples[:1]) is None
    assert benchmark.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert benchmark.percentile([], 0.95) is None
