"""config.toml parsing: defaults, the shipped file, every kind of error, paths, precedence."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import tomllib
from pathlib import Path

import pytest

from inboxsort.config import (
    ENV_VAR,
    BatchConfig,
    Config,
    DatabaseConfig,
    FilingConfig,
    LoggingConfig,
    PathsConfig,
    RetrainConfig,
    TrainConfig,
    WatchConfig,
    WebConfig,
    find_config,
    load_config,
)
from inboxsort.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_CONFIG = REPO_ROOT / "config.toml"
SECTIONS = {f.name: f for f in dataclasses.fields(Config) if f.name != "source"}


def write(folder: Path, text: str, name: str = "config.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def expected_defaults(base: Path) -> Config:
    """The built-in defaults with paths (and the sqlite file) resolved against `base`."""
    paths = PathsConfig(
        **{f.name: base / getattr(PathsConfig(), f.name) for f in dataclasses.fields(PathsConfig)}
    )
    database = DatabaseConfig(f"sqlite:///{base}/var/inboxsort.db")
    web = WebConfig(thumbnails=base / "var" / "thumbnails")
    return Config(paths=paths, database=database, web=web)


# ---------------------------------------------------------------------------------------------
# Defaults and the shipped config.toml
# ---------------------------------------------------------------------------------------------


def test_defaults_load_with_no_file_and_resolve_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config == expected_defaults(Path.cwd())
    assert config.source is None
    assert config.paths.inbox == Path.cwd() / "var" / "inbox"
    assert config.database.url == f"sqlite:///{Path.cwd()}/var/inboxsort.db"
    assert config.train == TrainConfig()
    assert config.watch.ignore == WatchConfig().ignore


def test_empty_file_equals_the_defaults_resolved_against_its_folder(tmp_path, monkeypatch):
    path = write(tmp_path / "etc", "")
    monkeypatch.chdir(tmp_path)
    config = load_config(path)
    assert dataclasses.replace(config, source=None) == expected_defaults(tmp_path / "etc")
    assert config.source == path.resolve()


def test_repo_config_toml_equals_the_defaults():
    config = load_config(REPO_CONFIG)
    assert config.source == REPO_CONFIG.resolve()
    assert dataclasses.replace(config, source=None) == expected_defaults(REPO_ROOT)
    assert config.retrain == RetrainConfig()
    assert config.batch == BatchConfig()
    assert config.filing == FilingConfig()
    assert config.logging == LoggingConfig()


def test_repo_config_toml_shows_every_key():
    """Every dataclass field is in the shipped file; keys defaulting to None are commented."""
    text = REPO_CONFIG.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    assert set(raw) == set(SECTIONS)
    for name, section_field in SECTIONS.items():
        cls = section_field.default_factory
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unset = {k for k, f in fields.items() if f.default is None}
        # A default that depends on the machine (node.name: the host name) is shown commented.
        unset |= {k for k, f in fields.items() if f.default_factory is not dataclasses.MISSING}
        assert set(raw[name]) == set(fields) - unset, f"[{name}]"
        section_text = re.split(rf"^\[{name}\]$", text, flags=re.M)[1].split("\n[", 1)[0]
        for key in unset:
            assert re.search(rf"^#\s*{key} = ", section_text, re.M), f"{name}.{key} not shown"
        defaults = cls()
        for key, value in raw[name].items():
            default = getattr(defaults, key)
            if isinstance(default, Path):
                assert Path(value) == default, f"{name}.{key}"
            elif isinstance(default, tuple):
                assert tuple(value) == default, f"{name}.{key}"
            else:
                assert value == default, f"{name}.{key}"
                assert type(value) is type(default), f"{name}.{key} is {type(value).__name__}"


def test_values_are_typed_and_converted(tmp_path):
    config = load_text(
        tmp_path,
        "[train]\nlearning_rate = 1\nimage_size = 160\ndata = 'data'\n"
        "[watch]\nignore = ['*.x']\nsettle_seconds = 0\n"
        "[logging]\nlevel = 'debug'\ntimestamps = false\n",
    )
    assert config.train.learning_rate == 1.0
    assert type(config.train.learning_rate) is float
    assert type(config.watch.settle_seconds) is float
    assert config.train.image_size == 160
    assert config.train.data == tmp_path / "data"
    assert config.watch.ignore == ("*.x",)
    assert config.logging.level == "DEBUG"
    assert config.logging.timestamps is False


def test_config_is_frozen(tmp_path):
    config = load_text(tmp_path, "")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch.max_size = 4  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Errors: each names the key and the value
# ---------------------------------------------------------------------------------------------

SECTION_LIST = "batch, database, filing, logging, node, paths, retrain, serving, train, watch, web"

BAD_CONFIGS = [
    # unknown section / key, a section that is not a table
    ("[bogus]\nx = 1\n", f"config: bogus = '[...]': expected one of the sections {SECTION_LIST}"),
    (
        "[batch]\nmax_sise = 4\n",
        "config: batch.max_sise = 4: expected a known key of [batch]: "
        "max_size, max_delay_ms, queue_size, decode_workers, inference_workers",
    ),
    ('paths = "x"\n', "config: paths = 'x': expected a table ([paths])"),
    # wrong types
    ('[batch]\nmax_size = "4"\n', "config: batch.max_size = '4': expected an integer"),
    ("[batch]\nmax_size = true\n", "config: batch.max_size = true: expected an integer"),
    ("[train]\nepochs = 1.5\n", "config: train.epochs = 1.5: expected an integer"),
    ("[watch]\nrecursive = 1\n", "config: watch.recursive = 1: expected true or false"),
    ('[watch]\npolling = "yes"\n', "config: watch.polling = 'yes': expected true or false"),
    ('[watch]\nsettle_seconds = "1"\n', "config: watch.settle_seconds = '1': expected a number"),
    (
        "[watch]\nsettle_seconds = false\n",
        "config: watch.settle_seconds = false: expected a number",
    ),
    (
        '[watch]\nignore = ["*.tmp", 3]\n',
        "config: watch.ignore = ['*.tmp', 3]: expected a list of strings",
    ),
    ('[watch]\nignore = "*.tmp"\n', "config: watch.ignore = '*.tmp': expected a list of strings"),
    ('[paths]\ninbox = ""\n', "config: paths.inbox = '': expected a path (a non-empty string)"),
    ("[paths]\ninbox = 3\n", "config: paths.inbox = 3: expected a path (a non-empty string)"),
    ("[train]\ndata = false\n", "config: train.data = false: expected a path (a non-empty string)"),
    ("[database]\nurl = 5\n", "config: database.url = 5: expected a string"),
    # bad values
    ("[batch]\nmax_size = 0\n", "config: batch.max_size = 0: expected a number greater than 0"),
    (
        "[batch]\ndecode_workers = 65\n",
        "config: batch.decode_workers = 65: expected an integer from 1 to 64",
    ),
    (
        "[batch]\ninference_workers = 0\n",
        "config: batch.inference_workers = 0: expected an integer from 1 to 16",
    ),
    (
        "[train]\nimage_size = 16\n",
        "config: train.image_size = 16: expected an integer from 32 to 1024",
    ),
    (
        "[train]\nlearning_rate = 0\n",
        "config: train.learning_rate = 0: expected a number greater than 0",
    ),
    (
        '[filing]\nduplicates = "delete"\n',
        'config: filing.duplicates = \'delete\': expected "keep" or "move"',
    ),
    (
        "[filing]\nreview_below = 1.5\n",
        "config: filing.review_below = 1.5: expected a probability from 0 to 1",
    ),
    (
        "[retrain]\nholdout = 1\n",
        "config: retrain.holdout = 1: expected a fraction between 0 and 1",
    ),
    ("[retrain]\nnice = 20\n", "config: retrain.nice = 20: expected an integer from 0 to 19"),
    (
        '[node]\nname = "scanner 1"\n',
        "config: node.name = 'scanner 1': expected 1 to 63 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit",
    ),
    ("[node]\nstale_seconds = 1\n", "config: node.stale_seconds = 1: expected 5 seconds or more"),
    (
        "[watch]\nwriter_timeout_seconds = -1\n",
        "config: watch.writer_timeout_seconds = -1: expected 0 or more",
    ),
    (
        '[serving]\nruntime = "onnx"\n',
        'config: serving.runtime = \'onnx\': expected "auto", "litert" or "keras"',
    ),
    (
        '[logging]\nlevel = "LOUD"\n',
        "config: logging.level = 'LOUD': expected DEBUG, INFO, WARNING or ERROR",
    ),
    (
        '[retrain]\ncron = "bogus"\n',
        "config: retrain.cron = 'bogus': expected a crontab line "
        "(Wrong number of fields; got 1, expected 5)",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS, ids=[m[8:40] for _, m in BAD_CONFIGS])
def test_bad_config_raises_config_error_naming_key_and_value(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert str(info.value) == message
    assert info.value.exit_code == 2


def test_bad_cron_field_value_is_refused(tmp_path):
    with pytest.raises(
        ConfigError, match=r"^config: retrain\.cron = '61 \* \* \* \*': expected a "
    ):
        load_text(tmp_path, '[retrain]\ncron = "61 * * * *"\n')


def test_good_cron_is_accepted(tmp_path):
    assert load_text(tmp_path, '[retrain]\ncron = "30 3 * * *"\n').retrain.cron == "30 3 * * *"


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[batch\nmax_size = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"config: {path} is not valid TOML: ")
    assert "line 1" in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"config: cannot read {path}: No such file or directory"


def test_directory_as_config_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"config: cannot read {tmp_path}: Is a directory"


def test_non_utf8_file_is_a_config_error(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xff\xfe[batch]\nmax_size = 4\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# Paths: relative to the config file's folder; nesting rules
# ---------------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    etc = tmp_path / "etc"
    path = write(
        etc,
        '[paths]\ninbox = "in"\nlibrary = "../lib"\nfailed = "/abs/failed"\n'
        'models = "~/models"\nduplicates = "d/u/p"\n'
        '[database]\nurl = "sqlite:///state/db.sqlite3"\n'
        '[train]\ndata = "data"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path(os.path.relpath(path)))
    assert config.paths.inbox == etc / "in"
    assert config.paths.library == etc / ".." / "lib"
    assert config.paths.failed == Path("/abs/failed")
    assert config.paths.models == Path.home() / "models"
    assert config.paths.duplicates == etc / "d" / "u" / "p"
    assert config.database.url == f"sqlite:///{etc}/state/db.sqlite3"
    assert config.train.data == etc / "data"
    assert config.source == path


def test_paths_not_given_in_a_partial_paths_table_resolve_against_the_config_folder(
    tmp_path, monkeypatch
):
    """[paths] naming only the inbox: the other folders must not depend on the cwd."""
    path = write(tmp_path / "etc", '[paths]\ninbox = "in"\n[database]\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(path)
    defaults = expected_defaults(tmp_path / "etc")
    assert config.paths.inbox == tmp_path / "etc" / "in"
    assert config.paths.library == defaults.paths.library
    assert config.paths.failed == defaults.paths.failed
    assert config.paths.models == defaults.paths.models
    assert config.paths.duplicates == defaults.paths.duplicates
    assert config.database.url == defaults.database.url


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////var/lib/inboxsort/db.sqlite3",
        "sqlite:///:memory:",
        "sqlite://",
        "postgresql+psycopg://user:secret@db.example/inboxsort",
    ],
)
def test_absolute_and_non_file_database_urls_are_kept(tmp_path, url):
    assert load_text(tmp_path, f'[database]\nurl = "{url}"\n').database.url == url


def test_make_config_fixture_puts_everything_under_tmp_path(tmp_path, make_config):
    config = load_config(make_config("[batch]\nmax_size = 4\n"))
    assert config.paths == PathsConfig(
        inbox=tmp_path / "inbox",
        library=tmp_path / "library",
        failed=tmp_path / "failed",
        models=tmp_path / "models",
        duplicates=tmp_path / "duplicates",
    )
    assert config.database.url == f"sqlite:///{tmp_path}/db.sqlite3"
    assert config.batch.max_size == 4


@pytest.mark.parametrize(
    ("paths", "key", "expected"),
    [
        ({"library": "inbox/library"}, "library", "a folder outside paths.inbox"),
        ({"library": "inbox"}, "library", "a folder outside paths.inbox"),
        ({"failed": "inbox/sub/failed"}, "failed", "a folder outside paths.inbox"),
        ({"models": "inbox/models"}, "models", "a folder outside paths.inbox"),
        ({"duplicates": "inbox/dups"}, "duplicates", "a folder outside paths.inbox"),
        ({"inbox": "library/inbox"}, "library", "a folder not containing paths.inbox"),
        ({"inbox": "failed/inbox"}, "failed", "a folder not containing paths.inbox"),
        ({"inbox": "models/inbox"}, "models", "a folder not containing paths.inbox"),
        ({"inbox": "duplicates/inbox"}, "duplicates", "a folder not containing paths.inbox"),
    ],
)
def test_folders_nesting_with_the_inbox_are_refused(tmp_path, make_config, paths, key, expected):
    with pytest.raises(ConfigError) as info:
        load_config(make_config(**paths))
    value = tmp_path / paths.get(key, key)
    assert str(info.value) == f"config: paths.{key} = '{value}': expected {expected}"


def test_library_reaching_into_the_inbox_through_a_symlink_is_refused(tmp_path, make_config):
    (tmp_path / "inbox" / "real_library").mkdir(parents=True)
    (tmp_path / "library").symlink_to(tmp_path / "inbox" / "real_library")
    with pytest.raises(ConfigError, match=r"^config: paths\.library = .*outside paths\.inbox$"):
        load_config(make_config())


FOLDERS = ("inbox", "library", "failed", "models", "duplicates")


@pytest.mark.parametrize(
    ("paths", "key", "expected"),
    [
        ({"failed": "library"}, "failed", "a folder outside paths.library"),
        ({"failed": "library/cats"}, "failed", "a folder outside paths.library"),
        ({"models": "library"}, "models", "a folder outside paths.library"),
        ({"models": "library/models"}, "models", "a folder outside paths.library"),
        ({"library": "models/library"}, "models", "a folder not containing paths.library"),
        ({"duplicates": "failed"}, "duplicates", "a folder outside paths.failed"),
        ({"failed": "duplicates/failed"}, "duplicates", "a folder not containing paths.failed"),
        ({"duplicates": "library/_dups"}, "duplicates", "a folder outside paths.library"),
        ({"models": "failed/m"}, "models", "a folder outside paths.failed"),
        ({"duplicates": "models"}, "duplicates", "a folder outside paths.models"),
    ],
)
def test_output_folders_that_are_equal_or_nested_are_refused(
    tmp_path, make_config, paths, key, expected
):
    with pytest.raises(ConfigError) as info:
        load_config(make_config(**paths))
    value = tmp_path / paths.get(key, key)
    assert str(info.value) == f"config: paths.{key} = '{value}': expected {expected}"


@pytest.mark.parametrize(("outer", "inner"), list(itertools.permutations(FOLDERS, 2)))
@pytest.mark.parametrize("how", ["equal", "inside"])
def test_every_pair_of_folders_is_checked_both_ways(tmp_path, make_config, outer, inner, how):
    """`inner` set equal to, or inside, `outer`: refused whichever of the two comes first."""
    value = outer if how == "equal" else f"{outer}/deeper/{inner}"
    with pytest.raises(ConfigError) as info:
        load_config(make_config(**{inner: value}))
    message = str(info.value)
    assert f"paths.{outer}" in message and f"paths.{inner}" in message, message
    first, second = sorted((outer, inner), key=FOLDERS.index)
    # The message names the key that comes later in FOLDERS, with its value.
    shown = tmp_path / value if second == inner else tmp_path / outer
    assert message.startswith(f"config: paths.{second} = '{shown}': expected a folder "), message
    assert message.endswith(f" paths.{first}"), message


def test_a_folder_reaching_into_another_through_a_symlink_is_refused(tmp_path, make_config):
    (tmp_path / "library" / "models").mkdir(parents=True)
    (tmp_path / "models").symlink_to(tmp_path / "library" / "models")
    with pytest.raises(ConfigError, match=r"^config: paths\.models = .*outside paths\.library$"):
        load_config(make_config())


def test_sibling_folders_with_a_common_prefix_are_fine(tmp_path, make_config):
    config = load_config(make_config(inbox="in", library="in2", failed="in-failed"))
    assert config.paths.library == tmp_path / "in2"


# ---------------------------------------------------------------------------------------------
# Which file: --config, then $INBOXSORT_CONFIG, then ./config.toml
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def three_configs(tmp_path, monkeypatch):
    """A cwd holding config.toml, an env config, an explicit config; returns them."""
    cwd = tmp_path / "cwd"
    local = write(cwd, "")
    env = write(tmp_path / "env", "", "env.toml")
    explicit = write(tmp_path / "explicit", "", "explicit.toml")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv(ENV_VAR, str(env))
    return local, env, explicit


def test_explicit_config_beats_env_and_local(three_configs):
    _, _, explicit = three_configs
    assert find_config(explicit) == explicit


def test_env_beats_local(three_configs):
    _, env, _ = three_configs
    assert find_config(None) == env


def test_local_config_is_used_without_flag_or_env(three_configs, monkeypatch):
    local, _, _ = three_configs
    monkeypatch.delenv(ENV_VAR)
    found = find_config(None)
    assert found == Path("config.toml")
    assert found.resolve() == local.resolve()


def test_empty_env_var_falls_through_to_local(three_configs, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "")
    assert find_config(None) == Path("config.toml")


def test_no_config_anywhere_means_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_config(None) is None
    (tmp_path / "config.toml").mkdir()  # a folder named config.toml is not a config file
    assert find_config(None) is None


def test_env_config_is_returned_even_if_missing_so_the_error_names_it(tmp_path, monkeypatch):
    missing = tmp_path / "gone.toml"
    monkeypatch.setenv(ENV_VAR, str(missing))
    assert find_config(None) == missing
    with pytest.raises(ConfigError, match=r"cannot read .*gone\.toml"):
        load_config(find_config(None))


# ---------------------------------------------------------------------------------------------
# The command line with a bad config
# ---------------------------------------------------------------------------------------------


def test_cli_bad_config_exits_2_with_one_line_naming_the_key(tmp_path, run_cli):
    bad = write(tmp_path, "[batch]\nmax_size = 0\n", "bad.toml")
    result = run_cli("--config", bad, "models", "list", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "inboxsort: config: batch.max_size = 0: expected a number greater than 0\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]  # no database created


def test_cli_flag_beats_env_beats_local(tmp_path, run_cli, make_config):
    good = make_config()
    bad_env = write(tmp_path / "env", '[filing]\nduplicates = "env"\n')
    cwd = tmp_path / "cwd"
    write(cwd, '[filing]\nduplicates = "local"\n')

    flagged = run_cli("--config", good, "models", "list", cwd=cwd, env={ENV_VAR: str(bad_env)})
    assert flagged.returncode == 0, flagged.stderr
    assert "builtin" in flagged.stdout

    from_env = run_cli("models", "list", cwd=cwd, env={ENV_VAR: str(bad_env)})
    assert from_env.returncode == 2
    assert from_env.stderr == (
        'inboxsort: config: filing.duplicates = \'env\': expected "keep" or "move"\n'
    )

    local = run_cli("models", "list", cwd=cwd)
    assert local.returncode == 2
    assert "filing.duplicates = 'local'" in local.stderr


def test_the_node_name_defaults_to_the_host_name(tmp_path):
    import socket

    assert load_text(tmp_path, "").node.name == socket.gethostname()
    assert load_text(tmp_path, '[node]\nname = "nas-2"\n').node.name == "nas-2"
