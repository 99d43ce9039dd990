"""ORM schema of the inboxsort database: images, corrections, model versions, daemon state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

STATUS_PENDING = "pending"
STATUS_FILED = "filed"
STATUS_FAILED = "failed"
STATUS_DELETED = "deleted"  # the user removed the file from the library
STATUS_DUPLICATE = "duplicate"  # moved to the duplicates/ folder
# Classified where it lies by `inboxsort backfill` (without --file): never moved.
STATUS_CLASSIFIED = "classified"

ORIGIN_INBOX = "inbox"  # taken from the inbox by the daemon
ORIGIN_BACKFILL = "backfill"  # classified where it lies by `inboxsort backfill`

SOURCE_MOVE = "move"
SOURCE_LABEL = "label"
SOURCE_REVIEW = "review"
SOURCE_RECLASSIFY = "reclassify"

DAEMON_STARTING = "starting"
DAEMON_RUNNING = "running"
DAEMON_STOPPED = "stopped"
# Killed or crashed, and taken over by another node of the fleet (its claims dropped).
DAEMON_LOST = "lost"

# Explicit constraint names: Alembic batch mode on SQLite and later PostgreSQL migrations
# need stable names to drop or alter constraints; 0001_initial.py uses the same names.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A DateTime that only accepts aware datetimes and always returns aware UTC ones."""

    # TIMESTAMP WITH TIME ZONE on PostgreSQL; SQLite has no zone support, so values are
    # normalised to UTC and stored naive there, then re-tagged as UTC when read back.
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Validate and normalise a datetime to UTC before it is written."""
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            # A naive value is ambiguous (local time? UTC?); refuse rather than guess.
            raise ValueError(f"naive datetime {value.isoformat()} given; use an aware UTC datetime")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        """Return a stored value as an aware UTC datetime."""
        if value is None:
            return None
        # Raw text is what something other than SQLAlchemy wrote into the SQLite file.
        moment: dt.datetime = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC)


def _inserted(column: str) -> Callable[[Any], Any]:
    """An insert default: the value the same INSERT gives `column`."""

    def value(context: Any) -> Any:
        return context.get_current_parameters().get(column)

    return value


class Base(DeclarativeBase):
    """Declarative base of all inboxsort tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Image(Base):
    """One file seen in the inbox, and where it is now."""

    __tablename__ = "images"
    __table_args__ = (Index("ix_images_device_inode", "device", "inode"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Unknown (NULL) for files that could not be read.
    sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    original_name: Mapped[str] = mapped_column(String, nullable=False)
    source_path: Mapped[str] = mapped_column(String, nullable=False, index=True)
    path: Mapped[str] = mapped_column(String, nullable=False, index=True)
    # Written before the move so that a crash between the two can be recovered.
    dest_path: Mapped[str | None] = mapped_column(String)
    # The label now (the model's, or the user's correction) and its probability (NULL: unknown).
    label: Mapped[str | None] = mapped_column(String)
    score: Mapped[float | None] = mapped_column(Float)
    # What the model said, kept through corrections; an insert without them takes label/score.
    model_label: Mapped[str | None] = mapped_column(String, default=_inserted("label"))
    model_score: Mapped[float | None] = mapped_column(Float, default=_inserted("score"))
    model_version: Mapped[int | None] = mapped_column(Integer)
    # The node (daemon or command) that made the row; NULL for rows older than revision 0003.
    node: Mapped[str | None] = mapped_column(String)
    origin: Mapped[str] = mapped_column(
        String(16), nullable=False, index=True, default=ORIGIN_INBOX, server_default=ORIGIN_INBOX
    )
    status: Mapped[str] = mapped_column(
        String(16), nullable=False, index=True, default=STATUS_PENDING
    )
    error: Mapped[str | None] = mapped_column(Text)
    duplicate_of: Mapped[int | None] = mapped_column(Integer, ForeignKey("images.id"))
    size: Mapped[int | None] = mapped_column(BigInteger)
    device: Mapped[int | None] = mapped_column(BigInteger)
    inode: Mapped[int | None] = mapped_column(BigInteger)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    classified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    filed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime | None] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )

    def set_label(self, label: str, *, class_count: int) -> None:
        """Give the image `label` (a correction); `score` becomes that label's probability.

        The model's own label and score stay. Its probability of another label is known only
        with two classes (1 - its score); with more, the score becomes NULL (unknown).
        """
        self.label = label
        if self.model_label is None or self.model_score is None:
            self.score = None
        elif label == self.model_label:
            self.score = self.model_score
        else:
            self.score = 1.0 - self.model_score if class_count == 2 else None

    def __repr__(self) -> str:
        return f"Image(id={self.id!r}, status={self.status!r}, path={self.path!r})"


class Correction(Base):
    """A label fixed by the user (by moving a file, labelling it, or reviewing it)."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("images.id"), nullable=False, index=True
    )
    old_label: Mapped[str | None] = mapped_column(String)
    new_label: Mapped[str] = mapped_column(String, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)
    old_path: Mapped[str | None] = mapped_column(String)
    new_path: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    node: Mapped[str | None] = mapped_column(String)
    # The model version whose training consumed this correction; NULL = not used yet.
    used_in_version: Mapped[int | None] = mapped_column(Integer)

    def __repr__(self) -> str:
        return f"Correction(id={self.id!r}, image_id={self.image_id!r}, new={self.new_label!r})"


class ModelVersion(Base):
    """A trained model on disk; the caller chooses the version number."""

    __tablename__ = "model_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    path: Mapped[str] = mapped_column(String, nullable=False)
    metrics: Mapped[Any] = mapped_column(JSON, nullable=False, default=dict)
    active: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    parent: Mapped[int | None] = mapped_column(Integer)
    promoted: Mapped[bool | None] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(Text)
    image_size: Mapped[int | None] = mapped_column(Integer)
    classes: Mapped[Any | None] = mapped_column(JSON)

    def __repr__(self) -> str:
        return f"ModelVersion(version={self.version!r}, active={self.active!r})"


class DaemonState(Base):
    """One row per node (its name is the key) where that node's daemon reports its health."""

    __tablename__ = "daemon_state"

    node: Mapped[str] = mapped_column(String, primary_key=True)
    pid: Mapped[int | None] = mapped_column(Integer)
    hostname: Mapped[str | None] = mapped_column(String)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    queue_depth: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    in_flight: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    processed: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    failed: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    last_batch_size: Mapped[int | None] = mapped_column(Integer)
    last_batch_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_batch_ms: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[int | None] = mapped_column(Integer)
    # Batch size and latency histograms since the daemon started (see db/histograms.py).
    batch_histograms: Mapped[Any | None] = mapped_column(JSON)
    # One of DAEMON_STARTING / DAEMON_RUNNING / DAEMON_STOPPED.
    state: Mapped[str] = mapped_column(
        String(16), nullable=False, default=DAEMON_STOPPED, server_default=DAEMON_STOPPED
    )

    def __repr__(self) -> str:
        return f"DaemonState(node={self.node!r}, pid={self.pid!r}, state={self.state!r})"


class InboxClaim(Base):
    """A file of the inbox that one node is processing: the key is unique fleet-wide.

    Daemons sharing an inbox insert a claim before they read a file; the one whose insert
    lands processes it, the others leave it. The row goes when the file has left the inbox.
    """

    __tablename__ = "claims"

    # SHA-256 of the file's path under the inbox, size and mtime: what every node sees alike.
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String, nullable=False, index=True)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    claimed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class ModelArtifact(Base):
    """One file of a model version (model.keras, card.json, model.tflite), kept in the database
    so that a node can load a version it did not train, with no shared filesystem."""

    __tablename__ = "model_artifacts"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
