"""Personalisation: a child's model fitted from the clinicians' tags over their stored features,
cross-validated against the population model, stored as the next version and (when it does not do
worse) activated, then their bins re-scored (``clinic.rescore``); rollback to an earlier version.

Reads ``feature_series`` and ``tags``, writes ``person_models``; the video is never decoded again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from affectline.features import FEATURE_NAMES
from affectline.settings import Settings, get_settings
from recognition.personal import DEFAULT_WINDOW, TrainingSet, fit_baseline, personalize
from recognition.personal.calibration import observed
from recognition.personal.personalize import FitReport
from recognition.personal.population import smooth
from recognition.personal.reliability import quality
from clinic.rescore import rescore_person
from clinic.series import Series, load_series
from storage import person_models as pm
from storage.db import session_scope
from storage.models import Tag
from storage.tags import latest_tags, resolve_person

log = logging.getLogger(__name__)
Hook = Callable[[float, str], None]  # (progress 0..1, message)


def tag_runs(tags: list[Tag], gap: float) -> dict[str, int]:
    """Tag uid -> run id: tags of one session closer than ``gap`` seconds share a run.

    Cross-validation keeps a run in one fold, so bins a second apart (nearly the same
    face) never sit on both sides of a split.
    """
    run_of: dict[str, int] = {}
    run = -1
    by_session: dict[int, list[Tag]] = {}
    for t in tags:
        by_session.setdefault(t.session_id, []).append(t)
    for _, ts in sorted(by_session.items()):
        end = -np.inf
        for t in sorted(ts, key=lambda t: t.t_start):
            if t.t_start > end + gap:
                run += 1
            end = max(end, t.t_end)
            run_of[t.uid] = run
    return run_of


def training_set(series: list[Series], tags: list[Tag], window: int) -> tuple[TrainingSet, np.ndarray]:
    """Tagged, observed bins (bin midpoint inside the tag) and a baseline mask over all bins.

    Bins inside tags with different labels are left out (ambiguous). Returns the
    training set and a boolean mask, over ``np.vstack([s.X for s in series])``, of bins
    inside baseline-marked tags.
    """
    step = min((sr.grid_step for sr in series), default=1.0)
    runs = tag_runs(tags, gap=step)
    by_session: dict[int, list[Tag]] = {}
    for tag in tags:
        by_session.setdefault(tag.session_id, []).append(tag)
    Xs, q, y, g, base_mask = [], [], [], [], []
    for sr in series:
        t = sr.t_mid
        lab = np.full(len(t), None, dtype=object)
        grp = np.full(len(t), -1)
        ambiguous = np.zeros(len(t), bool)
        bmask = np.zeros(len(t), bool)
        for tag in by_session.get(sr.session_id, []):
            m = (t >= tag.t_start) & (t < tag.t_end)
            if tag.is_baseline:
                bmask |= m
            ambiguous |= m & (lab != None) & (lab != tag.label)
            lab[m & (lab == None)] = tag.label
            grp[m] = runs[tag.uid]
        base_mask.append(bmask)
        use = (lab != None) & ~ambiguous & observed(sr.X)
        if use.any():
            Xs.append(smooth(sr.X, window)[use])
            q.append(quality(sr.X)[use])
            y.append(lab[use])
            g.append(grp[use])
    D = len(FEATURE_NAMES)
    ts = TrainingSet(
        np.vstack(Xs) if Xs else np.zeros((0, D)), np.concatenate(q) if q else np.zeros(0),
        np.concatenate(y) if y else np.zeros(0, object), np.concatenate(g) if g else np.zeros(0, int),
    )  # fmt: skip
    return ts, np.concatenate(base_mask) if base_mask else np.zeros(0, bool)


# --- personalisation -------------------------------------------------------------------------


def _json_safe(v):
    """NaN/inf become None: PostgreSQL's JSON rejects them."""
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


@dataclass
class PersonalizeOutcome:
    person_id: int
    version: int
    report: FitReport
    activated: bool
    reason: str
    n_rescored: int = 0
    baseline_version: int | None = None
    n_tags: int = 0
    dropped: dict[str, str] = field(default_factory=dict)


def personalize_person(
    url: str,
    person: str | int,
    settings: Settings | None = None,
    *,
    activate: bool | None = None,
    actor: str = "system",
    hook: Hook | None = None,
    seed: int = 0,
    job_id: int | None = None,
) -> PersonalizeOutcome:
    """Fit a person's model from their tags, cross-validate it against the population
    model on the same folds, store it as the next version and (see ``activate``) make
    it active and re-score their sessions.

    activate: True always, False never, None (default) only when the cross-validated
    macro-F1 is not worse than the population model's. Raises ``NotEnoughTags``.
    job_id: a job re-delivered after its model was stored reuses that version (no refit).
    """
    st = settings or get_settings()
    say = hook or (lambda p, m: None)
    with session_scope(url) as s:
        pid = resolve_person(s, person).id
        done = [(m.version, m.active, m.metrics) for m in pm.list_models(s, pid, "personal")
                if job_id is not None and m.metrics.get("job_id") == job_id]  # fmt: skip
        series = [] if done else load_series(s, pid)
        tags = [] if done else latest_tags(s, person_id=pid)
    if done:  # re-delivered after the model was stored (activation is in the same transaction)
        version, active, metrics = done[0]
        n = rescore_person(url, pid, st) if active else 0
        return PersonalizeOutcome(pid, version, FitReport.from_dict(metrics), active, metrics.get("activation", ""), n,
                                  None, metrics.get("n_tags", 0))  # fmt: skip
    if not series:
        raise LookupError(f"person {pid} has no stored features; analyse a session with them first")
    say(0.1, f"{len(tags)} tags over {sum(len(sr.X) for sr in series)} bins")
    ts, bmask = training_set(series, tags, DEFAULT_WINDOW)
    baseline = fit_baseline(np.vstack([sr.X for sr in series]), bmask)
    say(0.2, "cross-validating")
    model, report = personalize(ts, baseline, threshold=st.uncertain_threshold, window=DEFAULT_WINDOW, seed=seed)
    if activate is None:
        do_activate = report.improves
        reason = (
            "cross-validated macro-F1 not worse than the population model"
            if do_activate
            else ("not activated: the personal model's cross-validated macro-F1 is below the population model's")
        )
    else:
        do_activate, reason = activate, "activated on request" if activate else "not activated on request"
    metrics = _json_safe(report.to_dict()) | {
        "n_tags": len(tags),
        "baseline_source": baseline.source,
        "job_id": job_id,
        "activation": reason,
    }
    with session_scope(url) as s:
        b = pm.save_model(s, pid, "baseline", baseline.to_bytes(), {"n_bins": baseline.n_bins, "source": baseline.source},
                          activate=do_activate, actor=actor)  # fmt: skip
        row = pm.save_model(s, pid, "personal", model.to_bytes(), metrics, activate=do_activate, actor=actor)
        version, bversion = row.version, b.version
    n = 0
    if do_activate:
        say(0.8, "re-scoring sessions")
        n = rescore_person(url, pid, st)
    say(1.0, reason)
    return PersonalizeOutcome(pid, version, report, do_activate, reason, n, bversion, len(tags), report.dropped_labels)


def rollback_person(url: str, person: str | int, version: int | None = None, settings: Settings | None = None,
                    *, actor: str = "system") -> tuple[int, int]:  # fmt: skip
    """Activate an earlier personal model version (default: the one before the active one)
    and re-score; returns (version, bins re-scored)."""
    with session_scope(url) as s:
        pid = resolve_person(s, person).id
        row = pm.rollback_model(s, pid, "personal", version, actor=actor)
        version = row.version
    return version, rescore_person(url, pid, settings)
