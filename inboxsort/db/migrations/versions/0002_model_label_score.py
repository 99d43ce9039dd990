"""Images keep what the model said (model_label, model_score); score is the probability of label.

Before this revision a correction changed `label` and left `score`, the model's probability of
its own label, so a corrected image showed the wrong label's probability.

Backfill: a corrected row's model label is its first correction's old label, and its model
score the score it has now (corrections never changed it); any other row's are its label and
score. Then a corrected row whose label is no longer the model's gets score = 1 - model_score
when its model had two classes, or NULL (unknown) when it had more or they are unknown.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The first correction of each image: its old label is what the model said.
_FIRST_OLD_LABEL = """
    SELECT c.old_label FROM corrections c WHERE c.image_id = images.id ORDER BY c.id LIMIT 1
"""
# How many classes the model that classified the image had. Version 0 is the shipped model
# (cats, dogs), which has no model_versions row; NULL when unknown. Fixed here rather than
# read from app code, so that this revision stays what it is as the package evolves.
_CLASS_COUNT = """
    CASE WHEN images.model_version = 0 THEN 2 ELSE (
        SELECT {length} FROM model_versions v
        WHERE v.version = images.model_version
    ) END
"""
# The length of v.classes, NULL when it is not an array: SQLite's json_array_length gives 0 for
# a JSON null, PostgreSQL's refuses a scalar, so PostgreSQL asks for the type first.
_LENGTH = {
    "postgresql": "CASE WHEN json_typeof(v.classes) = 'array' "
    "THEN json_array_length(v.classes) END",
}
_SQLITE_LENGTH = "json_array_length(v.classes)"
_CORRECTED = "EXISTS (SELECT 1 FROM corrections c WHERE c.image_id = images.id)"


def upgrade() -> None:
    """Add model_label and model_score, fill them, and make score the probability of label."""
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("model_label", sa.String(), nullable=True))
        batch.add_column(sa.Column("model_score", sa.Float(), nullable=True))
    op.execute(
        sa.text(
            "UPDATE images SET model_score = score, model_label = CASE "
            f"WHEN {_CORRECTED} THEN ({_FIRST_OLD_LABEL}) ELSE label END"
        )
    )
    length = _LENGTH.get(op.get_bind().dialect.name, _SQLITE_LENGTH)
    class_count = _CLASS_COUNT.format(length=length)
    op.execute(
        sa.text(
            f"UPDATE images SET score = CASE WHEN ({class_count}) = 2 THEN 1.0 - model_score "
            f"ELSE NULL END WHERE {_CORRECTED} AND model_label IS NOT NULL "
            "AND label <> model_label"
        )
    )


def downgrade() -> None:
    """Score as 0001 kept it (the model's probability of its own label); drop the columns."""
    op.execute(sa.text("UPDATE images SET score = model_score"))
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a rebuild: rebuilding drops `images`,
    # which foreign_keys=ON refuses while corrections refer to its rows.
    with op.batch_alter_table("images", recreate="never") as batch:
        batch.drop_column("model_score")
        batch.drop_column("model_label")
