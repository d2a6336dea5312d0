"""End-to-end time of the app's ``/inspect`` endpoint through gradio_client on a 1-megapixel photo.

Usage: ``python benchmarks/app_inspect.py [--image FILE] [--megapixels 1.0] [--repeats 30]``.

The script writes the photo (by default ``einstein.jpg`` from the examples,
resized to about ``--megapixels`` million pixels) to a temporary JPEG. It
starts ``python app.py`` on 127.0.0.1 on a free port as a subprocess and
waits until the page responds. Then it calls ``/inspect`` with that photo.
Each call uploads the file, detects the face, runs the structured-loss
model, draws every figure and downloads the outputs, as a browser session
would. The first 3 calls are untimed warm-up. The server is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from common import REPOSITORY, checkpoint_paths, machine, print_json, summarise, time_calls, warn_if_busy

EXAMPLE = REPOSITORY / "explorer" / "assets" / "examples" / "einstein.jpg"
STARTUP_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _write_photo(source: Path, megapixels: float, target: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        factor = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
        size = (round(image.width * factor), round(image.height * factor))
        image.resize(size, Image.Resampling.LANCZOS).save(target, quality=92)
    return size


def _checkpoint_folder(folder: Path) -> Path:
    """Return a folder with structured.safetensors and softargmax.safetensors, copying run checkpoints if needed."""
    paths = checkpoint_paths()
    if all(path.parent == paths["structured"].parent for path in paths.values()) and paths["structured"].name == "structured.safetensors":
        return paths["structured"].parent
    for name, path in paths.items():
        shutil.copy(path, folder / f"{name}.safetensors")
        shutil.copy(path.with_suffix(".json"), folder / f"{name}.json")
    return folder


def _wait_until_up(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the app exited with status {server.returncode} before answering on {url}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    sys.exit(f"the app did not answer on {url} within {STARTUP_TIMEOUT_S} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=EXAMPLE, help="photo to resize and upload (default: einstein.jpg)")
    parser.add_argument("--megapixels", type=float, default=1.0, help="size of the uploaded photo (default 1.0)")
    parser.add_argument("--repeats", type=int, default=30, help="timed requests (default 30)")
    parser.add_argument("--model", default="structured", help="model the request selects (default: structured)")
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    warn_if_busy()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        photo = folder / "photo.jpg"
        size = _write_photo(args.image, args.megapixels, photo)
        port = _free_port()
        url = f"http://127.0.0.1:{port}/"
        environment = {key: value for key, value in os.environ.items() if key != "EXPLORER_DATA"}
        command = [sys.executable, str(REPOSITORY / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                   "--checkpoints", str(_checkpoint_folder(folder))]
        server = subprocess.Popen(command, cwd=REPOSITORY, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_until_up(url, server)
            client = Client(url, verbose=False, download_files=str(folder / "downloads"))
            request = {"image": handle_file(str(photo)), "example": "", "data_index": -1, "points_file": None,
                       "face": 0, "box": "", "landmark": "36", "model": args.model}

            def inspect() -> None:
                client.predict(**request, api_name="/inspect")

            timings = time_calls(inspect, args.repeats, warmup=3)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()

    print_json({"machine": machine(), "photo": {"source": str(args.image), "width": size[0], "height": size[1]},
                "model": args.model, "inspect": summarise(timings)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
