"""Parse config.toml once into frozen dataclasses; every error names the key and the value."""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inboxsort.config_checks import CHECKS
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
class WebConfig:
    """`inboxsort web`: where it listens, who may change things, where thumbnails are cached."""

    host: str = "127.0.0.1"
    port: int = 8470
    # Required when host is not a loopback address; every state-changing request carries it.
    token: str = ""
    read_only: bool = False
    thumbnails: Path = Path("var/thumbnails")
    page_size: int = 60


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
    web: WebConfig = field(default_factory=WebConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    source: Path | None = None


_SECTIONS: dict[str, type] = {
    f.name: f.type if isinstance(f.type, type) else globals()[str(f.type)]
    for f in dataclasses.fields(Config)
    if f.name != "source"
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
            check = CHECKS.get((name, key))
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
    web = sections.get("web", WebConfig())
    sections["web"] = dataclasses.replace(web, thumbnails=base / web.thumbnails)
    config = Config(**sections, source=source)
    _cross_check(config)
    return config


def _resolve_paths(paths: PathsConfig, base: Path) -> PathsConfig:
    return PathsConfig(**{f.name: base / getattr(paths, f.name) for f in dataclasses.fields(paths)})


def _cross_check(config: Config) -> None:
    """Checks that span keys: no two folders alike or nested, a crontab line that parses."""
    _check_folders_apart(config.paths)
    _check_web(config)
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


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def _check_web(config: Config) -> None:
    """A web page reachable from elsewhere needs a token; thumbnails stay out of watched folders."""
    web = config.web
    if web.host not in LOOPBACK_HOSTS and not web.token:
        raise _fail("web.token", web.token, f"a token when web.host = {web.host!r} (not loopback)")
    thumbs = web.thumbnails.resolve()
    for name in ("inbox", "library", "failed"):
        folder = getattr(config.paths, name).resolve()
        if thumbs == folder or folder in thumbs.parents:
            raise _fail("web.thumbnails", str(web.thumbnails), f"a folder outside paths.{name}")


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
