"""consent and retention (issue 12)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

New tables only (nothing existing is altered, so no SQLite table rebuild can cascade):
per-person consent, per-group policy (consent required, retention days) and the class-level
aggregates of faces whose per-person timelines were not stored.
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.Enum("analysis", "thumbnails", name="consentpurpose", native_enum=False, length=20),
                  nullable=False),
        sa.Column("granted", sa.Boolean(), nullable=False),
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("recorded_by", sa.String(length=100), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("withdrawn_by", sa.String(length=100), nullable=True),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["person_id"], ["persons.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("person_id", "purpose"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consents_person_id"), ["person_id"], unique=False)

    op.create_table(
        "group_policies",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("consent_required", sa.Boolean(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id"),
    )

    op.create_table(
        "class_bins",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("t_start", sa.Float(), nullable=False),
        sa.Column("t_end", sa.Float(), nullable=False),
        sa.Column("n_faces", sa.Integer(), nullable=False),
        sa.Column("n_visible", sa.Integer(), nullable=False),
        sa.Column("engagement", sa.Float(), nullable=True),
        sa.Column("neutrality", sa.Float(), nullable=True),
        sa.Column("enjoyment", sa.Float(), nullable=True),
        sa.Column("confusion", sa.Float(), nullable=True),
        sa.Column("fatigue", sa.Float(), nullable=True),
        sa.Column("distraction", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "t_start"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("class_bins")
    op.drop_table("group_policies")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consents_person_id"))
    op.drop_table("consents")
