"""Build image files (good and bad) for tests. Import as `from imagegen import ...`."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)

TEXT_BYTES = b"Shopping list:\n- milk\n- eggs\n\tand a cat toy\n"
HTML_BYTES = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body></body></html>\n"
)


def save(image: Image.Image, path: Path, **params: object) -> Path:
    """Save an image (format from the suffix unless params say otherwise); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **params)
    return path


def noise(size: tuple[int, int] = (48, 32), *, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """An image of seeded random pixels: distinct content (and hash) for each seed."""
    width, height = size
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    shape = (height, width, channels) if channels > 1 else (height, width)
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
    assert image.mode == mode
    return image


def halves(
    left: tuple[int, ...], right: tuple[int, ...], size: tuple[int, int], mode: str = "RGB"
) -> Image.Image:
    """An image whose left half is one color and right half another."""
    width, height = size
    image = Image.new(mode, size, left)
    image.paste(Image.new(mode, (width - width // 2, height), right), (width // 2, 0))
    return image


def write_noise_images(
    folder: Path,
    count: int,
    *,
    seed: int = 0,
    suffix: str = ".png",
    size: tuple[int, int] = (8, 8),
) -> list[Path]:
    """`count` small images with distinct content, named img_000.png ... (seeds seed..)."""
    return [save(noise(size, seed=seed + i), folder / f"img_{i:03d}{suffix}") for i in range(count)]


def png_declaring(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims width x height (CRC fixed): a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("1", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    # Signature (8) + length (4), then the IHDR chunk: type (4) + data (13) + CRC (4).
    assert data[12:16] == b"IHDR"
    chunk = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = chunk
    data[29:33] = struct.pack(">I", zlib.crc32(chunk))
    return bytes(data)


def random_bytes(count: int = 4096, *, seed: int = 0) -> bytes:
    """Seeded random bytes that start with non-text bytes (no image format's magic)."""
    body = np.random.default_rng(seed).integers(0, 256, count, dtype=np.uint8).tobytes()
    return b"\x00\xfe\x01\xfd" + body


def copy_first_images(source: Path, dest: Path, count: int) -> list[Path]:
    """Copy the first `count` .jpg files of `source` (by sorted name) into `dest`."""
    names = sorted(p.name for p in source.iterdir() if p.suffix.lower() == ".jpg")[:count]
    if len(names) < count:
        raise FileNotFoundError(f"{source} holds {len(names)} .jpg images, {count} needed")
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(source / name, dest / name)) for name in names]
