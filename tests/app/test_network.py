"""The server listens on 127.0.0.1 unless a host is given, and warns when it listens on another address."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from explorer.app.config import AppSettings
from explorer.app.main import launch
from tests.app.conftest import load_benchmark
from tests.inference.shipped import checkpoint_folder

# TCP state LISTEN in /proc/net/tcp and /proc/net/tcp6.
TCP_LISTEN = "0A"


def listening_addresses(port: int) -> set[str]:
    """Return the local addresses with a listening TCP socket on ``port``, from /proc/net/tcp{,6}."""
    addresses = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == TCP_LISTEN and int(port_hex, 16) == port:
                addresses.add(_decode_address(address, width))
    return addresses


def _decode_address(hex_address: str, width: int) -> str:
    """Decode a /proc/net/tcp address: 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[index : index + 4][::-1] for index in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if width == 8 else socket.AF_INET6, words)


def local_interface_addresses() -> list[str]:
    """Return this machine's non-loopback IPv4 addresses, from the kernel's table of local routes."""
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return []
    addresses = set()
    for previous, line in zip(lines, lines[1:]):
        if line.strip() == "/32 host LOCAL" and "|--" in previous:
            address = previous.split("|--")[1].strip()
            if not address.startswith("127."):
                addresses.add(address)
    return sorted(addresses)


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """Start ``python app.py --port N`` with no host option and no EXPLORER_HOST; yield (port, log path)."""
    benchmark = load_benchmark()
    log = tmp_path_factory.mktemp("default-server") / "server.log"
    port = benchmark.free_port()
    server = benchmark.start_server(port, log, None)
    try:
        yield port, log
    finally:
        benchmark.stop_server(server)


def test_default_server_listens_on_loopback(default_server: tuple[int, Path]) -> None:
    port, log = default_server
    assert listening_addresses(port) == {"127.0.0.1"}
    assert "not a loopback address" not in log.read_text()


def test_default_server_unreachable_on_interface(default_server: tuple[int, Path]) -> None:
    port, _ = default_server
    addresses = local_interface_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    for address in addresses:
        with pytest.raises(OSError):
            socket.create_connection((address, port), timeout=2).close()


class RecordingBlocks:
    """Stands in for gr.Blocks: records the queue and launch arguments and binds nothing."""

    def __init__(self) -> None:
        self.launched: dict[str, Any] = {}
        self.queued: dict[str, Any] = {}

    def queue(self, **arguments: Any) -> None:
        self.queued = arguments

    def launch(self, **arguments: Any) -> None:
        self.launched = arguments


def test_launch_default_host_without_warning(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("EXPLORER_HOST", raising=False)
    demo = RecordingBlocks()
    with caplog.at_level(logging.WARNING, logger="explorer.app.main"):
        launch(demo, AppSettings.from_environment(checkpoints=checkpoint_folder()))  # type: ignore[arg-type]
    assert demo.launched["server_name"] == "127.0.0.1"
    assert "not a loopback address" not in caplog.text


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "127.evil.example", "::"])
def test_launch_other_host_warns(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, host: str) -> None:
    monkeypatch.delenv("EXPLORER_HOST", raising=False)
    demo = RecordingBlocks()
    with caplog.at_level(logging.WARNING, logger="explorer.app.main"):
        launch(demo, AppSettings.from_environment(checkpoints=checkpoint_folder(), host=host))  # type: ignore[arg-type]
    assert demo.launched["server_name"] == host
    assert f"listening on {host}, which is not a loopback address" in caplog.text


def test_empty_host_means_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPLORER_HOST", "")
    assert AppSettings.from_environment(host=" ").host == "127.0.0.1"
