"""Consent and retention as the CLI and the dashboard both offer them: administrators only, audited.

The rules live in ``storage.consent`` and ``storage.retention``; this module checks the
actor's permission (``manage_privacy``), resolves groups and persons the actor may see, and
writes the audit rows under ``Actor.audit_name``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from pathlib import Path

import pandas as pd
from sqlalchemy import select

from services.actor import Actor, require
from services.db import scope, visible_session
from storage import consent, repo, retention
from storage.models import ConsentPurpose, Group, Person, Role

ACTION = "manage_privacy"
# The beat task's actor in the audit trail: no person pressed a button.
SCHEDULER = Actor(None, "system:retention", Role.admin, None)


def _require(actor: Actor) -> None:
    require(actor, ACTION)


def _visible_group(s, actor: Actor, group: int | str) -> Group:
    g = s.get(Group, group) if isinstance(group, int) else s.scalar(select(Group).where(Group.name == group))
    if g is None and isinstance(group, str) and group.isdigit():
        g = s.get(Group, int(group))
    if g is None or not actor.sees(g.id):
        names = ", ".join(s.scalars(select(Group.name).order_by(Group.name))) or "none yet"
        raise LookupError(f"group {group!r} does not exist or is not visible to you; groups: {names}")
    return g


def _visible_person(s, actor: Actor, person_id: int) -> Person:
    p = s.get(Person, person_id)
    if p is None or not actor.sees(p.group_id):
        raise LookupError(f"person {person_id} does not exist or is not visible to you")
    return p


def expiry_of(day: date | datetime | str | None) -> datetime | None:
    """A consent's expiry from a date (end of that day, UTC) or a datetime; '' / None: none."""
    if day is None or day == "":
        return None
    if isinstance(day, str):
        try:
            day = date.fromisoformat(day.strip())
        except ValueError:
            raise ValueError(f"expiry {day!r} is not a date (YYYY-MM-DD)") from None
    if isinstance(day, datetime):
        return consent.aware(day)
    return datetime.combine(day, time.max, tzinfo=timezone.utc)


# --- consent -----------------------------------------------------------------------------------


def grant_consent(url: str, actor: Actor, person_id: int, purpose: ConsentPurpose | str = "analysis",
                  scope_text: str = "", expires: date | datetime | str | None = None) -> consent.ConsentRow:  # fmt: skip
    _require(actor)
    with scope(url) as s:
        _visible_person(s, actor, person_id)
        consent.grant(s, person_id, purpose, actor.audit_name, scope_text, expiry_of(expires))
        return next(r for r in consent.register(s) if r.person_id == person_id)


def withdraw_consent(url: str, actor: Actor, person_id: int, purpose: ConsentPurpose | str = "analysis") -> dict[str, int]:
    """Record a "no" and delete what it covered (see ``storage.consent.withdraw``); rows by table."""
    _require(actor)
    with scope(url) as s:
        _visible_person(s, actor, person_id)
        return consent.withdraw(s, person_id, purpose, actor.audit_name)


REANALYSIS_WARNING = ("{group} does not require consent: without their face embeddings this person is not "
                      "recognised, so a re-analysis would store their face again as an unknown person. "
                      "Require consent in the group to prevent that.")


def withdrawal_warning(url: str, actor: Actor, person_id: int) -> str:
    """What to tell the administrator after a withdrawal in a group that does not require consent ('' if none)."""
    _require(actor)
    with scope(url) as s:
        p = _visible_person(s, actor, person_id)
        if p.group_id is None or consent.policy(s, p.group_id).consent_required:
            return ""
        return REANALYSIS_WARNING.format(group=f"Group {s.get(Group, p.group_id).name!r}")


def consent_register(url: str, actor: Actor, group: int | str | None = None) -> list[consent.ConsentRow]:
    _require(actor)
    with scope(url) as s:
        ids = [_visible_group(s, actor, group).id] if group is not None else actor.group_ids
        return consent.register(s, ids)


def consent_frame(rows: list[consent.ConsentRow]) -> pd.DataFrame:
    """The register as a table (dates as ISO text, '' where none)."""
    def when(t: datetime | None) -> str:
        return t.strftime("%Y-%m-%d %H:%M") if t else ""

    return pd.DataFrame(
        [{"person_id": r.person_id, "person": r.label, "group": r.group or "", "consent_required": r.consent_required,
          "analysis": r.analysis, "thumbnails": r.thumbnails, "stored_per_person": r.stored, "scope": r.scope,
          "recorded_by": r.recorded_by or "", "recorded_at": when(r.recorded_at), "expires_at": when(r.expires_at),
          "withdrawn_by": r.withdrawn_by or "", "withdrawn_at": when(r.withdrawn_at)} for r in rows],
        columns=["person_id", "person", "group", "consent_required", "analysis", "thumbnails", "stored_per_person",
                 "scope", "recorded_by", "recorded_at", "expires_at", "withdrawn_by", "withdrawn_at"],
    )  # fmt: skip


def require_consent(url: str, actor: Actor, group: int | str, required: bool = True) -> consent.Policy:
    _require(actor)
    with scope(url) as s:
        return consent.set_consent_required(s, _visible_group(s, actor, group).id, required, actor.audit_name)


# --- retention ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRow:
    group_id: int
    group: str
    kind: str
    consent_required: bool
    retention_days: int | None
    sessions: int
    expired: int


def set_retention(url: str, actor: Actor, group: int | str, days: int | None) -> consent.Policy:
    _require(actor)
    with scope(url) as s:
        return consent.set_retention(s, _visible_group(s, actor, group).id, days, actor.audit_name)


# --- video review (issue 19: storage.review) ----------------------------------------------------


@dataclass(frozen=True)
class GroupRow:
    group_id: int
    group: str
    kind: str
    video_review: bool  # in effect
    video_review_set: bool | None  # as set; None = the kind's default


def set_video_review(url: str, actor: Actor, group: int | str, allowed: bool | None) -> bool:
    """Whether analyses of ``group`` keep a review copy of the video (None: the kind's default); audited.
    Returns the setting in effect."""
    from storage import review

    _require(actor)
    with scope(url) as s:
        return review.set_group_setting(s, _visible_group(s, actor, group).id, allowed, actor.audit_name)


def group_rows(url: str, actor: Actor) -> list[GroupRow]:
    """Every visible group with its kind and video-review setting."""
    from storage import review

    _require(actor)
    with scope(url) as s:
        return [GroupRow(g.id, g.name, g.kind.value, review.group_allows(g, g.kind), g.video_review)
                for g in s.scalars(select(Group).order_by(Group.name)) if actor.sees(g.id)]  # fmt: skip


def policies(url: str, actor: Actor, at: datetime | None = None) -> list[PolicyRow]:
    """Each visible group's policy, with how many sessions it holds and how many have expired."""
    from sqlalchemy import func

    from storage.models import Recording

    _require(actor)
    with scope(url) as s:
        n = dict(s.execute(select(Recording.group_id, func.count(Recording.id)).group_by(Recording.group_id)).all())
        gone: dict[int, int] = {}
        for e in retention.expired(s, at):
            gone[e.group_id] = gone.get(e.group_id, 0) + 1
        return [
            PolicyRow(g.id, g.name, g.kind.value, p.consent_required, p.retention_days, n.get(g.id, 0), gone.get(g.id, 0))
            for g, p in consent.policies(s) if actor.sees(g.id)
        ]  # fmt: skip


def run_retention(url: str, actor: Actor, data_dir: Path | None, group: int | str | None = None,
                  dry_run: bool = False, at: datetime | None = None) -> retention.RetentionReport:  # fmt: skip
    """Delete expired sessions now (what the beat task does on schedule), audited as ``actor``."""
    _require(actor)
    with scope(url) as s:  # also migrates a fresh database, as every service does
        gid = _visible_group(s, actor, group).id if group is not None else None
    if gid is None and actor.group_ids is not None:
        raise PermissionError(f"{actor.username} sees only some groups: name one to run retention for")
    return retention.run(url, actor.audit_name, data_dir, at=at, group_id=gid, dry_run=dry_run)


# --- what a session page shows -----------------------------------------------------------------


def session_class_curve(url: str, group_ids, session_id: int) -> pd.DataFrame:
    """The class engagement curve of a visible session counting every face, those stored per
    person and those counted only in the class aggregates (columns as ``repo.class_engagement``)."""
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        return repo.class_curve(s, session_id)


def session_withheld(url: str, group_ids, session_id: int) -> consent.Withheld:
    """How many faces of a visible session count only toward the class curve, and the sentence to show."""
    with scope(url) as s:
        visible_session(s, group_ids, session_id)
        return consent.withheld_summary(s, session_id)
