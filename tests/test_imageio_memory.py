"""Decode memory: 16-bit images without a float64 copy, a budget counted from the header, and
decodes that wait for each other instead of piling up (issue 14)."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inboxsort.errors import BadImage
from inboxsort.imageio import (
    MAX_PIXELS,
    DecodeBudget,
    decode_cost,
    decode_image,
)
from tests.helpers.imagegen import png_declaring

# A 190 KB PNG that decodes to 88 megapixels of 16-bit grey (under Pillow's pixel limit).
SIDE = 9400
BILINEAR = Image.Resampling.BILINEAR

MEASURE = """
import resource, sys
from pathlib import Path
from inboxsort.imageio import load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
array = load_image(Path(sys.argv[1]), 224)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before, after, int(array[..., 0].max()), int(array[..., 0].min()))
"""


def float64_formula(array: np.ndarray, mode: str) -> np.ndarray:
    """The conversion the loader used before (the shipped model is trained on its pixels)."""
    values = array.astype(np.float64)
    top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
    return np.clip(values / top * 255.0, 0, 255).astype(np.uint8)


def big_16_bit_png(path: Path) -> Path:
    pixels = np.zeros((SIDE, SIDE), dtype=np.uint16)
    pixels[: SIDE // 2, : SIDE // 2] = 65535  # one white quarter: min and max both show
    Image.frombytes("I;16", (SIDE, SIDE), pixels.tobytes()).save(path)
    return path


def test_a_large_16_bit_png_decodes_in_bounded_memory(tmp_path):
    path = big_16_bit_png(tmp_path / "deep.png")
    assert path.stat().st_size < 1 << 20  # small on disk
    with Image.open(path) as image:
        assert image.mode == "I;16" and image.size == (SIDE, SIDE)
        assert SIDE * SIDE <= MAX_PIXELS
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    before, after, brightest, darkest = (int(v) for v in done.stdout.split())
    grown_mib = (after - before) / 1024  # ru_maxrss is in KiB on Linux
    # 88 megapixels: 2 bytes decoded, 1 as 8-bit grey, 4 as RGB (about 620 MiB). The float64
    # conversion took about 2.2 GB.
    assert grown_mib < 1024, f"decoding grew the peak by {grown_mib:.0f} MiB"
    assert (brightest, darkest) == (255, 0)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "I-small", "F"])
def test_deep_grey_pixels_equal_the_float64_formula(tmp_path, mode):
    rng = np.random.default_rng(7)
    shape = (37, 1500)  # rows wider than one strip's share: several strips
    if mode in ("I;16", "I;16B"):
        values = np.arange(37 * 1500, dtype=np.uint32) % 65536  # every 16-bit value
        values = values.reshape(shape).astype("<u2" if mode == "I;16" else ">u2")
        image = Image.frombytes(mode, (shape[1], shape[0]), values.tobytes())
    elif mode == "I":
        values = rng.integers(-70000, 140000, shape, dtype=np.int32)
        image = Image.fromarray(values)
    elif mode == "I-small":
        mode, values = "I", rng.integers(-20, 256, shape, dtype=np.int32)
        image = Image.fromarray(values)
    else:
        values = rng.uniform(-100.0, 70000.0, shape).astype(np.float32)
        image = Image.fromarray(values)
    assert image.mode == mode
    expected = float64_formula(np.asarray(image), mode)
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    size = 40
    got = decode_image(buffer.getvalue(), size)
    want = np.asarray(
        Image.fromarray(expected, mode="L").convert("RGB").resize((size, size), BILINEAR),
        np.uint8,
    )
    assert np.array_equal(got, want)


def test_every_16_bit_value_scales_as_before():
    from inboxsort.imageio import _scale_table

    values = np.arange(65536, dtype=np.uint16)
    assert np.array_equal(_scale_table(65535)[values], float64_formula(values, "I;16"))
    small = np.arange(256, dtype=np.int32)
    assert np.array_equal(_scale_table(255)[small], float64_formula(small, "I"))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_an_image_over_the_budget_is_refused_with_its_size_and_the_budget():
    data = png_bytes(Image.new("L", (1000, 1000)))
    with pytest.raises(BadImage) as caught:
        decode_image(data, 32, budget=DecodeBudget(1 << 20))
    reason = str(caught.value)
    assert reason.startswith("too large to decode: 1000x1000 L needs about 5 MiB"), reason
    assert reason.endswith("over the decode budget of 1 MiB"), reason
    # Under the budget, the same image decodes.
    assert decode_image(data, 32, budget=DecodeBudget(8 << 20)).shape == (32, 32, 3)


def test_the_cost_comes_from_the_header_before_decoding():
    with Image.open(io.BytesIO(png_bytes(Image.new("I;16", (300, 200))))) as image:
        assert decode_cost(image) == 300 * 200 * 7
    # A header with no pixel data behind it: counting it decodes nothing.
    with Image.open(io.BytesIO(png_declaring(9000, 9000))) as image:
        assert decode_cost(image) == 9000 * 9000 * 5


def test_every_image_under_the_pixel_limit_fits_the_default_budget():
    from inboxsort.imageio import _PEAK_BYTES_PER_PIXEL, DECODE_BUDGET_BYTES

    assert MAX_PIXELS * max(_PEAK_BYTES_PER_PIXEL.values()) <= DECODE_BUDGET_BYTES


def test_decodes_wait_for_the_budget_instead_of_piling_up():
    budget = DecodeBudget(100)
    first_in, release_first, second_in = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with budget.hold(80):
            first_in.set()
            release_first.wait(10)

    def second() -> None:
        with budget.hold(50):
            second_in.set()

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert first_in.wait(10)
    threads.append(threading.Thread(target=second))
    threads[1].start()
    time.sleep(0.3)
    assert not second_in.is_set()  # 80 + 50 is over 100: it waits
    with budget.hold(20):  # a small one fits beside the first
        pass
    release_first.set()
    assert second_in.wait(10)
    for thread in threads:
        thread.join(10)
