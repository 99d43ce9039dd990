"""Model versions: folders under paths.models, rows in model_versions, one of them active."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inboxsort.db import Database
from inboxsort.db import versions as version_rows
from inboxsort.db.artifacts import put_artifacts
from inboxsort.db.listen import notify_model_change
from inboxsort.errors import ConfigError, ModelError
from inboxsort.model.artifact import (
    BUILTIN,
    BUILTIN_DIR,
    SavesItself,
    load_classifier,
    read_card,
    write_version_folder,
)
from inboxsort.model.classifier import Classifier
from inboxsort.model.lineage import ensure_local, folder_files
from inboxsort.model.litert import refusal


@dataclass(frozen=True)
class VersionInfo:
    """One model version as `models list` shows it."""

    version: int
    active: bool
    path: str
    image_size: int | None
    classes: list[str] | None
    metrics: dict[str, Any] | None
    parent: int | None
    promoted: bool | None
    created_at: str | None
    note: str | None
    builtin: bool = False

    def accuracy(self, split: str) -> tuple[float | None, int | None]:
        """One split's accuracy in the metrics ("test", "validation") and its set's size.

        A retrained version's "test" is its gate set: often far smaller than the test split
        its parent was judged on, which is why the size goes with the figure.
        """
        scores = (self.metrics or {}).get(split) or {}
        return scores.get("accuracy"), scores.get("n")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: every field, and each split's accuracy with its set's size."""
        out = dict(self.__dict__)
        for split in ("test", "validation"):
            out[f"{split}_accuracy"], out[f"{split}_n"] = self.accuracy(split)
        return out


def builtin_info(*, active: bool) -> VersionInfo:
    """The model shipped inside the package."""
    card = read_card(BUILTIN_DIR) if (BUILTIN_DIR / "card.json").exists() else {}
    return VersionInfo(
        version=BUILTIN,
        active=active,
        path=str(BUILTIN_DIR),
        image_size=card.get("image_size"),
        classes=card.get("classes"),
        metrics=card.get("metrics"),
        parent=None,
        promoted=None,
        created_at=None,
        note="shipped with inboxsort",
        builtin=True,
    )


class ModelStore:
    """The registry of model versions: files on disk plus rows in the database."""

    def __init__(self, models_dir: Path, db: Database) -> None:
        self.models_dir = models_dir
        self.db = db

    def folder(self, version: int) -> Path:
        """The folder holding one version (the package's own folder for the builtin)."""
        return BUILTIN_DIR if version == BUILTIN else self.models_dir / f"{version:04d}"

    def local(self, version: int) -> Path:
        """The version's folder on this node, fetched from the database if it is not here
        (or differs from the stored files: each is checked against its SHA-256)."""
        if version == BUILTIN:
            return BUILTIN_DIR
        return ensure_local(self.db, version, self.folder(version))

    def _next_version(self) -> int:
        with self.db.session() as session:
            rows = version_rows.version_numbers(session)
        on_disk = [
            int(p.name)
            for p in (self.models_dir.iterdir() if self.models_dir.is_dir() else [])
            if p.name.isdigit()
        ]
        return max([BUILTIN, *rows, *on_disk]) + 1

    def register(
        self,
        model: SavesItself,
        card: dict[str, Any],
        *,
        parent: int | None,
        activate: bool,
        promoted: bool | None = None,
        note: str | None = None,
        litert: bytes | None = None,
    ) -> VersionInfo:
        """Write a new version folder atomically, then record it (and activate it if asked).

        `litert` is the version's LiteRT flatbuffer, whose entry the card holds under "litert";
        without it the version serves with Keras, and a "litert" entry in `card` is dropped:
        it would name a file the folder does not have.
        """
        version = self._next_version()
        card = {**card, "version": version, "parent": parent}
        if litert is None:
            card.pop("litert", None)
        folder = write_version_folder(model, card, self.folder(version), litert=litert)
        files = folder_files(folder)
        with self.db.session() as session, session.begin():
            # With its row: no node ever sees the version without the files to load it.
            put_artifacts(session, version, files)
            if activate:
                # In the same transaction as the insert: no reader ever sees the new version
                # registered (and promoted) while another one is still active.
                version_rows.deactivate_all(session)
                notify_model_change(session)
            version_rows.add_version(
                session,
                version=version,
                path=str(folder),
                metrics=card.get("metrics"),
                active=activate,
                parent=parent,
                promoted=promoted,
                note=note,
                image_size=card.get("image_size"),
                classes=card.get("classes"),
            )
        return self.info(version)

    def active_version(self) -> int:
        """The version serving now: the active row, or the builtin when none is active."""
        with self.db.session() as session:
            active = version_rows.active_version(session)
        return BUILTIN if active is None else int(active)

    def activate(self, version: int) -> None:
        """Make one version the active one (BUILTIN deactivates every registered version)."""
        with self.db.session() as session, session.begin():
            if version != BUILTIN:
                if version_rows.version_row(session, version) is None:
                    raise ModelError(f"model version {version} is not registered")
                if not (self.local(version) / "model.keras").exists():
                    raise ModelError(f"model version {version}: {self.folder(version)} is missing")
            version_rows.deactivate_all(session)
            if version != BUILTIN:
                version_rows.mark_active(session, version)
            notify_model_change(session)  # every node of a fleet swaps now, not at its poll

    def rollback(self) -> int:
        """Activate the active version's parent (or the builtin); returns the version now active."""
        current = self.active_version()
        if current == BUILTIN:
            raise ModelError("the shipped model is active; there is nothing to roll back to")
        with self.db.session() as session:
            row = version_rows.version_row(session, current)
            parent = row.parent if row is not None and row.parent is not None else BUILTIN
        self.activate(parent)
        return parent

    def info(self, version: int) -> VersionInfo:
        """One version's details."""
        return next(v for v in self.versions() if v.version == version)

    def versions(self) -> list[VersionInfo]:
        """Every registered version, oldest first, after the builtin."""
        with self.db.session() as session:
            rows = version_rows.versions_in_order(session)
        any_active = any(r.active for r in rows)
        infos = [builtin_info(active=not any_active)]
        for r in rows:
            infos.append(
                VersionInfo(
                    version=r.version,
                    active=bool(r.active),
                    path=r.path,
                    image_size=r.image_size,
                    classes=r.classes,
                    metrics=r.metrics,
                    parent=r.parent,
                    promoted=r.promoted,
                    created_at=r.created_at.isoformat() if r.created_at else None,
                    note=r.note,
                )
            )
        return infos

    def load(
        self, version: int | None = None, *, runtime: str = "auto", workers: int = 1
    ) -> Classifier:
        """Load a version (the active one by default) for `workers` threads to serve."""
        chosen = self.active_version() if version is None else version
        folder = self.local(chosen)
        if not (folder / "model.keras").exists():
            if chosen == BUILTIN:
                raise ModelError(
                    f"the shipped model is missing from {BUILTIN_DIR}; run `make model` "
                    "or `inboxsort train --data DIR --activate`"
                )
            raise ModelError(f"model version {chosen}: {folder} has no model.keras")
        return load_classifier(folder, version=chosen, runtime=runtime, workers=workers)

    def serving(self, version: int, runtime: str = "auto") -> tuple[str, str | None]:
        """The runtime a version would serve with under `runtime`, and why not LiteRT (or None).

        Reads files only (the card, and the flatbuffer's SHA-256): no runtime is loaded. A
        version whose card cannot be read serves with nothing: ("none", why).
        """
        try:
            folder = self.local(version)
            why = refusal(folder, read_card(folder), runtime)
        except ModelError as exc:
            return "none", str(exc)
        return ("litert", None) if why is None else ("keras", why)


def require_model(store: ModelStore, *, runtime: str = "auto") -> Classifier:
    """Load the active model or stop with a config-level error (exit 2)."""
    try:
        return store.load(runtime=runtime)
    except ModelError as exc:
        raise ConfigError(str(exc)) from None
