"""Copying every row of one database into another, empty one (`inboxsort db copy`): SQLite to
PostgreSQL when one machine's daemon grows into several, or back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Table, func, insert, select, text, update

from inboxsort.db.schema import Base
from inboxsort.db.session import Database, current_revision, head_revision, safe_url
from inboxsort.errors import StoreError

# Rows read and written per round trip: bounded memory on a database of any size.
BATCH_ROWS = 1000


@dataclass(frozen=True)
class CopyResult:
    """What a copy wrote: rows per table, and the schema revision both databases are at."""

    rows: dict[str, int]
    revision: str


def _tables() -> list[Table]:
    """Every table of the schema, each after the tables its foreign keys point at."""
    return list(Base.metadata.sorted_tables)


def _check_revisions(source: Database, target: Database) -> str:
    """The head revision both are at; a StoreError saying which one is not."""
    head = head_revision()
    for db, what in ((source, "source"), (target, "target")):
        revision = current_revision(db)
        if revision != head:
            raise StoreError(
                f"the {what} database {safe_url(db.url)} is at schema revision "
                f"{revision or 'none'}, not {head}: run `inboxsort db upgrade` on it first"
            )
    return head


def _refuse_non_empty(conn: Connection, url: str) -> None:
    """A StoreError naming the tables that already hold rows in the target."""
    taken = []
    for table in _tables():
        count = conn.scalar(select(func.count()).select_from(table)) or 0
        if count:
            taken.append(f"{table.name} ({count} rows)")
    if taken:
        raise StoreError(
            f"the target database {safe_url(url)} is not empty: {', '.join(taken)}; "
            "db copy only fills an empty database, it never merges or overwrites rows"
        )


def _self_references(table: Table) -> list[str]:
    """Columns of `table` that point at its own rows (images.duplicate_of)."""
    return [
        fk.parent.name
        for fk in table.foreign_keys
        if fk.column.table is table and fk.parent.name != fk.column.name
    ]


def _copy_table(src: Connection, dst: Connection, table: Table) -> int:
    """Copy one table's rows in key order; a row pointing at a later row of the same table is
    written with that column NULL and patched once every row is in."""
    own = _self_references(table)
    key = list(table.primary_key.columns)
    copied, later = 0, []
    rows = src.execution_options(yield_per=BATCH_ROWS).execute(select(table).order_by(*key))
    for batch in rows.mappings().partitions(BATCH_ROWS):
        values = [dict(row) for row in batch]
        for row in values:
            for column in own:
                if row[column] is not None and row[column] >= row[key[0].name]:
                    # The patch keeps what an onupdate default (updated_at) would replace.
                    kept = {c.name: row[c.name] for c in table.columns if c.onupdate is not None}
                    later.append((row[key[0].name], {column: row[column], **kept}))
                    row[column] = None
        dst.execute(insert(table), values)
        copied += len(values)
    for row_key, patch in later:
        dst.execute(update(table).where(key[0] == row_key).values(patch))
    return copied


def _reset_sequences(dst: Connection) -> None:
    """Make PostgreSQL's id sequences continue after the copied ids (SQLite needs nothing:
    its next rowid is the largest plus one)."""
    if dst.dialect.name != "postgresql":
        return
    for table in _tables():
        for column in table.primary_key.columns:
            sequence = dst.scalar(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}
            )
            if sequence is None:  # a key the caller chooses (model_versions.version)
                continue
            largest = dst.scalar(select(func.max(column)))
            # is_called=false with no rows: the next id is 1, as in a fresh database.
            dst.execute(
                text("SELECT setval(:s, :v, :called)"),
                {"s": sequence, "v": largest or 1, "called": largest is not None},
            )


def copy_database(
    source: Database,
    target: Database,
    *,
    progress: Callable[[str, int], object] | None = None,
) -> CopyResult:
    """Copy every row of `source` into the empty `target`, ids kept, in one target transaction.

    Both must be at this code's head revision. The source is read in one transaction, so a
    daemon still writing to it cannot tear the copy; the target gets all rows or none.
    """
    revision = _check_revisions(source, target)
    copied: dict[str, int] = {}
    with source.engine.connect() as src, src.begin(), target.engine.begin() as dst:
        _refuse_non_empty(dst, target.url)
        for table in _tables():
            copied[table.name] = _copy_table(src, dst, table)
            if progress is not None:
                progress(table.name, copied[table.name])
        _reset_sequences(dst)
    return CopyResult(copied, revision)
