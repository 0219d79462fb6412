"""Consent: who may have a per-person timeline stored, and what withdrawing it deletes.

Rules (enforced by :func:`guard`, which every writer of per-person rows calls: the analyses writer
``storage.repo.replace_analysis`` through :func:`withhold`, and enrol, rename, merge, split, tags and
tag import, personal models and per-person jobs; so no path stores a row the rules forbid):

- A person's consent for a purpose (``analysis``; ``thumbnails`` separately) is *valid* when it
  was granted, is not withdrawn and has not expired.
- A recorded "no" (refused, withdrawn or expired) is honoured in every group: that person's
  tracks are not stored per person.
- In a group whose policy requires consent, a missing answer counts as "no", and so does a
  track matched to no enrolled person (nobody has agreed for an unknown face).
- Faces not stored per person still count toward the class: their bins are averaged into
  ``class_bins`` (faces present, faces visible, mean engagement and academic emotions over
  the visible ones), which :func:`class_curve` adds to the per-person bins.
- A thumbnail is kept only with the analysis stored, and, where consent is required, with
  valid thumbnails consent (a recorded "no" drops it in every group).

Withdrawing analysis consent folds the person's stored bins into the class aggregates and then
deletes everything stored about them per person: time bins, feature series, tracks (with
thumbnails), face embeddings, tags, identity overrides, personal models and their jobs. The
person row stays with the withdrawn record (name and group) so the decision stays visible and
a later grant can re-enrol them. Every change is an audit row naming ids and counts.

Functions take an open ``Session``; callers own the transaction. Missing ids raise
``LookupError``, bad values ``ValueError``, with one line naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from storage.audit import write
from storage.models import (
    ClassBin,
    Consent,
    ConsentPurpose,
    FeatureSeries,
    Group,
    GroupPolicy,
    IdentityOverride,
    Job,
    Person,
    PersonEmbedding,
    PersonModel,
    Recording,
    Tag,
    TimeBin,
    Track,
)

ACADEMIC = ("neutrality", "enjoyment", "confusion", "fatigue", "distraction")
MEAN_COLUMNS = ("engagement", *ACADEMIC)
MAX_SCOPE = 200
MAX_RETENTION_DAYS = 36_500  # a century: anything longer is a typo


def now() -> datetime:
    return datetime.now(timezone.utc)


def aware(t: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without a zone; everything we store is UTC."""
    return t if t is None or t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _audit(s: Session, actor: str, action: str, target: str, **detail) -> None:
    write(s, actor, action, target, **detail)


# --- group policy ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    group_id: int
    consent_required: bool = False
    retention_days: int | None = None  # None: keep forever


def _group(s: Session, group_id: int) -> Group:
    g = s.get(Group, group_id)
    if g is None:
        raise LookupError(f"group {group_id} does not exist")
    return g


def policy(s: Session, group_id: int | None) -> Policy:
    row = s.get(GroupPolicy, group_id) if group_id is not None else None
    if row is None:
        return Policy(group_id or 0)
    return Policy(group_id, bool(row.consent_required), row.retention_days)


def _policy_row(s: Session, group_id: int, actor: str) -> GroupPolicy:
    _group(s, group_id)
    row = s.get(GroupPolicy, group_id)
    if row is None:
        row = GroupPolicy(group_id=group_id, consent_required=False, retention_days=None)
        s.add(row)
    row.updated_by, row.updated_at = actor, now()
    return row


def set_consent_required(s: Session, group_id: int, required: bool, actor: str) -> Policy:
    """Whether the group's analyses store per-person timelines only for persons with valid consent.

    Takes effect for analyses stored from now on; sessions stored before keep their rows until
    re-analysed, withdrawn or expired."""
    row = _policy_row(s, group_id, actor)
    before = bool(row.consent_required)
    row.consent_required = bool(required)
    s.flush()
    _audit(s, actor, "consent_required", f"group:{group_id}", required=bool(required), before=before)
    return policy(s, group_id)


def set_retention(s: Session, group_id: int, days: int | None, actor: str) -> Policy:
    """Keep the group's sessions ``days`` days after they were created (None: forever)."""
    if days is not None and not (1 <= int(days) <= MAX_RETENTION_DAYS):
        raise ValueError(f"retention of {days} days: give 1 to {MAX_RETENTION_DAYS} days, or none to keep forever")
    row = _policy_row(s, group_id, actor)
    before = row.retention_days
    row.retention_days = None if days is None else int(days)
    s.flush()
    _audit(s, actor, "retention_set", f"group:{group_id}", days=row.retention_days, before=before)
    return policy(s, group_id)


def policies(s: Session) -> list[tuple[Group, Policy]]:
    """Every group with its policy (default for groups without one), by name."""
    rows = {p.group_id: p for p in s.scalars(select(GroupPolicy))}
    return [
        (g, Policy(g.id, bool(rows[g.id].consent_required), rows[g.id].retention_days) if g.id in rows else Policy(g.id))
        for g in s.scalars(select(Group).order_by(Group.name))
    ]


# --- consent records ---------------------------------------------------------------------------


def purpose_of(purpose: ConsentPurpose | str) -> ConsentPurpose:
    try:
        return ConsentPurpose(purpose)
    except ValueError:
        raise ValueError(f"consent purpose {purpose!r} is not one of {', '.join(p.value for p in ConsentPurpose)}") from None


def is_valid(c: Consent | None, at: datetime | None = None) -> bool:
    if c is None or not c.granted or c.withdrawn_at is not None:
        return False
    return c.expires_at is None or aware(c.expires_at) > (at or now())


def _person(s: Session, person_id: int) -> Person:
    p = s.get(Person, person_id)
    if p is None:
        raise LookupError(f"person {person_id} does not exist")
    return p


def _record(s: Session, person_id: int, purpose: ConsentPurpose) -> Consent | None:
    return s.scalar(select(Consent).where(Consent.person_id == person_id, Consent.purpose == purpose))


def _clean_scope(scope: str) -> str:
    scope = " ".join((scope or "").split())
    if len(scope) > MAX_SCOPE:
        raise ValueError(f"consent scope {scope[:40]!r}... is {len(scope)} characters long; at most {MAX_SCOPE}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in scope):
        raise ValueError(f"consent scope {scope[:40]!r} contains control characters")
    return scope


def grant(
    s: Session, person_id: int, purpose: ConsentPurpose | str, actor: str, scope: str = "",
    expires_at: datetime | None = None, at: datetime | None = None,
) -> Consent:  # fmt: skip
    """Record that consent was given for ``purpose`` (who recorded it and when, scope, expiry).

    Only enrolled (named) persons: an 'Unknown N' of one analysis is replaced by the next one.
    Thumbnails consent needs analysis consent (a thumbnail belongs to a stored track)."""
    purpose = purpose_of(purpose)
    at = at or now()
    p = _person(s, person_id)
    if not p.enrolled:
        raise ValueError(f"person {person_id} ({p.label}) is not enrolled; name them first (affectline persons rename)")
    if expires_at is not None and aware(expires_at) <= at:
        raise ValueError(f"consent expiry {aware(expires_at):%Y-%m-%d %H:%M} UTC is not in the future")
    if purpose is ConsentPurpose.thumbnails and not is_valid(_record(s, person_id, ConsentPurpose.analysis), at):
        raise ValueError(f"person {person_id} has no valid analysis consent; thumbnails consent needs it first")
    c = _record(s, person_id, purpose)
    if c is None:
        c = Consent(person_id=person_id, purpose=purpose)
        s.add(c)
    c.granted, c.scope, c.recorded_by, c.recorded_at = True, _clean_scope(scope), actor, at
    c.expires_at, c.withdrawn_by, c.withdrawn_at = aware(expires_at), None, None
    s.flush()
    _audit(s, actor, "consent_grant", f"person:{person_id}", purpose=purpose.value, group_id=p.group_id,
           scope=c.scope, expires_at=c.expires_at.isoformat() if c.expires_at else None)  # fmt: skip
    return c


def withdraw(s: Session, person_id: int, purpose: ConsentPurpose | str, actor: str,
             at: datetime | None = None) -> dict[str, int]:  # fmt: skip
    """Record a "no" for ``purpose`` and delete what it covered; returns rows changed, by table.

    Works without a prior grant too: that is how a refusal is recorded. Withdrawing analysis
    consent withdraws thumbnails consent with it."""
    purpose = purpose_of(purpose)
    at = at or now()
    p = _person(s, person_id)
    purposes = list(ConsentPurpose) if purpose is ConsentPurpose.analysis else [purpose]
    for pu in purposes:
        c = _record(s, person_id, pu)
        if c is None:
            c = Consent(person_id=person_id, purpose=pu, granted=False, scope="", recorded_by=actor, recorded_at=at)
            s.add(c)
        c.withdrawn_by, c.withdrawn_at = actor, at
    s.flush()
    counts = delete_person_data(s, person_id) if purpose is ConsentPurpose.analysis else drop_thumbnails(s, person_id)
    _audit(s, actor, "consent_withdraw", f"person:{person_id}", purpose=purpose.value, group_id=p.group_id, **counts)
    return counts


def drop_thumbnails(s: Session, person_id: int) -> dict[str, int]:
    q = update(Track).where(Track.person_id == person_id, Track.thumbnail.is_not(None)).values(thumbnail=None)
    return {"thumbnails": s.execute(q).rowcount or 0}


def delete_person_data(s: Session, person_id: int) -> dict[str, int]:
    """Fold the person's bins into their sessions' class aggregates, then delete every per-person row."""
    sessions = list(s.scalars(select(TimeBin.session_id).where(TimeBin.person_id == person_id).distinct()))
    for sid in sessions:
        add_class_bins(s, sid, _person_bins(s, sid, person_id))
    counts: dict[str, int] = {"sessions_folded": len(sessions)}
    # Children first; Core deletes, so no stale ORM collection is cascaded.
    for model in (TimeBin, FeatureSeries, Tag, IdentityOverride, Track, PersonModel, PersonEmbedding, Job):
        counts[model.__tablename__] = s.execute(delete(model).where(model.person_id == person_id)).rowcount or 0
    return counts


def _person_bins(s: Session, session_id: int, person_id: int) -> pd.DataFrame:
    cols = ["t_start", "t_end", "face_visible", *MEAN_COLUMNS]
    q = select(*(getattr(TimeBin, c) for c in cols)).where(TimeBin.session_id == session_id, TimeBin.person_id == person_id)
    return pd.DataFrame(s.execute(q).all(), columns=cols)


@dataclass(frozen=True)
class ConsentRow:
    """One line of the consent register: a person, their group's rule and their answers."""

    person_id: int
    label: str
    group_id: int | None
    group: str | None
    enrolled: bool
    consent_required: bool
    analysis: str  # "valid", "expired", "withdrawn", "refused", "none"
    thumbnails: str
    scope: str
    recorded_by: str | None
    recorded_at: datetime | None
    expires_at: datetime | None
    withdrawn_by: str | None
    withdrawn_at: datetime | None

    @property
    def stored(self) -> bool:
        """Whether this person's analyses are stored per person (see the module's rules)."""
        return self.analysis == "valid" or (self.analysis == "none" and not self.consent_required)


def state(c: Consent | None, at: datetime | None = None) -> str:
    if c is None:
        return "none"
    if c.withdrawn_at is not None:
        return "withdrawn" if c.granted else "refused"
    if not c.granted:
        return "refused"
    return "valid" if is_valid(c, at) else "expired"


def register(s: Session, group_ids: Sequence[int] | None = None, at: datetime | None = None) -> list[ConsentRow]:
    """Enrolled persons (of ``group_ids``, or all) and anyone with a consent record, by group and name."""
    q = select(Person, Group).outerjoin(Group, Group.id == Person.group_id)
    has_record = select(Consent.person_id).where(Consent.person_id == Person.id).exists()
    q = q.where(Person.enrolled.is_(True) | has_record)
    if group_ids is not None:
        q = q.where(Person.group_id.in_(list(group_ids)))
    rows = s.execute(q.order_by(Group.name, Person.label, Person.id)).all()
    recs: dict[tuple[int, ConsentPurpose], Consent] = {
        (c.person_id, c.purpose): c
        for c in s.scalars(select(Consent).where(Consent.person_id.in_([p.id for p, _ in rows])))
    }
    pol = {g.id: pol for g, pol in policies(s)}
    out = []
    for p, g in rows:
        a, t = recs.get((p.id, ConsentPurpose.analysis)), recs.get((p.id, ConsentPurpose.thumbnails))
        out.append(ConsentRow(
            p.id, p.label, p.group_id, g.name if g else None, p.enrolled,
            pol[g.id].consent_required if g else False, state(a, at), state(t, at), a.scope if a else "",
            a.recorded_by if a else None, aware(a.recorded_at) if a else None, aware(a.expires_at) if a else None,
            a.withdrawn_by if a else None, aware(a.withdrawn_at) if a else None,
        ))  # fmt: skip
    return out


# --- the storage boundary: who may have per-person rows ---------------------------------------------


class ConsentMissing(ValueError):
    """A write of per-person rows for someone the consent rules do not allow (one line naming whom)."""


def _allowed(required: bool, c: Consent | None, at: datetime) -> bool:
    """The one rule: a recorded answer decides in every group; without one, only where consent is not required."""
    return is_valid(c, at) if (required or c is not None) else True


def guard(s: Session, doing: str, person_ids: Iterable[int] = (), new_in_group: int | None | bool = False,
          at: datetime | None = None) -> None:  # fmt: skip
    """Refuse (``ConsentMissing``) unless every person of ``person_ids`` may hold per-person rows.

    ``new_in_group``: a person about to be created in that group (who has no consent yet) will get
    rows: refused where the group requires consent. ``doing`` says what was asked, for the message."""
    at = at or now()
    if new_in_group is not False and policy(s, new_in_group).consent_required:
        g = s.get(Group, new_in_group)
        raise ConsentMissing(f"{doing}: group {g.name if g else new_in_group!r} requires consent, and a new "
                             "person has none; enrol them and record their consent first")  # fmt: skip
    for pid in dict.fromkeys(int(p) for p in person_ids):
        p = s.get(Person, pid)
        if p is None:
            continue  # the caller's own lookup names the missing id
        required = policy(s, p.group_id).consent_required
        c = _record(s, pid, ConsentPurpose.analysis)
        if not _allowed(required, c, at):
            why = f"their consent is {state(c, at)}" if c is not None else "their group requires consent and none is recorded"
            raise ConsentMissing(f"{doing}: person {pid} may not have data stored per person ({why})")


def face_image_allowed(s: Session, person_id: int, at: datetime | None = None) -> tuple[bool, str]:
    """Whether a face image of the person may be shown (a stored thumbnail, or a crop of the review
    copy cut for the naming page), by the thumbnail rule: valid thumbnails consent where the group
    requires consent, and a recorded "no" honoured in every group. Returns (allowed, why not in words)."""
    at = at or now()
    p = _person(s, person_id)
    required = policy(s, p.group_id).consent_required
    g = s.get(Group, p.group_id) if p.group_id is not None else None
    for purpose in (ConsentPurpose.analysis, ConsentPurpose.thumbnails):
        c = _record(s, person_id, purpose)
        if not _allowed(required, c, at):
            what = "face thumbnails" if purpose is ConsentPurpose.thumbnails else "analysis"
            if c is None:
                return False, (f"group {g.name if g else '-'} requires consent and none is recorded for "
                               f"{p.label}'s {what}")  # fmt: skip
            return False, f"{p.label}'s consent for {what} is {state(c, at)}"
    return True, ""


# --- what an analysis may store per person ----------------------------------------------------------


def withhold(s: Session, group_id: int | None, tracks: Sequence, at: datetime | None = None) -> tuple[list, list]:
    """Split an analysis' ``TrackRecord``s into (stored per person, counted only in the class).

    Stored records lose their thumbnail where thumbnails consent is missing (see module rules)."""
    at = at or now()
    required = policy(s, group_id).consent_required
    pids = {t.person_id for t in tracks if t.person_id is not None}
    recs: dict[tuple[int, ConsentPurpose], Consent] = {}
    if pids:
        recs = {(c.person_id, c.purpose): c for c in s.scalars(select(Consent).where(Consent.person_id.in_(pids)))}

    def allowed(pid: int | None, purpose: ConsentPurpose) -> bool:
        if pid is None:
            return not required
        return _allowed(required, recs.get((pid, purpose)), at)

    kept, withheld = [], []
    for t in tracks:
        if not allowed(t.person_id, ConsentPurpose.analysis):
            withheld.append(t)
            continue
        if t.thumbnail is not None and not allowed(t.person_id, ConsentPurpose.thumbnails):
            t.thumbnail = None
        kept.append(t)
    return kept, withheld


def replace_class_bins(s: Session, session_id: int, withheld: Iterable) -> None:
    """The session's class aggregates become those of ``withheld`` track records (re-analysis)."""
    s.execute(delete(ClassBin).where(ClassBin.session_id == session_id))
    frames = [t.bins for t in withheld if len(t.bins)]
    if frames:
        add_class_bins(s, session_id, pd.concat(frames, ignore_index=True))


def _aggregate(bins: pd.DataFrame) -> pd.DataFrame:
    """Per t_start: faces, visible faces, means over the visible ones (NaN when none visible)."""
    b = bins.assign(face_visible=bins["face_visible"].astype(bool))
    out = b.groupby("t_start").agg(t_end=("t_end", "max"), n_faces=("face_visible", "size"),
                                   n_visible=("face_visible", "sum"))  # fmt: skip
    means = b[b["face_visible"]].groupby("t_start")[list(MEAN_COLUMNS)].mean()
    return out.join(means).reset_index()


def add_class_bins(s: Session, session_id: int, bins: pd.DataFrame) -> int:
    """Add per-person ``bins`` to the session's class aggregates (weighted by visible faces)."""
    if bins is None or bins.empty:
        return 0
    new = _aggregate(bins)
    old = {c.t_start: c for c in s.scalars(select(ClassBin).where(ClassBin.session_id == session_id))}
    rows = []
    for r in new.itertuples(index=False):
        c = old.get(r.t_start)
        means = {k: _f(getattr(r, k)) for k in MEAN_COLUMNS}
        if c is None:
            rows.append(ClassBin(session_id=session_id, t_start=float(r.t_start), t_end=float(r.t_end),
                                 n_faces=int(r.n_faces), n_visible=int(r.n_visible), **means))  # fmt: skip
            continue
        n0, n1 = c.n_visible, int(r.n_visible)
        for k in MEAN_COLUMNS:
            setattr(c, k, _weighted(getattr(c, k), n0, means[k], n1))
        c.n_faces, c.n_visible, c.t_end = c.n_faces + int(r.n_faces), n0 + n1, max(c.t_end, float(r.t_end))
    s.add_all(rows)
    s.flush()
    return len(new)


def _f(x) -> float | None:
    return None if x is None or (isinstance(x, float) and np.isnan(x)) else float(x)


def _weighted(a: float | None, na: int, b: float | None, nb: int) -> float | None:
    if a is None or na == 0:
        return b
    if b is None or nb == 0:
        return a
    return (a * na + b * nb) / (na + nb)


def class_aggregates(s: Session, session_id: int) -> pd.DataFrame:
    """The session's withheld-face aggregates, by time: t_start, t_end, n_faces, n_visible, means."""
    cols = ["t_start", "t_end", "n_faces", "n_visible", *MEAN_COLUMNS]
    q = select(*(getattr(ClassBin, c) for c in cols)).where(ClassBin.session_id == session_id).order_by(ClassBin.t_start)
    return pd.DataFrame(s.execute(q).all(), columns=cols)


@dataclass(frozen=True)
class Withheld:
    """What the dashboard says about faces counted only in the class curve."""

    bins: int  # time bins with at least one such face
    max_faces: int  # most such faces in one bin
    consent_required: bool

    def sentence(self) -> str:
        if not self.bins:
            return ""
        who = "without valid consent or not enrolled" if self.consent_required else "without valid consent"
        return (f"Up to {self.max_faces} face{'s' * (self.max_faces != 1)} {who} "
                "count only toward the class curve: no per-person timeline is stored for them.")  # fmt: skip


def withheld_summary(s: Session, session_id: int) -> Withheld:
    n, most = s.execute(
        select(func.count(ClassBin.id), func.max(ClassBin.n_faces)).where(ClassBin.session_id == session_id)
    ).one()
    rec = s.get(Recording, session_id)
    return Withheld(int(n or 0), int(most or 0), policy(s, rec.group_id if rec else None).consent_required)
