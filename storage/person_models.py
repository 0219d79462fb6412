"""Versioned per-person models (calibration baselines, personalised models).

The parameters are an opaque blob written by ``recognition.personal`` (storage does not
import recognition); at most one version per person and kind is active. Activation
and rollback are audited; nothing is ever overwritten.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage import consent
from storage.models import AuditEntry, Person, PersonModel

KINDS: tuple[str, ...] = ("baseline", "personal")


def _check(s: Session, person_id: int, kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"model kind {kind!r} is not one of {KINDS}")
    if s.get(Person, person_id) is None:
        raise LookupError(f"person {person_id} does not exist")


def save_model(
    s: Session,
    person_id: int,
    kind: str,
    params: bytes,
    metrics: dict,
    *,
    activate: bool = False,
    actor: str = "system",
) -> PersonModel:
    """Store the next version of a person's model; optionally make it the active one."""
    _check(s, person_id, kind)
    consent.guard(s, f"a {kind} model of person {person_id}", [person_id])
    last = s.scalar(
        select(func.max(PersonModel.version)).where(PersonModel.person_id == person_id, PersonModel.kind == kind)
    )
    row = PersonModel(
        person_id=person_id, kind=kind, version=(last or 0) + 1, params=params, metrics=metrics, active=False
    )
    s.add(row)
    s.flush()
    if activate:
        activate_model(s, person_id, kind, row.version, actor=actor)
    return row


def list_models(s: Session, person_id: int, kind: str | None = None) -> list[PersonModel]:
    """A person's models, newest first."""
    q = select(PersonModel).where(PersonModel.person_id == person_id)
    if kind is not None:
        q = q.where(PersonModel.kind == kind)
    return list(s.scalars(q.order_by(PersonModel.kind, PersonModel.version.desc())))


def get_model(s: Session, person_id: int, kind: str, version: int) -> PersonModel:
    row = s.scalar(
        select(PersonModel).where(
            PersonModel.person_id == person_id, PersonModel.kind == kind, PersonModel.version == version
        )
    )
    if row is None:
        raise LookupError(f"person {person_id} has no {kind} model version {version}")
    return row


def active_model(s: Session, person_id: int, kind: str) -> PersonModel | None:
    return s.scalar(
        select(PersonModel).where(
            PersonModel.person_id == person_id, PersonModel.kind == kind, PersonModel.active.is_(True)
        )
    )


def activate_model(s: Session, person_id: int, kind: str, version: int, *, actor: str = "system") -> PersonModel:
    """Make one version the active one (all others of that person and kind inactive)."""
    _check(s, person_id, kind)
    row = get_model(s, person_id, kind, version)
    prev = active_model(s, person_id, kind)
    s.execute(
        update(PersonModel).where(PersonModel.person_id == person_id, PersonModel.kind == kind).values(active=False)
    )
    row.active = True
    s.flush()
    s.add(AuditEntry(actor=actor, action=f"activate_{kind}_model", target=f"person:{person_id}",
                     detail={"version": version, "previous": prev.version if prev else None}))  # fmt: skip
    return row


def deactivate_models(s: Session, person_id: int, kind: str, *, actor: str = "system") -> None:
    """No active model of this kind: the person falls back to the population model."""
    _check(s, person_id, kind)
    s.execute(
        update(PersonModel).where(PersonModel.person_id == person_id, PersonModel.kind == kind).values(active=False)
    )
    s.add(AuditEntry(actor=actor, action=f"deactivate_{kind}_model", target=f"person:{person_id}", detail={}))


def rollback_model(
    s: Session, person_id: int, kind: str, version: int | None = None, *, actor: str = "system"
) -> PersonModel:
    """Activate ``version``, or when None the newest version older than the active one."""
    if version is None:
        cur = active_model(s, person_id, kind)
        if cur is None:
            raise LookupError(f"person {person_id} has no active {kind} model to roll back from")
        older = [m for m in list_models(s, person_id, kind) if m.version < cur.version]
        if not older:
            raise LookupError(f"person {person_id}'s {kind} model version {cur.version} is the oldest")
        version = older[0].version
    return activate_model(s, person_id, kind, version, actor=actor)
