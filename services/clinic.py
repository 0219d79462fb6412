"""A clinician's model operations from the dashboard: personalise a child, activate or roll back a version.

The fitting and re-scoring run in the worker (``tasks.clinic``, torch-free but heavy): here a
``jobs`` row is committed and the task is sent by name (``affectline.queue``), so the caller shows
the job's progress and never imports ``tasks`` or ``clinic``. Activation and rollback change which stored version
is active (``storage.person_models``, audited there) and then queue the re-scoring of the child's
bins. Every request is audited with the actor's name.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from affectline.queue import PERSONALIZE_TASK, RESCORE_TASK
from affectline.settings import Settings
from services import jobs, model_report
from services.actor import Actor, require
from services.db import scope
from storage import person_models as pm
from storage import repo
from storage.models import JobStatus, Person

MODEL_COLUMNS = ["version", "active", "created", "tags", "bins", "labels", "personal_f1", "compared_on",
                 "personal_f1_compared", "population_f1", "calibrated_f1", "personal_coverage", "activation"]  # fmt: skip


def _person(s, actor: Actor, person_id: int) -> Person:
    p = s.get(Person, person_id)
    if p is None or not actor.sees(p.group_id):
        raise LookupError(f"person {person_id} does not exist or is not visible to you")
    return p


def send_task(settings: Settings, task: str, job_id: int) -> None:
    """Enqueue by task name (the worker's code is never imported here)."""
    jobs.send_task(settings, task, job_id)


def _queue(url: str, settings: Settings, task: str, job_id: int) -> None:
    # the broker refused: the job says so instead of waiting forever (services.jobs.enqueue)
    jobs.enqueue(url, settings, task, job_id, f"job {job_id} saved, but it", send=lambda st, jid: send_task(st, task, jid))


def request_personalisation(url: str, settings: Settings, actor: Actor, person_id: int,
                            activate: bool | None = None) -> int:  # fmt: skip
    """Queue fitting this child's personal model from their tags; returns the job id.

    ``activate``: None = only when cross-validation shows it is not worse than the population model.
    """
    require(actor, "tag")
    with scope(url) as s:
        _person(s, actor, person_id)
        job = repo.create_job(s, PERSONALIZE_TASK, person_id=person_id,
                              params={"activate": activate, "actor": actor.audit_name})  # fmt: skip
        repo.audit(s, actor.audit_name, "personalise", f"person:{person_id}", job=job.id, activate=activate)
        jid = job.id
    _queue(url, settings, PERSONALIZE_TASK, jid)
    return jid


def _rescore(url: str, settings: Settings, actor: Actor, person_id: int, why: str) -> int:
    with scope(url) as s:
        job = repo.create_job(s, RESCORE_TASK, person_id=person_id, params={"actor": actor.audit_name, "why": why})
        jid = job.id
    _queue(url, settings, RESCORE_TASK, jid)
    return jid


def activate_version(url: str, settings: Settings, actor: Actor, person_id: int, version: int | None) -> int:
    """Make personal model ``version`` active (None: the population model, no personal model) and queue
    the re-scoring of the child's sessions; returns the re-scoring job id."""
    require(actor, "tag")
    with scope(url) as s:
        _person(s, actor, person_id)
        if version is None:
            pm.deactivate_models(s, person_id, "personal", actor=actor.audit_name)
        else:
            pm.activate_model(s, person_id, "personal", int(version), actor=actor.audit_name)
    return _rescore(url, settings, actor, person_id, "population model" if version is None else f"version {version}")


def rollback(url: str, settings: Settings, actor: Actor, person_id: int) -> tuple[int, int]:
    """Activate the personal version before the active one and queue re-scoring; returns (version, job id)."""
    require(actor, "tag")
    with scope(url) as s:
        _person(s, actor, person_id)
        version = pm.rollback_model(s, person_id, "personal", actor=actor.audit_name).version
    return version, _rescore(url, settings, actor, person_id, f"rolled back to version {version}")


def _f1(metrics: dict, key: str, field: str = "macro_f1") -> float | None:
    v = (metrics.get(key) or {}).get(field)  # a population score is None where it was not compared
    return None if v is None else float(v)


def models_frame(url: str, actor: Actor, person_id: int) -> pd.DataFrame:
    """The child's personal model versions, newest first, with the out-of-fold report of each.

    ``personal_f1``: out of fold on all the child's labels (calm included). ``compared_on``: the
    labels both models can output, or why the population model is not compared; the three
    ``*_f1_compared``/``population_f1``/``calibrated_f1`` scores are on those labels only (empty
    when not compared). See ``services.model_report``.
    """
    require(actor, "review")
    with scope(url) as s:
        _person(s, actor, person_id)
        rows = []
        for m in pm.list_models(s, person_id, "personal"):
            x = m.metrics or {}
            legacy = model_report.is_legacy(x)
            rows.append({
                "version": m.version, "active": bool(m.active), "created": m.created_at, "tags": x.get("n_tags"),
                "bins": x.get("n_bins"), "labels": ", ".join(x.get("labels") or []), "personal_f1": _f1(x, "personal"),
                "compared_on": (", ".join(x.get("comparison_labels") or []) or "not compared") if not legacy
                               else "as stored (older version)",
                "personal_f1_compared": _f1(x, "personal_compared") if not legacy else None,
                "population_f1": _f1(x, "population"), "calibrated_f1": _f1(x, "population_calibrated"),
                "personal_coverage": _f1(x, "personal", "coverage"), "activation": x.get("activation", ""),
            })  # fmt: skip
        return pd.DataFrame(rows, columns=MODEL_COLUMNS)


def model_metrics(url: str, actor: Actor, person_id: int, version: int) -> dict:
    """The stored report of one personal model version (for ``services.model_report``)."""
    require(actor, "review")
    with scope(url) as s:
        _person(s, actor, person_id)
        for m in pm.list_models(s, person_id, "personal"):
            if m.version == int(version):
                return dict(m.metrics or {})
    raise LookupError(f"person {person_id} has no personal model version {version}")


@dataclass(frozen=True)
class JobView:
    id: int
    task: str
    status: JobStatus
    progress: float
    message: str
    error: str | None

    @property
    def active(self) -> bool:
        return self.status in (JobStatus.queued, JobStatus.running)

    def phrase(self) -> str:
        what = "Personalising" if self.task == PERSONALIZE_TASK else "Re-scoring"
        if self.status is JobStatus.queued:
            return f"{what}: waiting for the worker."
        if self.status is JobStatus.running:
            return f"{what}: {self.message or 'working'} ({self.progress:.0%})."
        if self.status is JobStatus.done:
            return f"{what} finished: {self.message}"
        last = (self.error or self.message or "no reason was recorded").strip().splitlines()
        return f"{what} failed: {last[-1] if last else 'no reason was recorded'}"


def person_jobs(url: str, actor: Actor, person_id: int, limit: int = 5) -> list[JobView]:
    """The child's newest personalisation and re-scoring jobs (not cached: progress is polled)."""
    from sqlalchemy import select

    from storage.models import Job

    with scope(url) as s:
        _person(s, actor, person_id)
        q = (select(Job).where(Job.person_id == person_id, Job.task.in_([PERSONALIZE_TASK, RESCORE_TASK]))
             .order_by(Job.id.desc()).limit(limit))  # fmt: skip
        return [JobView(j.id, j.task, JobStatus(j.status), float(j.progress or 0), j.message or "", j.error)
                for j in s.scalars(q)]  # fmt: skip


# --- what the command line adds: persons by id or label, a local run's audit row, every model kind ----


def person_id(url: str, actor: Actor, ref: int | str) -> int:
    """A visible person by id (digits) or exact label (``storage.tags.resolve_person``)."""
    from storage.tags import resolve_person

    with scope(url) as s:
        p = resolve_person(s, ref)
        return _person(s, actor, p.id).id


def request_personalisation_by_ref(url: str, settings: Settings, actor: Actor, ref: int | str,
                                   activate: bool | None = None) -> int:  # fmt: skip
    """``request_personalisation`` for a person named by id or label (the command line's ``--queue``)."""
    return request_personalisation(url, settings, actor, person_id(url, actor, ref), activate)


def record_local_personalisation(url: str, actor: Actor, person_id: int, version: int, activated: bool,
                                 rescored: int) -> None:  # fmt: skip
    """The audit row of a personalisation run in this process (the model version is stored either way)."""
    require(actor, "tag")
    with scope(url) as s:
        repo.audit(s, actor.audit_name, "personalise", f"person:{person_id}", version=version, activated=activated,
                   rescored=rescored, local=True)  # fmt: skip


@dataclass(frozen=True)
class ModelVersion:
    kind: str
    version: int
    active: bool
    created_at: object
    metrics: dict


def model_versions(url: str, actor: Actor, ref: int | str) -> tuple[int, list[ModelVersion]]:
    """(person id, their baseline and personal model versions, newest first per kind)."""
    require(actor, "review")
    pid = person_id(url, actor, ref)
    with scope(url) as s:
        return pid, [ModelVersion(m.kind, m.version, bool(m.active), m.created_at, dict(m.metrics or {}))
                     for m in pm.list_models(s, pid)]  # fmt: skip
