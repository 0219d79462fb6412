"""readability gate per time bin (issue 17)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Bins stored before the gate keep NULL: nobody judged them (the dashboard reads NULL as "not judged").
    with op.batch_alter_table("time_bins", schema=None) as b:
        b.add_column(sa.Column("readable", sa.Float(), nullable=True))
        b.add_column(sa.Column("unreadable_reason", sa.String(length=40), nullable=True))
        b.add_column(sa.Column("pose_reliable", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("time_bins", schema=None) as b:
        b.drop_column("pose_reliable")
        b.drop_column("unreadable_reason")
        b.drop_column("readable")
