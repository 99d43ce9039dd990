"""Rows say which node made them, and how an image arrived (the inbox, or a backfill).

`images.node` and `corrections.node`: the node name of the daemon or command that wrote the
row (NULL for rows from before this revision). `images.origin`: "inbox" for files the daemon
took from its inbox, "backfill" for files classified where they lie by `inboxsort backfill`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add images.node, images.origin (existing rows: inbox) and corrections.node."""
    # ALTER TABLE, never a rebuild: rebuilding drops `images`, which foreign_keys=ON refuses
    # while corrections refer to its rows (SQLite adds a NOT NULL column with a default fine).
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.add_column(sa.Column("node", sa.String(), nullable=True))
        batch.add_column(sa.Column("origin", sa.String(16), nullable=False, server_default="inbox"))
    op.create_index("ix_images_origin", "images", ["origin"])
    with op.batch_alter_table("corrections", recreate="never") as batch:
        batch.add_column(sa.Column("node", sa.String(), nullable=True))


def downgrade() -> None:
    """Drop the three columns again."""
    with op.batch_alter_table("corrections", recreate="never") as batch:
        batch.drop_column("node")
    op.drop_index("ix_images_origin", table_name="images")
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.drop_column("origin")
        batch.drop_column("node")
