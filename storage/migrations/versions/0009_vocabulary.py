"""tag vocabularies per group and the tagging events already applied (issue 19)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vocabulary_labels",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("group_id", sa.Integer(), sa.ForeignKey("groups.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=1), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("calm", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("position", sa.Integer(), nullable=False, server_default="0"),
        sa.UniqueConstraint("group_id", "label", name="uq_vocabulary_group_label"),
        sa.UniqueConstraint("group_id", "key", name="uq_vocabulary_group_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_vocabulary_labels_group_id", "vocabulary_labels", ["group_id"])
    op.create_table(
        "tag_events",
        sa.Column("event_id", sa.String(length=64), primary_key=True),
        sa.Column("session_id", sa.Integer(), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("op", sa.String(length=10), nullable=False),
        sa.Column("tag_uid", sa.String(length=36), nullable=True),
        sa.Column("target", sa.String(length=64), nullable=True),
        sa.Column("before_version", sa.Integer(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False, server_default=""),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_tag_events_session_id", "tag_events", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_tag_events_session_id", table_name="tag_events")
    op.drop_table("tag_events")
    op.drop_index("ix_vocabulary_labels_group_id", table_name="vocabulary_labels")
    op.drop_table("vocabulary_labels")
