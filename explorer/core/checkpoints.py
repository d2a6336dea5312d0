"""Checkpoint files: safetensors weights with a JSON card, written atomically.

A model checkpoint is two files that share a stem:

==========================  ===================================================
``NAME.safetensors``        the weights; the card is also embedded in the
                            safetensors metadata under the key ``card``, so the
                            weights and their configuration never disagree.
``NAME.json``               a human-readable copy of the card (model config,
                            objective, labels, data and split, epochs, metrics,
                            the command that trained it, the licence note).
==========================  ===================================================

The training state used to resume (optimizer, scheduler, EMA weights, random
number generator states) is a third file, ``state.safetensors``, that stores
nested Python structures as tensors plus JSON metadata. Nothing here ever
unpickles, so loading a file from an untrusted source cannot run code.

Every write goes to a temporary file in the same folder, is flushed to disk
and then renamed over the target. A process killed at any moment therefore
leaves either the old file or the new one, never a partial file. A kill
during a write can leave the temporary file (``.NAME.RANDOM.tmp``) behind,
and :func:`remove_temporary_files` deletes those.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from explorer.core.models import HeatmapNet, build_model

logger = logging.getLogger(__name__)

# safetensors files start with an 8-byte header length, then a JSON header.
# A header longer than this is refused before it is parsed.
_MAX_HEADER_BYTES = 100 * 1024 * 1024

_TENSOR_MARKER = "__tensor__"

# atomic_write_bytes names its temporary files ".TARGET.RANDOM.tmp".
_TEMPORARY_PREFIX = "."
_TEMPORARY_SUFFIX = ".tmp"


class CheckpointError(ValueError):
    """A checkpoint file is missing, not safetensors, or does not fit its model."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    # The temporary file must live in the same folder: os.replace is atomic
    # only within one file system.
    handle, temporary = tempfile.mkstemp(
        prefix=f"{_TEMPORARY_PREFIX}{path.name}.", suffix=_TEMPORARY_SUFFIX, dir=path.parent
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

    # Persist the rename itself, so a power cut cannot bring the old name back.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def remove_temporary_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_write_bytes` calls left in ``folder``.

    Call this only while no other process writes to ``folder``, because a
    stale temporary file looks the same as one that is being written.

    Returns:
        The deleted files.
    """
    removed = []
    for path in sorted(Path(folder).glob(f"{_TEMPORARY_PREFIX}*{_TEMPORARY_SUFFIX}")):
        if path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def card_path(weights_path: str | Path) -> Path:
    """Return the JSON card path that belongs to a ``.safetensors`` file."""
    return Path(weights_path).with_suffix(".json")


def save_model(path: str | Path, model: HeatmapNet, card: dict[str, Any]) -> None:
    """Save a model's weights with its card (``card["model"]`` is set from the model).

    The weights file is written before the JSON copy, and it embeds the card,
    so an interrupted save never leaves weights without their configuration.
    """
    path = Path(path)
    card = dict(card)
    card["model"] = model.config
    card_text = json.dumps(card, indent=2, sort_keys=False)

    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    atomic_write_bytes(path, save_safetensors_bytes(tensors, metadata={"card": card_text}))
    atomic_write_bytes(card_path(path), (card_text + "\n").encode("utf-8"))
    logger.info("saved model checkpoint %s", path)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read every tensor and the metadata of a safetensors file, with clear errors."""
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a .safetensors file, for example {path / 'best.safetensors'}.")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. Pass the path of a .safetensors file.")

    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{path} is not a safetensors file: it has only {len(data)} bytes.")

    # Check the header length before handing the bytes to safetensors, so a
    # pickle or a random file is reported as "not a safetensors file".
    header_length = int.from_bytes(data[:8], "little")
    if header_length > min(_MAX_HEADER_BYTES, len(data) - 8) or data[8:9] != b"{":
        raise CheckpointError(
            f"{path} is not a safetensors file (its first bytes are not a safetensors header). "
            "Checkpoints are loaded only from safetensors; convert the weights with safetensors.torch.save_file."
        )
    try:
        metadata = json.loads(data[8 : 8 + header_length]).get("__metadata__") or {}
        tensors = load_safetensors_bytes(data)
    except (SafetensorError, ValueError, UnicodeDecodeError, RecursionError) as error:
        # json.loads raises RecursionError on deeply nested arrays.
        raise CheckpointError(f"{path} is not a valid safetensors file: {error}") from error
    return tensors, metadata


def read_card(path: str | Path) -> dict[str, Any]:
    """Return the card embedded in a model checkpoint."""
    path = Path(path)
    _, metadata = _read_safetensors(path)
    if "card" not in metadata:
        raise CheckpointError(
            f"{path} has no 'card' metadata, so its model configuration is unknown. "
            "Save checkpoints with explorer.core.checkpoints.save_model."
        )
    try:
        card = json.loads(metadata["card"])
    except (json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(f"{path}: the embedded card is not valid JSON ({error}).") from error
    if not isinstance(card, dict) or not isinstance(card.get("model"), dict):
        raise CheckpointError(f"{path}: the embedded card has no 'model' configuration object.")
    return card


def check_state_dict(path: Path, expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mis-shaped tensors."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{name} (checkpoint {tuple(found[name].shape)}, model {tuple(expected[name].shape)})"
        for name in sorted(set(expected) & set(found))
        if found[name].shape != expected[name].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
    if unexpected:
        problems.append(f"unexpected tensors: {', '.join(unexpected[:8])}" + (" ..." if len(unexpected) > 8 else ""))
    if mismatched:
        problems.append(f"shape mismatches: {'; '.join(mismatched[:8])}" + (" ..." if len(mismatched) > 8 else ""))
    if problems:
        raise CheckpointError(
            f"{path} does not match the model in its card: " + " | ".join(problems)
            + ". The file was saved from a different network; use the card that belongs to it."
        )


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[HeatmapNet, dict[str, Any]]:
    """Build the network described by a checkpoint's card and load its weights.

    Returns the model in eval mode on ``device`` and the card.

    Raises:
        CheckpointError: the file is missing, is not safetensors, has no card,
            or its tensors do not match the network the card describes.
    """
    path = Path(path)
    tensors, _ = _read_safetensors(path)
    card = read_card(path)

    # Build the network from the card, then compare every tensor by name and
    # shape before loading, so the message can list all the differences.
    try:
        model = build_model(card["model"])
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: its model configuration is invalid: {error}") from error
    check_state_dict(path, model.state_dict(), tensors)

    model.load_state_dict(tensors)
    model.to(device).eval()
    logger.info("loaded %s (%s objective) on %s", path, card.get("objective", "unknown"), device)
    return model, card


def _flatten(value: Any, tensors: dict[str, torch.Tensor], prefix: str) -> Any:
    """Replace every tensor in a nested structure by a reference into ``tensors``."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().to("cpu").contiguous()
        return {_TENSOR_MARKER: prefix}
    if isinstance(value, dict):
        return {"__dict__": [[_flatten(key, tensors, f"{prefix}.k{index}"), _flatten(item, tensors, f"{prefix}.{index}")]
                             for index, (key, item) in enumerate(value.items())]}
    if isinstance(value, (list, tuple)):
        items = [_flatten(item, tensors, f"{prefix}.{index}") for index, item in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a training state; convert it to tensors or JSON values")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Invert :func:`_flatten`."""
    if isinstance(value, dict):
        if _TENSOR_MARKER in value:
            return tensors[value[_TENSOR_MARKER]]
        if "__tuple__" in value:
            return tuple(_unflatten(item, tensors) for item in value["__tuple__"])
        return {_unflatten(key, tensors): _unflatten(item, tensors) for key, item in value["__dict__"]}
    if isinstance(value, list):
        return [_unflatten(item, tensors) for item in value]
    return value


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Save a nested training state (tensors, dicts, lists, JSON scalars) without pickle."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(state, tensors, "state")
    # safetensors refuses an empty file; a placeholder keeps the format uniform.
    tensors.setdefault("__empty__", torch.zeros(0))
    atomic_write_bytes(path, save_safetensors_bytes(tensors, metadata={"state": json.dumps(structure)}))


def load_state(path: str | Path) -> dict[str, Any]:
    """Load a training state written by :func:`save_state`."""
    path = Path(path)
    tensors, metadata = _read_safetensors(path)
    if "state" not in metadata:
        raise CheckpointError(f"{path} is not a training state file (no 'state' metadata).")
    try:
        structure = json.loads(metadata["state"])
        return _unflatten(structure, tensors)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"{path}: the training state is damaged ({error}); delete it to start afresh.") from error
