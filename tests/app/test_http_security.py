"""Requests for files outside the app's own folders are refused, over plain HTTP against the real server.

The server may serve only its Gradio cache (uploads and returned files) and
``explorer/assets``. Each request below is for another file: system files,
the checkpoints, the repository's source and ``.git``, by absolute path, by
``..`` traversal and by URL-encoded traversal. Paths are sent exactly as
written (no client-side normalisation of ``..``).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from explorer.app.config import ASSETS_DIR, REPOSITORY_ROOT
from tests.app.conftest import RunningApp

ROOT = str(REPOSITORY_ROOT)
ASSETS = str(ASSETS_DIR)

# Text that shows a refused file's content leaked into a response.
LEAK_MARKERS = ("root:x:0:0", "[core]", "__metadata__", "REPOSITORY_ROOT", "ref: refs/", "PATH=", "validation")

OUTSIDE_TARGETS = [
    "/file=/etc/passwd",
    "/gradio_api/file=/etc/passwd",
    "/gradio_api/file=//etc/passwd",
    "/gradio_api/file=%2Fetc%2Fpasswd",
    "/gradio_api/file=/proc/self/environ",
    "/gradio_api/file=../../../../etc/passwd",
    "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/gradio_api/file=%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    f"/gradio_api/file={ASSETS}/../app/config.py",
    f"/gradio_api/file={ASSETS}/%2e%2e/app/config.py",
    f"/gradio_api/file={ASSETS}/examples/../../../checkpoints/structured.json",
    f"/gradio_api/file={ROOT}/checkpoints/structured.json",
    f"/gradio_api/file={ROOT}/checkpoints/structured.safetensors",
    "/gradio_api/file=checkpoints/structured.json",
    f"/gradio_api/file={ROOT}/.git/config",
    f"/gradio_api/file={ROOT}/.git/HEAD",
    "/gradio_api/file=.git/config",
    f"/gradio_api/file={ROOT}/app.py",
    "/gradio_api/file=app.py",
    "/static/../../../../etc/passwd",
    "/assets/..%2f..%2f..%2f..%2fetc/passwd",
    "/gradio_api/file=/tmp/gradio/../../etc/passwd",
    "/gradio_api/file=/tmp/gradio/%2e%2e/%2e%2e/etc/passwd",
]


def get_raw(running_app: RunningApp, target: str) -> httpx.Response:
    """GET ``target`` as the literal request target, without httpx resolving ``..`` segments."""
    base = running_app.url.rstrip("/")
    request = httpx.Request("GET", base + "/", extensions={"target": target.encode("ascii")})
    with httpx.Client(timeout=30) as session:
        return session.send(request)


@pytest.mark.parametrize("target", OUTSIDE_TARGETS)
def test_file_outside_app_folders_refused(running_app: RunningApp, target: str) -> None:
    response = get_raw(running_app, target)
    assert response.status_code in (400, 403, 404), f"{target} answered {response.status_code}"
    for marker in LEAK_MARKERS:
        assert marker not in response.text, f"{target} leaked {marker!r}"


def test_example_asset_served(running_app: RunningApp) -> None:
    # The control case: a file in explorer/assets is served, so the refusals above are not a broken route.
    response = get_raw(running_app, f"/gradio_api/file={ASSETS}/examples/takeo.pts")
    assert response.status_code == 200
    assert response.text.startswith("version: 1")


def test_uploaded_file_served_back(running_app: RunningApp, tmp_path: Path) -> None:
    path = tmp_path / "note.pts"
    path.write_text("version: 1\n")
    with path.open("rb") as handle:
        uploaded = httpx.post(f"{running_app.url}gradio_api/upload", files={"files": ("note.pts", handle, "text/plain")}, timeout=30)
    assert uploaded.status_code == 200
    served = get_raw(running_app, f"/gradio_api/file={uploaded.json()[0]}")
    assert served.status_code == 200
    assert served.text == "version: 1\n"


@pytest.mark.parametrize("path", ["/etc/passwd", f"{ROOT}/checkpoints/structured.json", f"{ROOT}/.git/config", "../../../../etc/passwd"])
def test_event_refuses_server_file_as_input(running_app: RunningApp, path: str) -> None:
    # An event whose file input names a server file instead of an upload must not read it.
    points_file = {"path": path, "meta": {"_type": "gradio.FileData"}}
    body = {"data": [None, "takeo", -1, points_file, 0, "", "36", "structured"]}
    posted = httpx.post(f"{running_app.url}gradio_api/call/inspect", json=body, timeout=30)
    assert posted.status_code == 200
    stream = httpx.get(f"{running_app.url}gradio_api/call/inspect/{posted.json()['event_id']}", timeout=60).text
    assert "event: error" in stream
    for marker in LEAK_MARKERS:
        assert marker not in stream


def test_config_has_no_server_paths(running_app: RunningApp) -> None:
    text = httpx.get(f"{running_app.url}config", timeout=30).text
    assert ROOT not in text
    assert "/tmp/" not in text
