"""The fleet: one heartbeat row per node, claims on a shared inbox, model files in the database.

`daemon_state` is keyed by node name instead of the fixed id 1 (its one row, if any, becomes
the row of the node named by its hostname, which is the default node name). `claims` holds one
row per inbox file some node is processing (unique key: exactly one node gets each file).
`model_artifacts` holds each model version's files, so any node can load any version.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATE_COLUMNS = (
    "pid",
    "hostname",
    "started_at",
    "heartbeat_at",
    "queue_depth",
    "in_flight",
    "processed",
    "failed",
    "last_batch_size",
    "last_batch_at",
    "last_batch_ms",
    "model_version",
    "state",
)


def _state_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("hostname", sa.String(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queue_depth", sa.Integer(), server_default="0", nullable=False),
        sa.Column("in_flight", sa.Integer(), server_default="0", nullable=False),
        sa.Column("processed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("failed", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_batch_size", sa.Integer(), nullable=True),
        sa.Column("last_batch_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_batch_ms", sa.Float(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(length=16), server_default="stopped", nullable=False),
    ]


def _old_rows() -> list[dict[str, Any]]:
    # Raw values, read before the table is dropped (its primary key's name is reused), and
    # written back untyped: SQLite hands its stored text back as it was.
    table = sa.table("daemon_state", *(sa.column(c) for c in _STATE_COLUMNS))
    return [dict(r) for r in op.get_bind().execute(sa.select(table)).mappings()]


def _put_back(key: str, row: dict[str, Any]) -> None:
    table = sa.table("daemon_state", sa.column(key), *(sa.column(c) for c in _STATE_COLUMNS))
    op.get_bind().execute(table.insert().values(row))


def upgrade() -> None:
    """Key daemon_state by node; add claims and model_artifacts."""
    rows = _old_rows()
    op.drop_table("daemon_state")
    op.create_table(
        "daemon_state",
        sa.Column("node", sa.String(), nullable=False),
        *_state_columns(),
        sa.PrimaryKeyConstraint("node", name="pk_daemon_state"),
    )
    if rows:
        _put_back("node", {**rows[0], "node": rows[0]["hostname"] or "default"})
    op.create_table(
        "claims",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_claims"),
    )
    op.create_index("ix_claims_node", "claims", ["node"])
    op.create_table(
        "model_artifacts",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("version", "name", name="pk_model_artifacts"),
    )


def downgrade() -> None:
    """Back to one daemon_state row (the most recent heartbeat's); drop the new tables."""
    op.drop_table("model_artifacts")
    op.drop_index("ix_claims_node", table_name="claims")
    op.drop_table("claims")
    rows = _old_rows()
    rows.sort(key=lambda r: str(r["heartbeat_at"] or ""), reverse=True)
    op.drop_table("daemon_state")
    op.create_table(
        "daemon_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        *_state_columns(),
        sa.PrimaryKeyConstraint("id", name="pk_daemon_state"),
    )
    if rows:
        _put_back("id", {**rows[0], "id": 1})
