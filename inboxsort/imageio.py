"""The one image loader that training and serving share, so their pixels cannot drift apart."""

from __future__ import annotations

import functools
import io
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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

# What decoding an image costs at its peak, per pixel of the size its header declares (after
# JPEG draft mode), by Pillow mode: the decoded buffer (Pillow keeps RGB in 4 bytes) and the
# buffers the conversion to 8-bit RGB adds (16-bit and 32-bit grey: 8-bit grey, then RGB;
# transparency: RGBA, a white background, their composite, then RGB).
_PEAK_BYTES_PER_PIXEL = {"1": 5, "L": 5, "P": 5, "I;16": 7, "I;16B": 7, "I;16L": 7, "I;16N": 7}
_PEAK_BYTES_PER_PIXEL |= {"I": 9, "F": 9, "RGB": 8, "YCbCr": 8, "CMYK": 8, "LAB": 8, "HSV": 8}
_PEAK_BYTES_PER_PIXEL |= {mode: 20 for mode in ("RGBA", "LA", "PA", "RGBa", "La", "RGBX")}
_PEAK_BYTES_PER_PIXEL_OTHER = 20
# The memory all decode threads together may hold at once. It is larger than the peak of any
# image under MAX_PIXELS (20 bytes per pixel), so every image that passes the pixel limit can
# decode, alone if need be; large images wait for each other instead of piling up.
DECODE_BUDGET_BYTES = 7 << 28  # 1.75 GiB
# Integer images are scaled to 8 bits this many pixels at a time.
_STRIP_PIXELS = 1 << 20


class DecodeBudget:
    """A semaphore counted in bytes: decodes wait until their estimated peak fits the budget."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, cost: int) -> Iterator[None]:
        """Wait until `cost` bytes fit beside the decodes running, hold them meanwhile."""
        with self._cond:
            self._cond.wait_for(lambda: self._used + cost <= self.limit)
            self._used += cost
        try:
            yield
        finally:
            with self._cond:
                self._used -= cost
                self._cond.notify_all()


DECODE_BUDGET = DecodeBudget(DECODE_BUDGET_BYTES)


def decode_cost(image: Image.Image) -> int:
    """Estimated peak bytes of decoding `image` to RGB, from its header alone."""
    width, height = image.size
    return width * height * _PEAK_BYTES_PER_PIXEL.get(image.mode, _PEAK_BYTES_PER_PIXEL_OTHER)


def _mib(count: int) -> str:
    return f"{count / (1 << 20):.0f} MiB"


class IncompleteImage(BadImage):
    """Bad as it is, and perhaps only because its writer is not done (empty, truncated)."""


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
        image = Image.fromarray(_to_8_bits(image), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _strips(image: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """The rows of `image` as arrays, a strip of about _STRIP_PIXELS at a time."""
    width, height = image.size
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        yield top, np.asarray(image.crop((0, top, width, bottom)))


@functools.cache
def _scale_table(top: int) -> np.ndarray:
    """uint8 of v / top * 255 for every v in 0..top: the float64 formula, computed once."""
    values = np.arange(top + 1, dtype=np.float64)
    return np.clip(values / float(top) * 255.0, 0, 255).astype(np.uint8)


def _to_8_bits(image: Image.Image) -> np.ndarray:
    """16-bit, 32-bit and float grey to uint8, strip by strip, never a float64 copy of it all.

    The pixels are those of np.clip(v / top * 255, 0, 255) in float64 over the whole array,
    where top is 65535 for 16-bit images and for others whose maximum is over 255, else 255:
    integers go through a table of that very formula, floats through it strip by strip.
    """
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    if image.mode.startswith("I;16"):
        top = 65535
    else:
        peaks = [np.max(strip) for _, strip in _strips(image) if strip.size]
        top = 65535 if peaks and np.max(np.array(peaks)) > 255 else 255
    for row, strip in _strips(image):
        if image.mode == "F":
            scaled = np.clip(strip.astype(np.float64) / float(top) * 255.0, 0, 255)
            out[row : row + len(strip)] = scaled.astype(np.uint8)
        else:
            out[row : row + len(strip)] = _scale_table(top)[np.clip(strip, 0, top)]
    return out


def draft_box(size: int) -> tuple[int, int]:
    """The size to ask JPEG draft mode for: each decoded side stays at least 3/4 of `size`."""
    # libjpeg then decodes at 1/2, 1/4 or 1/8 scale inside the inverse DCT, where each side
    # stays at least this box. The resize after decoding is most of the loader's time, and it
    # costs in proportion to the pixels it reads (README, Results: bench-decode). A side is
    # stretched by at most 4/3 back to `size`; the shipped model is trained on pixels loaded
    # this way.
    side = -(-size * 3 // 4)
    return side, side


def _decoded(image: Image.Image, size: int) -> np.ndarray:
    image.load()
    # In place: without it Pillow returns a full-size copy even when nothing turns.
    ImageOps.exif_transpose(image, in_place=True)
    rgb = _to_rgb(image)
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def decode_image(data: bytes, size: int, *, budget: DecodeBudget = DECODE_BUDGET) -> np.ndarray:
    """Decode image bytes to a uint8 array of shape (size, size, 3); BadImage if unusable.

    The decode waits until its estimated peak memory fits `budget` beside the other decodes
    running; an image whose peak alone is over the budget is refused before it is decoded.
    """
    if not data:
        raise IncompleteImage("empty file (0 bytes)")
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
        cost = decode_cost(image)
        if cost > budget.limit:
            raise BadImage(
                f"too large to decode: {width}x{height} {image.mode} needs about {_mib(cost)},"
                f" over the decode budget of {_mib(budget.limit)}"
            )
        with budget.hold(cost):
            array = _decoded(image, size)
    except BadImage:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
    ) as exc:
        reason = _reason(exc, data)
        # An image's signature with a header too short to identify: perhaps its start.
        started = reason == _UNREADABLE and data.startswith(_SIGNATURES)
        raise (IncompleteImage if started else BadImage)(reason) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise IncompleteImage(f"cannot decode: {exc}") from None
    if array.shape != (size, size, 3):
        raise BadImage(f"decoded to an unexpected shape {array.shape}")
    return array


_UNREADABLE = "not an image Pillow can read"
# How the files of IMAGE_SUFFIXES begin (JPEG, PNG, GIF, BMP, WebP, TIFF, PPM and kin).
_SIGNATURES: tuple[bytes, ...] = (
    b"\xff\xd8",
    b"\x89PNG",
    b"GIF8",
    b"BM",
    b"RIFF",
    b"II*\x00",
    b"MM\x00*",
)
_SIGNATURES += (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"P7")


def _reason(exc: Exception, data: bytes) -> str:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"decompression bomb: {exc}"
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "not an image: HTML"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in data[:512]):
        return "not an image: text"
    return _UNREADABLE


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


def thumbnail_jpeg(data: bytes, side: int, *, budget: DecodeBudget = DECODE_BUDGET) -> bytes:
    """A JPEG no larger than side x side, aspect kept, EXIF orientation applied; BadImage if bad.

    The same checks as decode_image (pixel limit, decode budget, JPEG draft), so a picture the
    review page shows is decoded the way the model saw it.
    """
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise BadImage(f"decompression bomb: {width}x{height} exceeds the limit")
        if isinstance(image, JpegImagePlugin.JpegImageFile):
            image.draft("RGB", (side, side))
        cost = decode_cost(image)
        if cost > budget.limit:
            raise BadImage(f"too large to decode: {width}x{height} {image.mode}")
        with budget.hold(cost):
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            rgb = _to_rgb(image)
            rgb.thumbnail((side, side), Image.Resampling.BILINEAR)
            out = io.BytesIO()
            rgb.save(out, format="JPEG", quality=82)
    except BadImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise BadImage(_reason(exc, data)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise BadImage(f"cannot decode: {exc}") from None
    return out.getvalue()
