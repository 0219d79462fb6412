"""The services' database transactions: migrated on first use in each process."""

from __future__ import annotations

from functools import lru_cache

from sqlalchemy.orm import Session

from storage.db import migrate, session_scope
from storage.models import Recording


@lru_cache(maxsize=8)
def _migrated(url: str) -> bool:
    migrate(url)  # idempotent; a fresh clone or the dashboard may be first to open a database
    return True


def scope(url: str):
    """A transaction: committed on success, rolled back on error."""
    _migrated(url)
    return session_scope(url)


def visible_session(s: Session, group_ids, session_id: int) -> Recording:
    rec = s.get(Recording, session_id)
    if rec is None or not (group_ids is None or rec.group_id in group_ids):
        # Same message whether it is missing or hidden: do not reveal that it exists.
        raise LookupError(f"session {session_id} does not exist or is not visible to you")
    return rec
