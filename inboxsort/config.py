"""Parse config.toml once into frozen dataclasses; every error names the key and the value."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inboxsort.errors import ConfigError

ENV_VAR = "INBOXSORT_CONFIG"

DEFAULT_IGNORE: tuple[str, ...] = (
    ".*",
    "*.part",
    "*.crdownload",
    "*.tmp",
    "*~",
    "Thumbs.db",
    "desktop.ini",
    "._*",
    "@eaDir",
    "#recycle",
)


@dataclass(frozen=True)
class PathsConfig:
    """Folders the daemon reads and writes."""

    inbox: Path = Path("var/inbox")
    library: Path = Path("var/library")
    failed: Path = Path("var/failed")
    models: Path = Path("var/models")
    duplicates: Path = Path("var/duplicates")


@dataclass(frozen=True)
class DatabaseConfig:
    """Where results are stored (any SQLAlchemy URL)."""

    url: str = "sqlite:///var/inboxsort.db"


@dataclass(frozen=True)
class TrainConfig:
    """The transfer-learning recipe (`inboxsort train`)."""

    data: Path | None = None
    image_size: int = 224
    batch_size: int = 32
    epochs: int = 10
    fine_tune_epochs: int = 10
    fine_tune_at: int = 100
    learning_rate: float = 1e-4
    fine_tune_learning_rate: float = 1e-5
    label_smoothing: float = 0.0
    seed: int = 1337


@dataclass(frozen=True)
class BatchConfig:
    """Dynamic batching in front of predict_on_batch."""

    # Two workers with batches of 16: the 32 images in the model at once that one batch of 32
    # held, as fast or faster, in the same memory (README, Results: make bench-daemon).
    max_size: int = 16
    max_delay_ms: int = 50
    queue_size: int = 256
    decode_workers: int = 2
    inference_workers: int = 2


@dataclass(frozen=True)
class WatchConfig:
    """How the inbox is watched."""

    recursive: bool = True
    polling: bool = False
    poll_interval_seconds: float = 5.0
    settle_seconds: float = 1.0
    writer_timeout_seconds: float = 60.0
    rescan_seconds: float = 300.0
    ignore: tuple[str, ...] = DEFAULT_IGNORE


@dataclass(frozen=True)
class FilingConfig:
    """Where classified images go."""

    duplicates: str = "keep"
    review_below: float = 0.0


@dataclass(frozen=True)
class RetrainConfig:
    """The scheduled fine-tuning on corrections."""

    enabled: bool = True
    every_minutes: float = 60.0
    cron: str = ""
    min_new_corrections: int = 20
    tolerance: float = 0.01
    max_minutes: float = 30.0
    epochs: int = 3
    replay: int = 200
    holdout: float = 0.25
    nice: int = 10


@dataclass(frozen=True)
class ServingConfig:
    """Which runtime classifies: LiteRT where a version's flatbuffer agrees, or Keras."""

    runtime: str = "auto"


@dataclass(frozen=True)
class NodeConfig:
    """This daemon's name in a fleet sharing one database (recorded on every row it writes)."""

    name: str = field(default_factory=socket.gethostname)
    # A node silent this long (no heartbeat, no clean stop) is dead: its claims are taken over.
    stale_seconds: float = 30.0


@dataclass(frozen=True)
class LoggingConfig:
    """Log output."""

    level: str = "INFO"
    timestamps: bool = True


@dataclass(frozen=True)
class Config:
    """The whole configuration; built once, passed down explicitly."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    filing: FilingConfig = field(default_factory=FilingConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    source: Path | None = None


_SECTIONS: dict[str, type] = {
    f.name: f.type if isinstance(f.type, type) else globals()[str(f.type)]
    for f in dataclasses.fields(Config)
    if f.name != "source"
}

# (section, key) -> check returning an error description, or None when the value is fine.
_POSITIVE = "a number greater than 0"
_CHECKS: dict[tuple[str, str], tuple[typing.Callable[[Any], bool], str]] = {
    ("train", "image_size"): (lambda v: 32 <= v <= 1024, "an integer from 32 to 1024"),
    ("train", "batch_size"): (lambda v: v > 0, _POSITIVE),
    ("train", "epochs"): (lambda v: v >= 0, "0 or more"),
    ("train", "fine_tune_epochs"): (lambda v: v >= 0, "0 or more"),
    ("train", "fine_tune_at"): (lambda v: v >= 0, "0 or more"),
    ("train", "learning_rate"): (lambda v: v > 0, _POSITIVE),
    ("train", "fine_tune_learning_rate"): (lambda v: v > 0, _POSITIVE),
    ("train", "label_smoothing"): (lambda v: 0 <= v < 1, "a number from 0 to below 1"),
    ("batch", "max_size"): (lambda v: v > 0, _POSITIVE),
    ("batch", "max_delay_ms"): (lambda v: v >= 0, "0 or more"),
    ("batch", "queue_size"): (lambda v: v > 0, _POSITIVE),
    ("batch", "decode_workers"): (lambda v: 1 <= v <= 64, "an integer from 1 to 64"),
    ("batch", "inference_workers"): (lambda v: 1 <= v <= 16, "an integer from 1 to 16"),
    ("watch", "poll_interval_seconds"): (lambda v: v > 0, _POSITIVE),
    ("watch", "settle_seconds"): (lambda v: v >= 0, "0 or more"),
    ("watch", "writer_timeout_seconds"): (lambda v: v >= 0, "0 or more"),
    ("watch", "rescan_seconds"): (lambda v: v >= 0, "0 or more (0 turns rescans off)"),
    ("filing", "duplicates"): (lambda v: v in ("keep", "move"), '"keep" or "move"'),
    ("filing", "review_below"): (lambda v: 0 <= v <= 1, "a probability from 0 to 1"),
    ("retrain", "every_minutes"): (lambda v: v > 0, _POSITIVE),
    ("retrain", "min_new_corrections"): (lambda v: v >= 0, "0 or more"),
    ("retrain", "tolerance"): (lambda v: 0 <= v <= 1, "a fraction from 0 to 1"),
    ("retrain", "max_minutes"): (lambda v: v > 0, _POSITIVE),
    ("retrain", "epochs"): (lambda v: v > 0, _POSITIVE),
    ("retrain", "replay"): (lambda v: v >= 0, "0 or more"),
    ("retrain", "holdout"): (lambda v: 0 < v < 1, "a fraction between 0 and 1"),
    ("retrain", "nice"): (lambda v: 0 <= v <= 19, "an integer from 0 to 19"),
    ("serving", "runtime"): (
        lambda v: v in ("auto", "litert", "keras"),
        '"auto", "litert" or "keras"',
    ),
    ("node", "stale_seconds"): (lambda v: v >= 5, "5 seconds or more"),
    ("node", "name"): (
        lambda v: re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", v) is not None,
        "1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
    (
        "logging",
        "level",
    ): (
        lambda v: v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
        "DEBUG, INFO, WARNING or ERROR",
    ),
}


def _describe(value: Any) -> str:
    return (
        repr(value)
        if isinstance(value, str)
        else str(value).lower()
        if isinstance(value, bool)
        else str(value)
    )


def _fail(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"config: {key} = {_describe(value)}: expected {expected}")


def _coerce(key: str, value: Any, hint: Any, base: Path) -> Any:
    """Check one TOML value against its dataclass field type and convert it."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0], base)
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(key, value, "true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, value, "an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(key, value, "a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _fail(key, value, "a string")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise _fail(key, value, "a path (a non-empty string)")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(key, value, "a list of strings")
        return tuple(value)
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug, not user input


def _resolve_db_url(url: str, base: Path) -> str:
    """Make a relative sqlite path relative to the config file's folder, like other paths."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:" and not rest.startswith(":"):
            return prefix + str(base / rest)
    return url


def parse_config(raw: dict[str, Any], *, base: Path, source: Path | None = None) -> Config:
    """Validate a parsed TOML mapping and build the frozen Config from it."""
    sections: dict[str, Any] = {}
    for name, section in raw.items():
        if name not in _SECTIONS:
            raise _fail(name, "[...]", f"one of the sections {', '.join(sorted(_SECTIONS))}")
        if not isinstance(section, dict):
            raise _fail(name, section, "a table ([" + name + "])")
        cls = _SECTIONS[name]
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, value in section.items():
            full = f"{name}.{key}"
            if key not in hints:
                known = ", ".join(f.name for f in dataclasses.fields(cls))
                raise _fail(full, value, f"a known key of [{name}]: {known}")
            coerced = _coerce(full, value, hints[key], base)
            check = _CHECKS.get((name, key))
            if check is not None and coerced is not None and not check[0](coerced):
                raise _fail(full, value, check[1])
            values[key] = coerced
        if name == "database" and "url" in values:
            values["url"] = _resolve_db_url(values["url"], base)
        if name == "logging" and "level" in values:
            values["level"] = values["level"].upper()
        sections[name] = cls(**values)
    # Defaults are relative too; resolving every path here (base / absolute is a no-op)
    # covers a [paths] table that sets only some keys.
    sections["paths"] = _resolve_paths(sections.get("paths", PathsConfig()), base)
    database = sections.get("database", DatabaseConfig())
    sections["database"] = dataclasses.replace(database, url=_resolve_db_url(database.url, base))
    config = Config(**sections, source=source)
    _cross_check(config)
    return config


def _resolve_paths(paths: PathsConfig, base: Path) -> PathsConfig:
    return PathsConfig(**{f.name: base / getattr(paths, f.name) for f in dataclasses.fields(paths)})


def _cross_check(config: Config) -> None:
    """Checks that span keys: no two folders alike or nested, a crontab line that parses."""
    _check_folders_apart(config.paths)
    if config.retrain.cron:
        try:
            from apscheduler.triggers.cron import CronTrigger

            CronTrigger.from_crontab(config.retrain.cron)
        except ValueError as exc:
            raise _fail("retrain.cron", config.retrain.cron, f"a crontab line ({exc})") from None


def _check_folders_apart(paths: PathsConfig) -> None:
    """No folder is another, or inside another, either way round (symlinks resolved).

    Files would be filed into the inbox that feeds them, models would be taken for images,
    a correction could not be told from a failure. The later key of each pair is named.
    """
    names = [f.name for f in dataclasses.fields(PathsConfig)]
    resolved = {name: getattr(paths, name).resolve() for name in names}
    for i, later in enumerate(names):
        folder = resolved[later]
        for earlier in names[:i]:
            other = resolved[earlier]
            if folder == other or other in folder.parents:
                expected = f"a folder outside paths.{earlier}"
            elif folder in other.parents:
                expected = f"a folder not containing paths.{earlier}"
            else:
                continue
            raise _fail(f"paths.{later}", str(getattr(paths, later)), expected)


def find_config(explicit: Path | None) -> Path | None:
    """The config file to use: --config, then $INBOXSORT_CONFIG, then ./config.toml, else none."""
    if explicit is not None:
        return explicit
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    local = Path("config.toml")
    return local if local.is_file() else None


def load_config(path: Path | None) -> Config:
    """Read and validate a config file; with no file, the embedded defaults under ./var."""
    if path is None:
        return parse_config({}, base=Path.cwd())
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config: {path} is not UTF-8 text: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config: {path} is not valid TOML: {exc}") from None
    return parse_config(raw, base=path.resolve().parent, source=path.resolve())
