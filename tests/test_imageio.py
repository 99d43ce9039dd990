"""The one image loader: every common format to uint8 RGB, bad files to BadImage with a reason,
and training, serving and the model's preprocessing seeing exactly the same pixels."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from inboxsort.errors import BadImage
from inboxsort.imageio import MAX_PIXELS, decode_image, draft_box, load_image, read_bytes
from inboxsort.trainer.dataset import Sample, load_arrays
from tests.helpers.imagegen import (
    BLUE,
    GREEN,
    HTML_BYTES,
    RED,
    TEXT_BYTES,
    WHITE,
    halves,
    noise,
    png_declaring,
    random_bytes,
    save,
)

SIZE = 160


def assert_rgb_uint8(array: np.ndarray, size: int) -> None:
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.uint8
    assert array.shape == (size, size, 3)


def close(pixel: np.ndarray, color: tuple[int, int, int], tolerance: int = 0) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(color)) <= tolerance))


@pytest.fixture(scope="module")
def real_jpeg(dataset_root: Path) -> Path:
    return dataset_root / "train" / "cats" / "cat.0.jpg"


# ---------------------------------------------------------------------------------------------
# Formats and modes that load
# ---------------------------------------------------------------------------------------------


def test_real_rgb_jpeg_at_several_sizes(real_jpeg):
    for size in (64, 160, 224, 600):  # all but 600 decode in draft (reduced-scale) mode
        assert_rgb_uint8(load_image(real_jpeg, size), size)


@pytest.mark.parametrize(
    ("source", "size", "decoded"),
    [
        ((500, 374), 224, (250, 187)),  # the dataset's photos: half scale, 187 >= 168
        ((4032, 3024), 224, (504, 378)),  # a 12 MP phone photo: an eighth
        ((300, 300), 224, (300, 300)),  # half would be 150 < 168: no reduction
        ((500, 374), 64, (125, 94)),  # a quarter; an eighth would leave 47 < 48
        ((500, 338), 226, (500, 338)),  # 3/4 of 226 is 169.5: half (169) would be too small
    ],
)
def test_jpeg_draft_decodes_at_a_reduced_scale_keeping_three_quarters(
    tmp_path, source, size, decoded
):
    path = save(Image.new("RGB", source, (90, 120, 150)), tmp_path / "a.jpg", quality=80)
    image = Image.open(path)
    image.draft("RGB", draft_box(size))
    assert image.size == decoded
    assert min(image.size) >= 0.75 * size
    assert_rgb_uint8(load_image(path, size), size)


@pytest.mark.parametrize("fmt", ["JPEG", "MPO"])
def test_the_loader_decodes_jpeg_and_mpo_through_draft_box(tmp_path, fmt):
    # MPO is what many phone cameras write: a JPEG whose first frame is the photo.
    frames = [noise((1000, 750), seed=1), noise((1000, 750), seed=2)]
    path = tmp_path / f"photo.{fmt.lower()}"
    more = {"save_all": True, "append_images": frames[1:]} if fmt == "MPO" else {}
    frames[0].save(path, format=fmt, quality=90, **more)
    assert Image.open(path).format == fmt

    def resized(image: Image.Image) -> np.ndarray:
        image.load()
        assert image.mode == "RGB"
        return np.asarray(image.resize((224, 224), Image.Resampling.BILINEAR))

    drafted = Image.open(path)
    drafted.draft("RGB", draft_box(224))
    assert drafted.size == (250, 188)  # a quarter: 188 >= 168
    full = resized(Image.open(path))
    expected = resized(drafted)
    assert not np.array_equal(expected, full)  # the two ways give different pixels
    assert np.array_equal(load_image(path, 224), expected)


def test_rgb_jpeg_keeps_its_color(tmp_path):
    path = save(Image.new("RGB", (64, 48), (200, 30, 40)), tmp_path / "a.jpg", quality=95)
    array = load_image(path, 32)
    assert_rgb_uint8(array, 32)
    assert close(array[16, 16], (200, 30, 40), tolerance=4)


def test_png_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([*RED, *BLUE] + [0] * (256 - 2) * 3)
    image.paste(1, (2, 0, 4, 4))
    path = save(image, tmp_path / "p.png", transparency=0)
    assert Image.open(path).mode == "P"
    array = load_image(path, 4)
    assert_rgb_uint8(array, 4)
    assert close(array[1, 0], WHITE)  # index 0 (red in the palette) is transparent
    assert close(array[1, 3], BLUE)


def test_rgba_png_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (10, 200, 30, 0))  # fully transparent green
    image.putpixel((3, 0), (10, 200, 30, 255))
    image.putpixel((3, 3), (0, 0, 0, 128))
    path = save(image, tmp_path / "rgba.png")
    array = load_image(path, 4)
    assert_rgb_uint8(array, 4)
    assert close(array[0, 0], WHITE)
    assert close(array[0, 3], (10, 200, 30))
    assert close(array[3, 3], (127, 127, 127), tolerance=1)


def test_grayscale_with_alpha_is_composited_on_white(tmp_path):
    image = Image.new("LA", (4, 4), (0, 0))
    image.putpixel((1, 1), (50, 255))
    array = load_image(save(image, tmp_path / "la.png"), 4)
    assert close(array[0, 0], WHITE)
    assert close(array[1, 1], (50, 50, 50))


def test_grayscale_l(tmp_path):
    array = load_image(save(Image.new("L", (8, 8), 100), tmp_path / "l.png"), 8)
    assert_rgb_uint8(array, 8)
    assert (array == 100).all()


def test_one_bit_png(tmp_path):
    image = Image.new("1", (8, 8), 0)
    image.paste(1, (4, 0, 8, 8))
    array = load_image(save(image, tmp_path / "bw.png"), 8)
    assert close(array[0, 0], (0, 0, 0))
    assert close(array[0, 7], WHITE)


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    values = np.array([[0, 65535], [32896, 65535]], dtype="<u2")
    image = Image.frombytes("I;16", (2, 2), values.tobytes())
    path = save(image, tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    array = load_image(path, 2)
    assert_rgb_uint8(array, 2)
    assert array[..., 0].tolist() == [[0, 255], [128, 255]]
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()


def test_cmyk_jpeg(tmp_path):
    path = save(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    assert Image.open(path).mode == "CMYK"
    array = load_image(path, 32)
    assert_rgb_uint8(array, 32)
    assert close(array[16, 16], RED, tolerance=8)


def test_exif_orientation_6_is_applied(tmp_path):
    """40x20 stored with a red left half; orientation 6 (rotate 90° clockwise) puts red on top."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(halves(RED, BLUE, (40, 20)), tmp_path / "rotated.jpg", exif=exif, quality=95)
    array = load_image(path, 32)
    assert_rgb_uint8(array, 32)
    top_left, top_right = array[2, 2], array[2, 29]
    bottom_left, bottom_right = array[29, 2], array[29, 29]
    for pixel in (top_left, top_right):
        assert close(pixel, RED, tolerance=40), pixel
    for pixel in (bottom_left, bottom_right):  # unrotated, bottom-left would be red
        assert close(pixel, BLUE, tolerance=40), pixel


def test_gif(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([*RED, *GREEN] + [0] * (256 - 2) * 3)
    image.paste(1, (2, 0, 4, 4))
    array = load_image(save(image, tmp_path / "a.gif"), 4)
    assert_rgb_uint8(array, 4)
    assert close(array[0, 0], RED)
    assert close(array[0, 3], GREEN)


def test_animated_gif_uses_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), RED), Image.new("RGB", (4, 4), BLUE)]
    path = save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert close(load_image(path, 4)[0, 0], RED)


def test_webp_lossless(tmp_path):
    path = save(halves(RED, GREEN, (8, 8)), tmp_path / "a.webp", lossless=True)
    array = load_image(path, 8)
    assert_rgb_uint8(array, 8)
    assert close(array[0, 0], RED)
    assert close(array[0, 7], GREEN)


@pytest.mark.parametrize("suffix", [".bmp", ".tiff", ".ppm"])
def test_other_lossless_formats(tmp_path, suffix):
    source = noise((8, 8), seed=3)
    array = load_image(save(source, tmp_path / f"a{suffix}"), 8)
    assert_rgb_uint8(array, 8)
    assert np.array_equal(array, np.asarray(source))


def test_wrong_suffix_does_not_matter(tmp_path):
    path = save(Image.new("RGB", (8, 8), BLUE), tmp_path / "really_a_png.jpg", format="PNG")
    assert close(load_image(path, 8)[4, 4], BLUE)


def test_non_square_input_fills_the_square(tmp_path):
    array = load_image(save(halves(RED, BLUE, (300, 20)), tmp_path / "wide.png"), 32)
    assert_rgb_uint8(array, 32)
    assert close(array[31, 0], RED) and close(array[0, 31], BLUE)


# ---------------------------------------------------------------------------------------------
# Bad input: BadImage with a reason
# ---------------------------------------------------------------------------------------------


def bad_reason(path: Path, size: int = SIZE) -> str:
    with pytest.raises(BadImage) as info:
        load_image(path, size)
    return str(info.value)


def test_zero_bytes(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert bad_reason(path) == "empty file (0 bytes)"


def test_truncated_jpeg(tmp_path, real_jpeg):
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    data = real_jpeg.read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    reason = bad_reason(path)
    assert reason.startswith("cannot decode: image file is truncated"), reason


def test_text_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_bytes(TEXT_BYTES)
    assert bad_reason(path) == "not an image: text"


def test_html_named_jpg(tmp_path):
    path = tmp_path / "download.jpg"
    path.write_bytes(b"\n  " + HTML_BYTES)
    assert bad_reason(path) == "not an image: HTML"


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(random_bytes())
    assert bad_reason(path) == "not an image Pillow can read"


@pytest.mark.parametrize(
    ("width", "height"),
    [(20000, 20000), (10000, 10000)],  # over twice Pillow's limit (error), over once (warning)
)
def test_decompression_bomb_is_refused_before_decoding(tmp_path, width, height):
    assert width * height > MAX_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(width, height))
    assert path.stat().st_size < 100
    # The header is a valid PNG IHDR (CRC included): only the size it declares is hostile.
    data = path.read_bytes()
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (width, height)
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29])
    reason = bad_reason(path)
    assert reason.startswith("decompression bomb:")
    assert f"({width * height} pixels) exceeds" in reason


def test_bomb_check_leaves_no_warning_filter_behind(tmp_path):
    import warnings

    path = tmp_path / "bomb.png"
    path.write_bytes(png_declaring(10000, 10000))
    before = list(warnings.filters)
    bad_reason(path)
    assert warnings.filters == before


def test_directory_cannot_be_read(tmp_path):
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    assert bad_reason(folder) == "cannot read: Is a directory"


def test_missing_file_cannot_be_read(tmp_path):
    assert bad_reason(tmp_path / "gone.jpg") == "cannot read: No such file or directory"


def test_decode_image_rejects_empty_bytes_directly():
    with pytest.raises(BadImage, match=r"^empty file \(0 bytes\)$"):
        decode_image(b"", SIZE)


# ---------------------------------------------------------------------------------------------
# Training and serving see identical pixels; the model preprocesses as MobileNetV2 expects
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def varied_files(tmp_path_factory, dataset_root) -> list[Path]:
    folder = tmp_path_factory.mktemp("varied")
    exif = Image.Exif()
    exif[0x0112] = 6
    files = [
        dataset_root / "train" / "cats" / "cat.0.jpg",
        dataset_root / "train" / "dogs" / "dog.0.jpg",
        dataset_root / "validation" / "cats" / "cat.2000.jpg",
        save(noise((300, 200), seed=1, mode="RGBA"), folder / "rgba.png"),
        save(noise((640, 480), seed=2), folder / "big.jpg", exif=exif),
        save(noise((50, 70), seed=3, mode="L"), folder / "gray.webp"),
    ]
    for path in files:
        assert path.is_file(), path
    return files


@pytest.mark.parametrize("size", [64, SIZE])
def test_training_and_serving_decode_identical_arrays(varied_files, size):
    samples = [
        Sample(p, i % 2, hashlib.sha256(p.read_bytes()).hexdigest())
        for i, p in enumerate(varied_files)
    ]
    x, y, skipped = load_arrays(samples, image_size=size, workers=3)
    assert skipped == []
    assert x.dtype == np.uint8 and x.shape == (len(samples), size, size, 3)
    assert y.tolist() == [s.label for s in samples]
    for row, path in enumerate(varied_files):
        served = decode_image(read_bytes(path), size)  # what the daemon decodes
        loaded = load_image(path, size)  # what classify and evaluate load
        assert np.array_equal(x[row], loaded), path
        assert np.array_equal(x[row], served), path
        assert np.array_equal(load_image(path, size), loaded), f"{path} is not deterministic"


def test_model_preprocessing_equals_mobilenet_v2_preprocess_input():
    import keras

    from inboxsort.trainer.recipe import build_model

    model = build_model(image_size=SIZE, num_classes=2, weights=None)
    layer = model.get_layer("preprocess_input")
    # From the raw-pixel input to the preprocessing output, in inference mode: augmentation
    # must be the identity there, so this is exactly what serving feeds the backbone.
    head = keras.Model(model.input, layer.output)
    pixels = np.random.default_rng(7).integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32)
    pixels[0, 0, 0] = (0, 255, 128)
    got = np.asarray(head(pixels, training=False))
    expected = keras.applications.mobilenet_v2.preprocess_input(pixels.copy())
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert got.min() >= -1.0 and got.max() <= 1.0
    assert got[0, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 128 / 127.5 - 1], abs=1e-6)
