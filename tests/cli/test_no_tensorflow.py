"""A version that serves with LiteRT never brings TensorFlow (or Keras) into a serving process.

Each command runs in a fresh interpreter through `inboxsort.cli.main(argv)`, on a site whose
active version is the tiny model with the flatbuffer `inboxsort train` gave it; afterwards the
interpreter says which of tensorflow and keras it imported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.checksite import healthy_setup

MARK = "MODULES "
# main() returns the exit code; the last line says what got imported.
PROBE = (
    "import json, sys\n"
    "from inboxsort.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print()\n"
    f"print({MARK!r} + json.dumps([m for m in ('tensorflow', 'keras') if m in sys.modules]))\n"
    "sys.exit(rc)\n"
)


@pytest.fixture(scope="module")
def served_site(tmp_path_factory, tiny_model, config_writer, dataset_root) -> Path:
    """A healthy site (tiny model active as version 1) with two images waiting in the inbox."""
    root = tmp_path_factory.mktemp("no_tensorflow")
    config = healthy_setup(root / "site", tiny_model, config_writer)
    for name in ("cats", "dogs"):
        source = sorted((dataset_root / "validation" / name).glob("*.jpg"))[0]
        shutil.copyfile(source, root / "site" / "inbox" / f"{name}.jpg")
    return config


def run_probe(config: Path, cli_env: dict[str, str], *argv: str) -> tuple[int, str, list[str]]:
    """(exit code, output, modules of tensorflow/keras imported) of one command."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "--config", str(config), *argv],
        cwd=config.parent,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert lines and lines[-1].startswith(MARK), done.stdout + done.stderr[-3000:]
    return done.returncode, done.stdout + done.stderr, json.loads(lines[-1][len(MARK) :])


@pytest.mark.parametrize(
    "argv",
    [
        ("classify", "{image}"),
        ("run", "--once"),
        ("query", "--format", "json"),
        ("stats",),
        ("doctor",),
    ],
    ids=lambda argv: argv[0],
)
def test_serving_commands_never_import_tensorflow(served_site, cli_env, dataset_root, argv):
    image = sorted((dataset_root / "validation" / "cats").glob("*.jpg"))[1]
    args = [str(image) if a == "{image}" else a for a in argv]
    code, output, imported = run_probe(served_site, cli_env, *args)
    assert code == 0, output[-3000:]
    assert imported == [], f"`inboxsort {' '.join(args)}` imported {imported}"
    if argv[0] == "classify":
        assert output.splitlines()[0].split("\t")[0] == str(image)
    if argv[0] == "doctor":
        model_line = next(line for line in output.splitlines() if "  model: " in line)
        assert model_line.startswith("OK    model: version 1 (")
        assert "; serves with litert; loaded and predicted in " in model_line


def test_run_once_filed_the_inbox_with_litert(served_site, cli_env):
    # Whatever order the parametrized tests ran in: run --once again is a no-op if it ran.
    code, output, imported = run_probe(served_site, cli_env, "run", "--once")
    assert code == 0 and imported == [], output[-3000:]
    library = served_site.parent / "library"
    filed = sorted(p.name for p in library.rglob("*.jpg"))
    assert filed == ["cats.jpg", "dogs.jpg"]
    inbox = served_site.parent / "inbox"
    assert [p for p in inbox.iterdir() if not p.name.startswith(".")] == []
