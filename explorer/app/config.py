"""Settings of the web app, read from the environment and the command line."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
EXAMPLES_DIR = ASSETS_DIR / "examples"

# The two objectives the app compares, and the checkpoint file stems it
# loads from the checkpoint folder.
MODEL_FILES = {"structured": "structured.safetensors", "softargmax": "softargmax.safetensors"}
MODEL_LABELS = {"structured": "structured loss", "softargmax": "soft-argmax loss"}

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860

# Largest upload the server accepts, in bytes (Gradio's ``max_file_size``; 25 MiB,
# which Gradio also writes as "25mb"). A 40-megapixel JPEG from a phone is
# about 10-20 MB, so 25 MB leaves room for high-quality JPEGs while rejecting
# larger files before they reach the decoder.
MAX_FILE_SIZE = 25 * 1024 * 1024

# Largest HTTP request body, in bytes. An image pasted as a base64 data URL
# travels inside the request's JSON and takes 4/3 of the file's size. The
# limit fits a MAX_FILE_SIZE file so encoded, plus 1 MiB for the rest of the
# request and for the multipart headers of a file upload.
MAX_REQUEST_BODY = MAX_FILE_SIZE * 4 // 3 + 1024 * 1024

# Model events that may run at the same time across the app (Gradio's
# ``default_concurrency_limit``, shared by the group main.MODEL_EVENTS).
# Each running event gets cpu_count // concurrency torch threads, so two
# events on a 2-core machine use one core each instead of fighting over both.
DEFAULT_CONCURRENCY = 2

# Photos are downscaled to at most this many pixels per side for display.
DISPLAY_MAX_SIDE = 1024

# Side of the zoomed face views (overlays, crops), in display pixels.
FACE_VIEW_SIDE = 448


@dataclass(frozen=True)
class AppSettings:
    """Locations of the app's models and data, and the server settings.

    Attributes:
        checkpoints: folder with ``structured.safetensors`` and ``softargmax.safetensors``.
        data: optional 300-W style folder (image + .pts pairs) whose validation
            faces the app can browse, or None.
        host: address to listen on.
        port: TCP port.
        concurrency: events that may run at the same time.
        device: ``"cuda"``, ``"cpu"`` or None for CUDA when available.
    """

    checkpoints: Path
    data: Path | None = None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    concurrency: int = DEFAULT_CONCURRENCY
    device: str | None = None

    @classmethod
    def from_environment(cls, **overrides: object) -> "AppSettings":
        """Read ``EXPLORER_CHECKPOINTS``, ``EXPLORER_DATA``, ``EXPLORER_HOST``, ``EXPLORER_PORT``,
        ``EXPLORER_CONCURRENCY`` and ``EXPLORER_DEVICE``; keyword arguments that are not None win."""
        data = os.environ.get("EXPLORER_DATA") or None
        values: dict[str, object] = {
            "checkpoints": Path(os.environ.get("EXPLORER_CHECKPOINTS") or REPOSITORY_ROOT / "checkpoints"),
            "data": Path(data) if data else None,
            "host": os.environ.get("EXPLORER_HOST") or DEFAULT_HOST,
            "port": _int_from_environment("EXPLORER_PORT", DEFAULT_PORT),
            "concurrency": _int_from_environment("EXPLORER_CONCURRENCY", DEFAULT_CONCURRENCY),
            "device": os.environ.get("EXPLORER_DEVICE") or None,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})

        # An empty --host (say, from an unset shell variable) would make the
        # server listen on every interface, so it means the default instead.
        if not str(values["host"]).strip():
            values["host"] = DEFAULT_HOST
        values["checkpoints"] = Path(values["checkpoints"])  # type: ignore[arg-type]
        if values["data"] is not None:
            values["data"] = Path(values["data"])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    def checkpoint_paths(self) -> dict[str, Path]:
        """Return ``{model name: .safetensors path}`` in the checkpoint folder."""
        return {name: self.checkpoints / file_name for name, file_name in MODEL_FILES.items()}


def _int_from_environment(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer; set it to a whole number or unset it") from None
    if value < 1:
        raise ValueError(f"{name}={value} must be at least 1")
    return value


def is_loopback(host: str) -> bool:
    """Return whether ``host`` is a loopback address (127.0.0.0/8, ::1) or the name ``localhost``.

    Any other name counts as not loopback, because it may resolve to any address.
    """
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))
