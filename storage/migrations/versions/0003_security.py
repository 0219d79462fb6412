"""audit trail, ids never reused, logins (issue 12)

- ids are never handed out again: SQLite reuses the largest rowid after a delete unless the
  table was created with AUTOINCREMENT, so the tables whose ids leave the database (audit
  rows name ``session:3``, ``person:49``, ``job:7``) are rebuilt with it. PostgreSQL's
  sequences never go back, so nothing is done there.
- the audit log refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL) with triggers, and
  keeps a snapshot of its target's name (``target_label``).
- users can be disabled; failed logins are counted per account and per client address
  (``login_throttle``); dashboard logins are server-side rows (``login_sessions``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Parents before children does not matter here: foreign keys are off while the migration
# runs on SQLite (storage.db), and each rebuild keeps the table's name, columns and indexes.
AUTOINCREMENT_TABLES = (
    "groups", "users", "sessions", "persons", "person_embeddings", "identity_overrides", "jobs", "tags",
    "person_models", "audit_log",
)  # fmt: skip

_SQLITE_TRIGGERS = {
    "audit_log_no_update": "BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused'); END",
    "audit_log_no_delete": "BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused'); END",
}
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END
$$
"""
_PG_TRIGGERS = {
    "audit_log_no_update_delete": "BEFORE UPDATE OR DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    "audit_log_no_truncate": "BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
}


def _sqlite() -> bool:
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as b:
        b.add_column(sa.Column("disabled", sa.Boolean(), server_default="0", nullable=False))
        b.add_column(sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("audit_log", schema=None) as b:
        b.add_column(sa.Column("target_label", sa.String(length=300), server_default="", nullable=False))

    op.create_table(
        "login_throttle",
        sa.Column("scope", sa.String(length=20), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("scope", "key"),
    )
    op.create_table(
        "login_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("client", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("login_sessions", schema=None) as b:
        b.create_index(b.f("ix_login_sessions_user_id"), ["user_id"], unique=False)

    if _sqlite():
        bind = op.get_bind()
        if bind.exec_driver_sql("PRAGMA foreign_keys").scalar():
            # Dropping a parent table with foreign keys on would cascade into its children.
            raise RuntimeError("migration 0003 rebuilds tables and must run with SQLite foreign keys off (storage.db.migrate)")
        for name in AUTOINCREMENT_TABLES:
            # recreate: copy into a new table declared AUTOINCREMENT; sqlite_sequence starts at max(id).
            with op.batch_alter_table(name, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
                pass
        for trig, body in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {trig} {body}")
    else:
        op.execute(_PG_FUNCTION)
        for trig, body in _PG_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {trig} {body}")


def downgrade() -> None:
    if _sqlite():
        for trig in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trig}")
    else:
        for trig in _PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {trig} ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    # The AUTOINCREMENT rebuild is kept: going back to reusable ids would gain nothing.
    with op.batch_alter_table("login_sessions", schema=None) as b:
        b.drop_index(b.f("ix_login_sessions_user_id"))
    op.drop_table("login_sessions")
    op.drop_table("login_throttle")
    with op.batch_alter_table("audit_log", schema=None) as b:
        b.drop_column("target_label")
    with op.batch_alter_table("users", schema=None) as b:
        b.drop_column("last_login_at")
        b.drop_column("disabled")
