"""Every model version gets a LiteRT flatbuffer: after training, and with `models export` later.

Real files, a real SQLite database and the session's tiny model; the one conversion here runs on
a copy of it that lost its flatbuffer, as versions registered before LiteRT serving have none.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inboxsort.cli import build_parser
from inboxsort.config import Config, TrainConfig, load_config
from inboxsort.db import SOURCE_MOVE, Correction, open_database
from inboxsort.errors import ConfigError
from inboxsort.files import file_sha256
from inboxsort.model.artifact import CARD_FILE, MODEL_FILE, read_card
from inboxsort.model.export import Agreement
from inboxsort.model.litert import AGREEMENT_BOUND, LITERT_FILE
from inboxsort.model.registry import ModelStore
from inboxsort.trainer import flatbuffer as flatbuffer_module
from inboxsort.trainer.dataset import discover
from inboxsort.trainer.flatbuffer import (
    LIBRARY_PROBE_MAX,
    first_nonempty,
    probe_images,
)
from inboxsort.trainer.retrain.run import SavedModelFile
from inboxsort.trainer.train import train
from tests.helpers.filedrows import file_image, forget_stored_files
from tests.helpers.imagegen import TEXT_BYTES, copy_first_images

CLASSES = ["cats", "dogs"]


class Site:
    """A configured folder with a database; versions registered as a test needs them."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.config: Config = load_config(config_path)
        self.db = open_database(self.config.database.url)
        self.store = ModelStore(self.config.paths.models, self.db)

    def register_without_flatbuffer(self, model_folder: Path, card: dict[str, Any]) -> int:
        """As versions registered before LiteRT serving were: model.keras and card.json."""
        info = self.store.register(
            SavedModelFile(model_folder / MODEL_FILE), card, parent=None, activate=True
        )
        return info.version

    def command(self, *argv: str) -> int:
        """Run one command's handler in this process, as main() would."""
        args = build_parser().parse_args(["--config", str(self.config_path), *argv])
        return int(args.handler(self.config, args) or 0)


@pytest.fixture
def site(make_config) -> Any:
    made = Site(make_config())
    yield made
    made.db.close()


def run_command(site: Site, capsys, *argv: str) -> tuple[int, str, str]:
    code = site.command(*argv)
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------------------------------------
# After training
# ---------------------------------------------------------------------------------------------


def test_first_nonempty_names_the_split_it_took() -> None:
    empty, three = np.zeros((0, 4, 4, 3), np.uint8), np.zeros((3, 4, 4, 3), np.uint8)
    pixels, name = first_nonempty((empty, "test"), (three, "validation"), (three, "training"))
    assert len(pixels) == 3 and name == "the 3 validation images"
    assert first_nonempty((empty, "test"))[1] == "no images"


def test_a_conversion_that_raises_keeps_the_trained_model(
    tiny_data, monkeypatch, caplog, make_config, capsys
) -> None:
    """train() returns the model and a card without an artifact; `train` registers it anyway."""

    def broken(model: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the converter\nfell over")

    monkeypatch.setattr(flatbuffer_module, "convert", broken)
    caplog.set_level(logging.INFO, logger="inboxsort")
    # No epochs: the recipe's model as built, which is all a conversion needs.
    options = TrainConfig(image_size=160, epochs=0, fine_tune_epochs=0)
    result = train(tiny_data, options, verbose=0)
    assert result.litert is None and "litert" not in result.card
    assert result.litert_error == "RuntimeError: the converter fell over"
    assert "LiteRT conversion failed; the model will serve with Keras: RuntimeError" in caplog.text

    # `inboxsort train` registers it all the same, and says it serves with Keras.
    monkeypatch.setattr("inboxsort.trainer.train.train", lambda *a, **k: result)
    site = Site(make_config())
    try:
        code, out, _ = run_command(site, capsys, "train", "--data", str(tiny_data), "--activate")
        assert code == 0
        folder = site.store.folder(1)
        assert sorted(p.name for p in folder.iterdir()) == [CARD_FILE, MODEL_FILE]
        assert site.store.serving(1)[0] == "keras"
        assert out.splitlines()[-1] == (
            "  litert      not converted, serves with Keras: RuntimeError: the converter fell over"
        )
        assert site.store.load().runtime == "keras"
    finally:
        site.db.close()


def test_a_gate_on_no_images_does_not_pass() -> None:
    # What a conversion checked on nothing would record: it serves with Keras.
    nothing = Agreement(probe="no images", n=0, labels_equal=0, max_abs_diff=0.0)
    assert not nothing.agrees
    assert Agreement(probe="x", n=4, labels_equal=4, max_abs_diff=AGREEMENT_BOUND).agrees
    assert not Agreement(probe="x", n=4, labels_equal=3, max_abs_diff=0.0).agrees
    assert not Agreement(probe="x", n=4, labels_equal=4, max_abs_diff=2 * AGREEMENT_BOUND).agrees


# ---------------------------------------------------------------------------------------------
# Probe images for `models export`
# ---------------------------------------------------------------------------------------------


def test_probe_images_prefer_data_then_the_test_split_then_the_library(
    make_config, tiny_data, dataset_root, tmp_path
) -> None:
    config = load_config(make_config(f"[train]\ndata = {json.dumps(str(tiny_data))}\n"))
    with open_database(config.database.url) as db:
        data = tmp_path / "probe"
        for name in CLASSES:
            copy_first_images(dataset_root / "validation" / name, data / name, 2)
        (data / "cats" / "notes.jpg").write_bytes(TEXT_BYTES)
        given = probe_images(config, db, CLASSES, data)
        assert given.source == f"images in {data}" and len(given.paths) == 5
        pixels, name = given.pixels(96)
        assert pixels.shape == (4, 96, 96, 3) and name == f"4 images in {data}"

        split = probe_images(config, db, CLASSES, None)
        test = discover(tiny_data).test
        assert sorted(split.paths) == sorted(s.path for s in test)
        assert split.source == f"test images of {tiny_data}"

        empty = tmp_path / "empty"
        for name in CLASSES:
            (empty / name).mkdir(parents=True)
        with pytest.raises(ConfigError, match=r"no images in its folders for \['cats', 'dogs'\]"):
            probe_images(config, db, CLASSES, empty)


def test_probe_images_from_the_library_are_confirmed_filings_only(make_config, dataset_root):
    config = load_config(make_config())
    library = config.paths.library
    sources = sorted((dataset_root / "validation" / "cats").glob("*.jpg"))[:6]
    with open_database(config.database.url) as db:
        with pytest.raises(ConfigError) as refused:
            probe_images(config, db, CLASSES, None)
        assert "pass --data DIR" in str(refused.value)
        confirmed = [
            file_image(db, library / "cats" / p.name, "cats", source=p) for p in sources[:3]
        ]
        file_image(db, library / "_review" / sources[3].name, "cats", source=sources[3])
        file_image(db, library / "birds" / sources[4].name, "birds", source=sources[4])
        corrected = file_image(db, library / "cats" / sources[5].name, "cats", source=sources[5])
        with db.begin() as session:
            session.add(Correction(image_id=corrected, new_label="cats", source=SOURCE_MOVE))
        (library / "cats" / sources[2].name).unlink()  # filed, then deleted by the user
        probe = probe_images(config, db, CLASSES, None)
    assert confirmed and sorted(probe.paths) == sorted(
        library / "cats" / p.name for p in sources[:2]
    )
    assert probe.source == f"confirmed images in {library}"
    assert LIBRARY_PROBE_MAX == 200


# ---------------------------------------------------------------------------------------------
# `inboxsort models export` and `models list`
# ---------------------------------------------------------------------------------------------


def test_models_export_adds_a_flatbuffer_to_a_version_without_one(
    site, tiny_model, tiny_card, dataset_root, tmp_path, capsys
) -> None:
    version = site.register_without_flatbuffer(tiny_model, tiny_card)
    folder = site.store.folder(version)
    keras_before = file_sha256(folder / MODEL_FILE)
    assert LITERT_FILE not in {p.name for p in folder.iterdir()}
    listed = json.loads(run_command(site, capsys, "models", "list", "--json")[1])
    assert listed[1]["runtime"] == "keras"
    assert "no LiteRT artifact" in listed[1]["runtime_reason"]

    data = tmp_path / "probe"
    for name in CLASSES:
        copy_first_images(dataset_root / "validation" / name, data / name, 4)
    code, out, err = run_command(site, capsys, "models", "export", "--data", str(data))
    assert (code, err) == (0, "")
    assert out == (
        f"version 1: 8/8 labels equal to Keras on 8 images in {data}, largest probability "
        f"difference {read_card(folder)['litert']['agreement']['max_abs_diff']:.2g} "
        f"(bound {AGREEMENT_BOUND:g}); serves with LiteRT\n"
        "version 1 is active: restart a running daemon to serve it with LiteRT\n"
    )
    card = read_card(folder)
    entry = card["litert"]
    assert entry["agrees"] is True and entry["sha256"] == file_sha256(folder / LITERT_FILE)
    assert entry["agreement"]["n"] == 8 and entry["agreement"]["labels_equal"] == 8
    assert {k: v for k, v in card.items() if k != "litert"} == {
        k: v for k, v in read_card(tiny_model).items() if k != "litert"
    } | {"version": 1, "parent": None}
    assert file_sha256(folder / MODEL_FILE) == keras_before  # never touched
    assert sorted(p.name for p in folder.iterdir()) == [CARD_FILE, MODEL_FILE, LITERT_FILE]
    assert site.store.load().runtime == "litert"

    # Nothing left to do: a second run says so and converts nothing.
    assert run_command(site, capsys, "models", "export")[:2] == (
        0,
        "every version already has a LiteRT flatbuffer that agrees with Keras\n",
    )
    assert run_command(site, capsys, "models", "export", "1")[1] == (
        "version 1 already has a LiteRT flatbuffer that agrees with Keras\n"
    )
    code, out, _ = run_command(site, capsys, "models", "list")
    assert code == 0 and "  litert  " in out.splitlines()[2]  # a header, the shipped model, v1


def test_models_export_without_probe_images_refuses_and_names_data(
    site, tiny_model, tiny_card, capsys
) -> None:
    site.register_without_flatbuffer(tiny_model, tiny_card)
    with pytest.raises(ConfigError) as refused:
        site.command("models", "export")
    message = str(refused.value)
    assert message.startswith("no images to check the LiteRT flatbuffer against Keras on: ")
    assert "pass --data DIR" in message
    assert sorted(p.name for p in site.store.folder(1).iterdir()) == [CARD_FILE, MODEL_FILE]
    out = run_command(site, capsys, "models", "list")[1]
    line = out.splitlines()[2]  # a header, the shipped model, then version 1
    assert line.startswith("*    1  ") and "  keras   " in line
    assert line.endswith("(it has no LiteRT artifact (`inboxsort models export` makes one))")


def test_models_export_of_an_unknown_version_is_an_error(site) -> None:
    from inboxsort.errors import ModelError

    with pytest.raises(ModelError, match=r"^model version 5 is not registered$"):
        site.command("models", "export", "5")


def test_a_damaged_version_folder_is_listed_as_serving_nothing(
    site, tiny_model, tiny_card, capsys
) -> None:
    site.register_without_flatbuffer(tiny_model, tiny_card)
    shutil.rmtree(site.store.folder(1))
    # With its files in the database the folder is fetched again (model/lineage.py) ...
    entries = json.loads(run_command(site, capsys, "models", "list", "--json")[1])
    assert entries[1]["runtime"] == "keras"
    # ... without them (a version registered before 0004) nothing can serve it.
    forget_stored_files(site.store.db, 1)
    shutil.rmtree(site.store.folder(1))
    entries = json.loads(run_command(site, capsys, "models", "list", "--json")[1])
    assert entries[0]["runtime"] == "litert" and entries[0]["runtime_reason"] is None
    assert entries[1]["runtime"] == "none" and "unreadable" in entries[1]["runtime_reason"]
