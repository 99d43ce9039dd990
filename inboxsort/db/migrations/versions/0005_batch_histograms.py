"""The heartbeat carries the daemon's batch size and latency histograms.

`daemon_state.batch_histograms`: JSON, cumulative since the daemon started, in the shape of
inboxsort/db/histograms.py (NULL for rows written before this revision, or by an older daemon).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add daemon_state.batch_histograms."""
    # ALTER TABLE, never a rebuild (see 0003): a nullable column needs nothing more.
    with op.batch_alter_table("daemon_state", recreate="never") as batch:
        batch.add_column(sa.Column("batch_histograms", sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop it again."""
    with op.batch_alter_table("daemon_state", recreate="never") as batch:
        batch.drop_column("batch_histograms")
