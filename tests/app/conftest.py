"""A real app server for the endpoint and browser tests, started once per test session."""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import gradio as gr
import pytest
from gradio_client import Client

from explorer.app.config import AppSettings
from explorer.app.main import build_app, configure_torch_threads, launch, load_workspace
from explorer.app.sources import Workspace
from tests.inference.shipped import REPOSITORY_ROOT, checkpoint_folder


@dataclass
class RunningApp:
    """The server under test: its URL, Blocks and workspace."""

    url: str
    demo: gr.Blocks
    workspace: Workspace


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def running_app() -> Iterator[RunningApp]:
    """Launch the app on 127.0.0.1 on a free port in this process, and close it after the session."""
    settings = AppSettings(checkpoints=checkpoint_folder(), data=None, host="127.0.0.1", port=_free_port(), concurrency=2)
    configure_torch_threads(settings.concurrency)
    workspace = load_workspace(settings)
    demo = build_app(workspace)
    launch(demo, settings, prevent_thread_lock=True, quiet=True)
    try:
        yield RunningApp(url=f"http://127.0.0.1:{settings.port}/", demo=demo, workspace=workspace)
    finally:
        demo.close()


@pytest.fixture(scope="session")
def client(running_app: RunningApp, tmp_path_factory: pytest.TempPathFactory) -> Client:
    """A gradio_client connected to the test server, downloading output files into a temporary folder."""
    return Client(running_app.url, verbose=False, download_files=str(tmp_path_factory.mktemp("client-downloads")))


def load_benchmark() -> ModuleType:
    """Import benchmarks/load_test.py, which is a script and not part of the package."""
    if "load_test" in sys.modules:
        return sys.modules["load_test"]
    spec = importlib.util.spec_from_file_location("load_test", REPOSITORY_ROOT / "benchmarks" / "load_test.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
