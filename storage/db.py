"""Engine, sessions and migrations. Nothing connects at import time."""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # A worker and the dashboard write to the same file: wait for locks instead of failing.
        engine = create_engine(url, connect_args={"timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A transaction: committed on success, rolled back on any error."""
    s = session_factory(url)()
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the database schema to the newest migration (idempotent, safe to call concurrently).

    Several processes may open a fresh database at once (three ``affectline analyze``, a
    worker and the dashboard): one migrates while the others wait on a lock, then find
    the schema at head and do nothing. SQLite: an exclusive lock on a file beside the
    database; PostgreSQL: a transaction-level advisory lock.
    """
    if url.startswith("sqlite:///"):
        from filelock import FileLock

        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".migrate.lock", timeout=600):
            _upgrade(url)
    else:
        _upgrade(url)


MIGRATE_LOCK_KEY = 0x4146464C  # 'AFFL': one advisory lock id for every Affectline database


def _upgrade(url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    cfg = alembic_config(url)
    # Reuse our engine (SQLite pragmas, folder creation) rather than letting env.py make its own.
    with _migration_connection(get_engine(url)) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATE_LOCK_KEY})
        if _at_head(conn, cfg):
            return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@contextmanager
def _migration_connection(engine: Engine) -> Iterator:
    """A connection in a transaction for the migrations. On SQLite with foreign keys off, as
    SQLite documents for table rebuilds (batch mode): with them on, dropping the old copy of a
    parent table cascades into its children. Checked before commit, and on again after."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: before begin()
            conn.commit()
        try:
            with conn.begin():
                yield conn
                # Only after a migration wrote something (at head nothing began): the check reads every table.
                wrote = sqlite and conn.connection.dbapi_connection.in_transaction
                if wrote and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("the migration left rows whose foreign keys point nowhere; rolled back")
        finally:
            if sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def _at_head(conn, cfg) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(cfg).get_heads())
    return set(MigrationContext.configure(conn).get_current_heads()) == heads


# Arrays live in the database as little-endian float32 blobs with the shape kept by the caller.
def to_blob(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f4").tobytes()


def from_blob(b: bytes | None, cols: int | None = None) -> np.ndarray:
    if b is None:
        return np.zeros((0,) if cols is None else (0, cols), np.float32)
    a = np.frombuffer(b, dtype="<f4").astype(np.float32)
    return a.reshape(-1, cols) if cols else a
