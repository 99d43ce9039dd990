"""The one image loader that training and serving share, so their pixels cannot drift apart."""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from inboxsort.errors import BadImage
from inboxsort.files import is_transient

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".jfif", ".ppm"}
)

# Pillow's own limit (about 89 megapixels) is a warning at 1x and an error at 2x; we make the
# warning an error too, so a bomb is refused before it is decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def read_bytes(path: Path) -> bytes:
    """Read a whole file; OSError propagates so the caller can tell transient from bad."""
    with open(path, "rb") as handle:
        return handle.read()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is composited on white, as a viewer shows it."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        scaled = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        image = Image.fromarray(scaled, mode="L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def draft_box(size: int) -> tuple[int, int]:
    """The size to ask JPEG draft mode for: each decoded side stays at least 3/4 of `size`."""
    # libjpeg then decodes at 1/2, 1/4 or 1/8 scale inside the inverse DCT, where each side
    # stays at least this box. The resize after decoding is most of the loader's time, and it
    # costs in proportion to the pixels it reads (README, Results: bench-decode). A side is
    # stretched by at most 4/3 back to `size`; the shipped model is trained on pixels loaded
    # this way.
    side = -(-size * 3 // 4)
    return side, side


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Decode image bytes to a uint8 array of shape (size, size, 3); BadImage if unusable."""
    if not data:
        raise BadImage("empty file (0 bytes)")
    try:
        # An explicit pixel check instead of warnings.catch_warnings(), which is not
        # thread-safe and the daemon decodes on a pool of threads.
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise BadImage(
                f"decompression bomb: {width}x{height} ({width * height} pixels) exceeds the limit"
                f" of {MAX_PIXELS}"
            )
        # MPO (what many phone cameras write) is a JPEG with more frames after the first.
        if isinstance(image, JpegImagePlugin.JpegImageFile):
            image.draft("RGB", draft_box(size))
        image.load()
        # In place: without it Pillow returns a full-size copy even when nothing turns.
        ImageOps.exif_transpose(image, in_place=True)
        rgb = _to_rgb(image)
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        array = np.asarray(rgb, dtype=np.uint8)
    except BadImage:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
    ) as exc:
        raise BadImage(_reason(exc, data)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise BadImage(f"cannot decode: {exc}") from None
    if array.shape != (size, size, 3):
        raise BadImage(f"decoded to an unexpected shape {array.shape}")
    return array


def _reason(exc: Exception, data: bytes) -> str:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"decompression bomb: {exc}"
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "not an image: HTML"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in data[:512]):
        return "not an image: text"
    return "not an image Pillow can read"


def load_image(path: Path, size: int) -> np.ndarray:
    """Load one image file as a uint8 (size, size, 3) array: the loader training and serving use."""
    try:
        data = read_bytes(path)
    except OSError as exc:
        if is_transient(exc):
            raise
        raise BadImage(f"cannot read: {exc.strerror or exc}") from None
    return decode_image(data, size)


@dataclass(frozen=True)
class LoadedImages:
    """Many files through load_image: the pixels of those that loaded, and why the rest did not."""

    pixels: np.ndarray  # (len(loaded), size, size, 3) uint8
    loaded: tuple[int, ...]  # indices into the paths given, in order
    errors: tuple[tuple[int, str], ...]  # (index, reason) for each file that did not load


def load_many(paths: Sequence[Path], size: int, *, workers: int = 2) -> LoadedImages:
    """Load files on `workers` threads (Pillow releases the GIL); bad files are reasons."""

    def one(path: Path) -> np.ndarray | str:
        try:
            return load_image(path, size)
        except (BadImage, OSError) as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, paths))
    loaded = tuple(i for i, r in enumerate(results) if not isinstance(r, str))
    pixels = np.zeros((len(loaded), size, size, 3), dtype=np.uint8)
    for row, index in enumerate(loaded):
        pixels[row] = results[index]
    errors = tuple((i, r) for i, r in enumerate(results) if isinstance(r, str))
    return LoadedImages(pixels, loaded, errors)
