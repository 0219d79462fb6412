"""chunk tasks and leases (issue 10)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATUS = sa.Enum("queued", "running", "done", "failed", "cancelled", name="jobstatus", native_enum=False, length=20)


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as b:
        b.add_column(sa.Column("phase", sa.String(length=20), server_default="plan", nullable=False))
        b.add_column(sa.Column("chunks_total", sa.Integer(), server_default="0", nullable=False))
        b.add_column(sa.Column("chunks_done", sa.Integer(), server_default="0", nullable=False))
        b.add_column(sa.Column("lease_owner", sa.String(length=200), nullable=True))
        b.add_column(sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "job_chunks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("t_start", sa.Float(), nullable=False),
        sa.Column("t_end", sa.Float(), nullable=False),
        sa.Column("status", STATUS, nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "idx", "version"),
    )
    with op.batch_alter_table("job_chunks", schema=None) as b:
        b.create_index(b.f("ix_job_chunks_job_id"), ["job_id"], unique=False)
        b.create_index(b.f("ix_job_chunks_lease_expires"), ["lease_expires"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("job_chunks", schema=None) as b:
        b.drop_index(b.f("ix_job_chunks_lease_expires"))
        b.drop_index(b.f("ix_job_chunks_job_id"))
    op.drop_table("job_chunks")
    with op.batch_alter_table("jobs", schema=None) as b:
        for c in ("sent_at", "heartbeat_at", "lease_expires", "lease_owner", "chunks_done", "chunks_total", "phase"):
            b.drop_column(c)
