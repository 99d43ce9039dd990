"""Initial schema: images, corrections, model_versions, daemon_state.

Revision ID: 0001
Revises:
Create Date: 2024-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# UTCDateTime columns are plain DateTime(timezone=True) in DDL; the decorator is ORM-side only,
# and importing app code here would let later model edits silently change this old revision.
revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the four tables and their indexes."""
    # Explicit DDL (not metadata.create_all) so this revision stays fixed as the models evolve.
    _create_images()
    _create_corrections()
    _create_model_versions()
    _create_daemon_state()


def _create_images() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("original_name", sa.String(), nullable=False),
        sa.Column("source_path", sa.String(), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("dest_path", sa.String(), nullable=True),
        sa.Column("label", sa.String(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duplicate_of", sa.Integer(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("device", sa.BigInteger(), nullable=True),
        sa.Column("inode", sa.BigInteger(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("classified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("filed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["duplicate_of"], ["images.id"], name="fk_images_duplicate_of_images"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
    )
    op.create_index("ix_images_sha256", "images", ["sha256"])
    op.create_index("ix_images_source_path", "images", ["source_path"])
    op.create_index("ix_images_path", "images", ["path"])
    op.create_index("ix_images_status", "images", ["status"])
    op.create_index("ix_images_device_inode", "images", ["device", "inode"])


def _create_corrections() -> None:
    op.create_table(
        "corrections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("old_label", sa.String(), nullable=True),
        sa.Column("new_label", sa.String(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("old_path", sa.String(), nullable=True),
        sa.Column("new_path", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_in_version", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_corrections_image_id_images"),
        sa.PrimaryKeyConstraint("id", name="pk_corrections"),
    )
    op.create_index("ix_corrections_image_id", "corrections", ["image_id"])


def _create_model_versions() -> None:
    op.create_table(
        "model_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("parent", sa.Integer(), nullable=True),
        sa.Column("promoted", sa.Boolean(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("image_size", sa.Integer(), nullable=True),
        sa.Column("classes", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("version", name="pk_model_versions"),
    )


def _create_daemon_state() -> None:
    op.create_table(
        "daemon_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
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
        sa.PrimaryKeyConstraint("id", name="pk_daemon_state"),
    )


def downgrade() -> None:
    """Drop everything upgrade() created."""
    op.drop_table("daemon_state")
    op.drop_table("model_versions")
    op.drop_index("ix_corrections_image_id", table_name="corrections")
    op.drop_table("corrections")
    for name in (
        "ix_images_device_inode",
        "ix_images_status",
        "ix_images_path",
        "ix_images_source_path",
        "ix_images_sha256",
    ):
        op.drop_index(name, table_name="images")
    op.drop_table("images")
