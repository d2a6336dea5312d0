"""Small generated files for the upload checks: broken, unusual and hostile images and annotations.

Each writer takes a folder and returns the path of the file it wrote.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _face_like(width: int = 96, height: int = 96) -> np.ndarray:
    """Return an RGB gradient with some structure, so encoders produce real data."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1).astype(np.uint8)


def write_text_file(folder: Path) -> Path:
    path = folder / "notes.jpg"
    path.write_text("these are not pixels\n")
    return path


def write_empty_file(folder: Path) -> Path:
    path = folder / "empty.png"
    path.write_bytes(b"")
    return path


def write_truncated_jpeg(folder: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(_face_like(256, 256)).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    path = folder / "truncated.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def write_png_header(folder: Path, width: int, height: int, name: str = "bomb.png") -> Path:
    """Write a PNG of a few dozen bytes whose header declares ``width`` x ``height`` RGB pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")
    path = folder / name
    path.write_bytes(data)
    return path


def write_bomb_png(folder: Path) -> Path:
    return write_png_header(folder, 30000, 30000)


def write_tiny_png(folder: Path) -> Path:
    path = folder / "tiny.png"
    Image.new("RGB", (1, 1), (128, 64, 32)).save(path)
    return path


def write_rgba_png(folder: Path) -> Path:
    """Left half opaque red, right half fully transparent."""
    pixels = np.zeros((64, 64, 4), dtype=np.uint8)
    pixels[:, :32] = (255, 0, 0, 255)
    pixels[:, 32:] = (0, 0, 255, 0)
    path = folder / "transparent.png"
    Image.fromarray(pixels, mode="RGBA").save(path)
    return path


def write_grey_png(folder: Path) -> Path:
    path = folder / "grey.png"
    Image.fromarray(_face_like()[:, :, 0], mode="L").save(path)
    return path


def write_16bit_png(folder: Path) -> Path:
    """A 16-bit greyscale PNG whose brightest pixel is 65535."""
    values = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    path = folder / "sixteen.png"
    Image.fromarray(values).save(path)
    return path


def write_exif_rotated_jpeg(folder: Path) -> Path:
    """A 96 x 48 JPEG, left half red and right half blue, tagged with EXIF orientation 6 (rotate 90° clockwise)."""
    pixels = np.zeros((48, 96, 3), dtype=np.uint8)
    pixels[:, :48] = (255, 0, 0)
    pixels[:, 48:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = folder / "rotated.jpg"
    image.save(path, format="JPEG", quality=95, exif=exif)
    return path


def write_animated_gif(folder: Path) -> Path:
    """Three 64 x 64 frames: red, green, blue."""
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = folder / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def write_cmyk_jpeg(folder: Path) -> Path:
    """A CMYK JPEG of pure cyan (C = 255, M = Y = K = 0)."""
    path = folder / "cmyk.jpg"
    Image.new("CMYK", (64, 64), (255, 0, 0, 0)).save(path, format="JPEG", quality=95)
    return path


def write_wrong_count_pts(folder: Path, count: int = 67) -> Path:
    lines = ["version: 1", f"n_points: {count}", "{"] + [f"{10 + index} {20 + index}" for index in range(count)] + ["}"]
    path = folder / "wrong_count.pts"
    path.write_text("\n".join(lines) + "\n")
    return path
