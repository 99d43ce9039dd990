"""What a new user meets first: the bare command, options after the command, doctor outside a
project, and classify on a folder (issue 15, "Confused")."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from inboxsort.cli import build_parser, main

COMMANDS = ("run", "train", "classify", "models", "retrain", "label", "query", "stats", "doctor")


def command_parser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def test_a_bare_inboxsort_lists_the_commands_and_exits_2(run_cli):
    result = run_cli()
    assert result.returncode == 2
    assert result.stderr.startswith("usage: inboxsort")
    for name in COMMANDS:
        assert f"\n    {name} " in result.stderr, name


@pytest.mark.parametrize(
    ("argv", "config", "verbose"),
    [
        (["query", "--config", "after.toml"], "after.toml", False),
        (["--config", "before.toml", "query"], "before.toml", False),
        (["--config", "before.toml", "query", "--config", "after.toml", "-v"], "after.toml", True),
        (["models", "list", "--json", "--config", "after.toml"], "after.toml", False),
        (["-v", "db", "upgrade"], None, True),
    ],
)
def test_config_and_verbose_are_taken_before_or_after_the_command(argv, config, verbose):
    args = build_parser().parse_args(argv)
    assert args.config == (Path(config) if config else None)
    assert args.verbose is verbose


def test_a_config_after_the_command_is_used(run_cli, make_config, tmp_path: Path):
    config = make_config()
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    result = run_cli("db", "upgrade", "--config", config, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("database at revision ")
    assert (config.parent / "db.sqlite3").is_file()  # the config's database
    assert list(cwd.iterdir()) == []  # not the defaults under the current folder


def test_doctor_without_a_config_says_so_and_creates_nothing(run_cli, tmp_path: Path):
    result = run_cli("doctor", cwd=tmp_path, env={"INBOXSORT_CONFIG": None})
    assert result.returncode == 1
    first, defaults = result.stdout.splitlines()
    assert first.startswith("FAIL  config: no config file found (no --config, $INBOXSORT_CONFIG")
    assert f"no config.toml in {tmp_path}" in first and "nothing was checked or created" in first
    assert f"inbox {tmp_path / 'var' / 'inbox'}" in defaults
    assert f"database sqlite:///{tmp_path / 'var' / 'inboxsort.db'}" in defaults
    assert list(tmp_path.iterdir()) == []


def test_classify_documents_every_flag():
    classify = command_parser("classify")
    undocumented = [a.option_strings or a.dest for a in classify._actions if not a.help]
    assert undocumented == []
    text = classify.format_help()
    for flag in ("--model VERSION", "--json", "--recursive", "--config"):
        assert flag in text


@pytest.fixture
def photos(tmp_path: Path, dataset_root: Path) -> Path:
    """A folder: a cat and a dog, a hidden file, and a dog in a subfolder."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    validation = dataset_root / "validation"
    shutil.copyfile(validation / "cats" / "cat.2000.jpg", folder / "a.jpg")
    shutil.copyfile(validation / "dogs" / "dog.2000.jpg", folder / "b.jpg")
    shutil.copyfile(validation / "dogs" / "dog.2001.jpg", folder / ".hidden.jpg")
    shutil.copyfile(validation / "dogs" / "dog.2002.jpg", folder / "more" / "c.jpg")
    return folder


@pytest.mark.parametrize("recursive", [False, True])
def test_classify_a_folder_classifies_its_images(photos: Path, capsys, recursive: bool):
    config = photos.parent / "config.toml"
    config.write_text("")  # every default: the shipped model
    argv = ["--config", str(config), "classify", str(photos), "--json"]
    assert main([*argv, "--recursive"] if recursive else argv) == 0
    rows = json.loads(capsys.readouterr().out)
    names = ["a.jpg", "b.jpg", "more/c.jpg"] if recursive else ["a.jpg", "b.jpg"]
    assert [str(Path(r["path"]).relative_to(photos)) for r in rows] == names
    assert [r["label"] for r in rows] == ["cats", "dogs", "dogs"][: len(names)]
