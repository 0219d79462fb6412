"""What the dashboard's view cache reads, by database url: each call checks the session is visible to
``group_ids`` and returns plain frames (``services.timelines`` does the reading, ``storage.consent`` the
class aggregates). The caching itself is the dashboard's (``dashboard.viewcache``)."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import select

from services import timelines
from services.actor import GroupIds
from services.db import scope, visible_session
from services.summaries import SessionKey
from storage import consent
from storage.models import Person


def fingerprint(url: str, group_ids: GroupIds, session_id: int) -> str:
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        return timelines.fingerprint(s, session_id)


def labels(url: str, group_ids: GroupIds, session_id: int, person_ids: tuple[int, ...]) -> dict[int, str]:
    """Current labels of these persons of a visible session."""
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        return dict(s.execute(select(Person.id, Person.label).where(Person.id.in_(list(person_ids)))).all())


def class_bins(url: str, group_ids: GroupIds, session_id: int) -> pd.DataFrame:
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        return timelines.class_bins(s, session_id)


def class_aggregates(url: str, group_ids: GroupIds, session_id: int) -> tuple[pd.DataFrame, str]:
    """Class aggregates of faces with no stored timeline, and the sentence saying so (empty when none)."""
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        return consent.class_aggregates(s, session_id), consent.withheld_summary(s, session_id).sentence()


def person_bins(url: str, group_ids: GroupIds, session_id: int, person_id: int) -> pd.DataFrame:
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        return timelines.person_bins(s, session_id, person_id)


def person_cues(url: str, group_ids: GroupIds, session_id: int, person_id: int) -> pd.DataFrame:
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        return timelines.person_cues(s, session_id, person_id)


def group_lessons(url: str, group_ids: GroupIds, group_id: int, limit: int = 12):
    """The visible group's newest ``limit`` analysed lessons long enough for a trend, and the note on
    those left out (``services.lessons.group_lessons``)."""
    from services import lessons

    if group_ids is not None and group_id not in group_ids:
        raise LookupError(f"group {group_id} does not exist or is not visible to you")
    with scope(url) as s:
        return lessons.group_lessons(s, group_id, limit=limit)


def group_sessions(url: str, group_ids: GroupIds, group_id: int, limit: int = 12) -> list[SessionKey]:
    """The visible group's newest ``limit`` analysed sessions."""
    if group_ids is not None and group_id not in group_ids:
        raise LookupError(f"group {group_id} does not exist or is not visible to you")
    with scope(url) as s:
        return timelines.group_sessions(s, group_id, limit=limit)


def warm_targets(url: str, limit: int, dashboard_user: str | None = None) -> list[tuple[GroupIds, int]]:
    """(viewer group ids, session id) to warm at a server start: newest sessions first, each under every
    distinct group set of an enabled user who may view it, at most ``limit`` pairs."""
    from services.actor import actor_for_user
    from storage.models import Recording, User

    if limit <= 0:
        return []
    keys: list[GroupIds] = []
    with scope(url) as s:
        for uid, name in s.execute(select(User.id, User.username).where(User.disabled.is_(False)).order_by(User.id)):
            actor = actor_for_user(s, uid)
            if actor is not None and actor.can("view_sessions") and actor.group_ids not in keys:
                keys.append(actor.group_ids)
        if dashboard_user and not s.scalar(select(User.id).where(User.username == dashboard_user)) and None not in keys:
            keys.append(None)  # the demo's auto-login creates this admin on its first run (dashboard.auth)
        if not keys:
            return []
        out: list[tuple[GroupIds, int]] = []
        # Scan newest first; a session nobody may see costs one row. Bounded so a huge archive cannot stall it.
        for sid, gid in s.execute(select(Recording.id, Recording.group_id).order_by(Recording.id.desc()).limit(50 * limit)):
            for k in keys:
                if k is None or gid in k:
                    out.append((k, int(sid)))
                    if len(out) >= limit:
                        return out
        return out
