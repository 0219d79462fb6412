"""review copies of recordings (issue 19): a group setting and the copy's path on the session

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("groups", schema=None) as b:
        b.add_column(sa.Column("video_review", sa.Boolean(), nullable=True))  # None: the kind's default
    with op.batch_alter_table("sessions", schema=None) as b:
        b.add_column(sa.Column("review_path", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as b:
        b.drop_column("review_path")
    with op.batch_alter_table("groups", schema=None) as b:
        b.drop_column("video_review")
