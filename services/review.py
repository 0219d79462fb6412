"""Who may fetch a session's review copy: the dashboard login behind the request, then the same rights
as the session page (``storage.access``), then the group's video-review setting (``storage.review``).

Used by the dashboard's video route (``dashboard.review_route``); kept free of any web framework so
the rule is tested on its own.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from services.actor import Actor, actor_for_user
from services.db import scope
from storage import logins, review
from storage.access import get_user
from storage.models import Recording


class NotLoggedIn(PermissionError):
    """No live dashboard login came with the request."""


def viewer_for_token(url: str, token: str | None, idle: timedelta, demo_user: str | None = None) -> Actor:
    """The actor of a login token (the dashboard's cookie), as ``dashboard.auth`` resumes it.

    ``demo_user``: the password-less local demo (``Settings.dashboard_user``), passed only when the
    caller has checked that server and client are on a loopback address, as the dashboard does."""
    with scope(url) as s:
        uid = logins.resume(s, token, idle) if token else None
        if uid is None and demo_user:
            user = get_user(s, demo_user)
            uid = user.id if user is not None else None
        actor = actor_for_user(s, uid) if uid is not None else None
    if actor is None:
        raise NotLoggedIn("log in to the dashboard to watch recordings")
    return actor


def review_file(url: str, data_dir: Path, actor: Actor, session_id: int) -> Path:
    """The review copy of ``session_id`` if ``actor`` may watch it; else ``LookupError``, with the same
    words whether the session is missing, hidden from them, has no copy, or its group no longer
    allows video review (nothing tells an outsider which)."""
    nope = LookupError(f"session {session_id} has no review copy you may watch")
    if not actor.can("view_sessions"):
        raise nope
    with scope(url) as s:
        rec = s.get(Recording, session_id)
        if rec is None or not actor.sees(rec.group_id) or not review.session_allows(s, session_id):
            raise nope
        stored = rec.review_path
    path = review.resolve(data_dir, stored)
    if path is None:
        raise nope
    return path


def copy_available(url: str, data_dir: Path, actor: Actor, session_id: int) -> bool:
    """Whether ``actor`` may watch a review copy of ``session_id`` (the page shows the player only then)."""
    try:
        review_file(url, data_dir, actor, session_id)
    except LookupError:
        return False
    return True
