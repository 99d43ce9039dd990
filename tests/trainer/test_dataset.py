"""Finding labelled images and splitting them deterministically by content hash."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from inboxsort.errors import ModelError
from inboxsort.files import file_sha256
from inboxsort.trainer.dataset import (
    Splits,
    discover,
    discover_flat,
    hash_fraction,
    load_arrays,
)
from tests.helpers.imagegen import TEXT_BYTES, copy_first_images, noise, save, write_noise_images


def fraction_of(path: Path) -> float:
    """The split position computed independently of the code under test."""
    return int(hashlib.sha256(path.read_bytes()).hexdigest()[:12], 16) / 2**48


def content_view(splits: Splits) -> dict[str, list[tuple[int, str]]]:
    """Splits as (label, content hash) per split: what must not depend on names or order."""
    return {
        name: sorted((s.label, s.sha256) for s in getattr(splits, name))
        for name in ("train", "validation", "test")
    }


@pytest.fixture(scope="module")
def tv_root(tmp_path_factory, dataset_root) -> Path:
    """The tutorial's layout in miniature: train/ 6 per class, validation/ 25 per class."""
    root = tmp_path_factory.mktemp("tv")
    for name in ("cats", "dogs"):
        copy_first_images(dataset_root / "train" / name, root / "train" / name, 6)
        copy_first_images(dataset_root / "validation" / name, root / "validation" / name, 25)
    return root


# ---------------------------------------------------------------------------------------------
# train/ + validation/ layout
# ---------------------------------------------------------------------------------------------


def test_train_validation_layout_moves_20_percent_of_validation_to_test_by_hash(tv_root):
    splits = discover(tv_root)
    assert splits.classes == ("cats", "dogs")
    assert len(splits.train) == 12
    assert {s.path.parent.parent.name for s in splits.train} == {"train"}
    held = splits.validation + splits.test
    assert len(held) == 50
    assert {s.path.parent.parent.name for s in held} == {"validation"}
    for sample in splits.test:
        assert fraction_of(sample.path) < 0.2, sample.path
    for sample in splits.validation:
        assert fraction_of(sample.path) >= 0.2, sample.path
    assert 3 <= len(splits.test) <= 18  # about 20% of 50
    for sample in splits.train + held:
        assert sample.label == splits.classes.index(sample.path.parent.name)
        assert sample.sha256 == hashlib.sha256(sample.path.read_bytes()).hexdigest()


def test_discover_is_deterministic(tv_root):
    first, second = discover(tv_root), discover(tv_root)
    assert first == second
    assert first.fingerprint() == second.fingerprint()


def test_split_depends_on_content_not_names_or_order(tv_root, tmp_path):
    """Copy every file elsewhere under other names, in reverse order: same splits by content."""
    original = discover(tv_root)
    other = tmp_path / "copy"
    for split in ("validation", "train"):
        for name in ("dogs", "cats"):
            files = sorted((tv_root / split / name).iterdir(), reverse=True)
            (other / split / name).mkdir(parents=True)
            for i, path in enumerate(files):
                shutil.copyfile(path, other / split / name / f"renamed_{i:03d}.JPG")
    copied = discover(other)
    assert copied.classes == original.classes
    assert content_view(copied) == content_view(original)
    assert copied.fingerprint() == original.fingerprint()
    assert {s.path.name for s in copied.train} != {s.path.name for s in original.train}


def test_validation_missing_a_class_folder(tv_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tv_root, root)
    shutil.rmtree(root / "validation" / "dogs")
    with pytest.raises(ModelError) as info:
        discover(root)
    assert str(info.value) == f"data: {root / 'validation'} has no folder for class 'dogs'"


# ---------------------------------------------------------------------------------------------
# Flat layout: DIR/<class>/
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flat_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("flat")
    write_noise_images(root / "b_class", 150, seed=0)
    write_noise_images(root / "a_class", 150, seed=1000)
    return root


def test_flat_layout_splits_80_10_10_by_hash(flat_root):
    splits = discover(flat_root)
    assert splits.classes == ("a_class", "b_class")
    total = len(splits.train) + len(splits.validation) + len(splits.test)
    assert total == 300
    for sample in splits.train:
        assert fraction_of(sample.path) < 0.8
    for sample in splits.validation:
        assert 0.8 <= fraction_of(sample.path) < 0.9
    for sample in splits.test:
        assert fraction_of(sample.path) >= 0.9
    assert 0.7 <= len(splits.train) / total <= 0.9
    assert 0.04 <= len(splits.validation) / total <= 0.17
    assert 0.04 <= len(splits.test) / total <= 0.17
    for sample in splits.train + splits.validation + splits.test:
        assert sample.label == splits.classes.index(sample.path.parent.name)


def test_flat_layout_is_deterministic(flat_root):
    first, second = discover(flat_root), discover(flat_root)
    assert first == second
    assert content_view(first) == content_view(second)


def test_class_names_are_sorted_and_index_the_labels(tmp_path):
    for i, name in enumerate(["zebra", "ant", "bee"]):
        write_noise_images(tmp_path / name, 10, seed=100 * i)
    splits = discover(tmp_path)
    assert splits.classes == ("ant", "bee", "zebra")
    everything = splits.train + splits.validation + splits.test
    assert len(everything) == 30
    assert {s.label for s in everything if s.path.parent.name == "zebra"} == {2}
    assert {s.label for s in everything if s.path.parent.name == "ant"} == {0}


def test_hidden_underscore_and_non_image_entries_are_ignored(tmp_path):
    write_noise_images(tmp_path / "cats", 5, seed=0)
    write_noise_images(tmp_path / "dogs", 5, seed=50)
    write_noise_images(tmp_path / "_review", 5, seed=100)  # the library's review folder
    write_noise_images(tmp_path / ".thumbs", 5, seed=150)
    save(noise(seed=200), tmp_path / "cats" / ".hidden.png")
    (tmp_path / "cats" / "notes.txt").write_bytes(TEXT_BYTES)
    save(noise(seed=201), tmp_path / "dogs" / "nested" / "deep.JPEG")  # sub-folders count
    (tmp_path / "loose.png").write_bytes(b"")
    splits = discover(tmp_path)
    assert splits.classes == ("cats", "dogs")
    everything = splits.train + splits.validation + splits.test
    assert len({s.path for s in everything}) == len(everything) == 11
    names = {s.path.name for s in everything}
    assert "deep.JPEG" in names
    assert not {".hidden.png", "notes.txt", "loose.png"} & names


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


def test_one_class_folder_is_refused(tmp_path):
    write_noise_images(tmp_path / "cats", 5)
    with pytest.raises(ModelError) as info:
        discover(tmp_path)
    assert str(info.value) == (
        f"data: {tmp_path} needs one subfolder per class (at least 2), found ['cats']"
    )


def test_one_class_in_train_layout_is_refused(tmp_path):
    write_noise_images(tmp_path / "train" / "cats", 5)
    write_noise_images(tmp_path / "validation" / "cats", 5, seed=9)
    with pytest.raises(ModelError, match=r"needs one subfolder per class \(at least 2\)"):
        discover(tmp_path)


def test_empty_folder_is_refused(tmp_path):
    with pytest.raises(ModelError, match=r"found \[\]$"):
        discover(tmp_path)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(ModelError) as info:
        discover(tmp_path / "nope")
    assert str(info.value) == f"data: {tmp_path / 'nope'} is not a folder"


def test_class_folders_without_images_are_refused(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "readme.txt").write_bytes(TEXT_BYTES)
    with pytest.raises(ModelError) as info:
        discover(tmp_path)
    assert str(info.value) == f"data: no training images found under {tmp_path}"


# ---------------------------------------------------------------------------------------------
# Fingerprint
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def small_flat(tmp_path) -> Path:
    root = tmp_path / "data"
    write_noise_images(root / "cats", 12, seed=0)
    write_noise_images(root / "dogs", 12, seed=500)
    return root


def test_fingerprint_changes_when_one_file_changes(small_flat):
    before = discover(small_flat).fingerprint()
    save(noise((8, 8), seed=999), small_flat / "cats" / "img_003.png")
    after = discover(small_flat).fingerprint()
    assert after != before
    assert len(after) == 64 and int(after, 16) >= 0


def test_fingerprint_ignores_names_but_not_labels(small_flat):
    before = discover(small_flat).fingerprint()
    (small_flat / "cats" / "img_003.png").rename(small_flat / "cats" / "renamed.png")
    assert discover(small_flat).fingerprint() == before
    (small_flat / "cats" / "renamed.png").rename(small_flat / "dogs" / "renamed.png")
    assert discover(small_flat).fingerprint() != before


def test_fingerprint_changes_when_a_file_is_added(small_flat):
    before = discover(small_flat).fingerprint()
    save(noise((8, 8), seed=777), small_flat / "dogs" / "new.png")
    assert discover(small_flat).fingerprint() != before


def test_hash_fraction_maps_hashes_into_unit_interval():
    assert hash_fraction("0" * 64) == 0.0
    assert hash_fraction("f" * 64) == pytest.approx(1 - 2**-48)
    assert hash_fraction("8" + "0" * 63) == 0.5


def test_file_sha256_matches_hashlib(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(np.random.default_rng(0).bytes(3 * (1 << 20) + 17))  # several chunks
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# discover_flat (evaluate) and load_arrays
# ---------------------------------------------------------------------------------------------


def test_discover_flat_uses_the_models_class_order_and_ignores_other_folders(tmp_path):
    write_noise_images(tmp_path / "dogs", 3, seed=0)
    write_noise_images(tmp_path / "cats", 2, seed=10)
    write_noise_images(tmp_path / "birds", 4, seed=20)
    samples = discover_flat(tmp_path, ("dogs", "cats", "fish"))
    assert [(s.path.parent.name, s.label) for s in samples] == [("dogs", 0)] * 3 + [("cats", 1)] * 2


def test_discover_flat_without_any_class_folder(tmp_path):
    write_noise_images(tmp_path / "birds", 2)
    with pytest.raises(ModelError) as info:
        discover_flat(tmp_path, ("cats", "dogs"))
    assert str(info.value) == f"data: {tmp_path} holds none of the class folders ['cats', 'dogs']"


def test_load_arrays_skips_bad_files_and_keeps_labels_aligned(tmp_path):
    write_noise_images(tmp_path / "cats", 3, seed=0, size=(20, 10))
    write_noise_images(tmp_path / "dogs", 3, seed=30, size=(10, 20))
    (tmp_path / "cats" / "img_001.png").write_bytes(TEXT_BYTES)  # now a text file
    (tmp_path / "dogs" / "zz_empty.jpg").write_bytes(b"")
    samples = discover_flat(tmp_path, ("cats", "dogs"))
    assert len(samples) == 7
    x, y, skipped = load_arrays(samples, image_size=16, workers=2)
    assert x.shape == (5, 16, 16, 3) and x.dtype == np.uint8
    assert y.tolist() == [0, 0, 1, 1, 1]
    assert sorted((p.name, why) for p, why in skipped) == [
        ("img_001.png", "not an image: text"),
        ("zz_empty.jpg", "empty file (0 bytes)"),
    ]
    from inboxsort.imageio import load_image

    bad = {p for p, _ in skipped}
    good = [s for s in samples if s.path not in bad]
    assert len(good) == 5
    for row, sample in enumerate(good):
        assert np.array_equal(x[row], load_image(sample.path, 16))


def test_load_arrays_of_nothing(tmp_path):
    x, y, skipped = load_arrays([], image_size=16)
    assert x.shape == (0, 16, 16, 3) and y.shape == (0,) and skipped == []
