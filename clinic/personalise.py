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
from recognition.personal import DEFAULT_WINDOW, TrainingSet, fit_baseline, personalize, score_series
from recognition.personal.calibration import observed
from recognition.personal.personalize import CALM, FitReport, canonical_label, label_shares
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


BLOCK_SECONDS = 20.0  # cross-validation groups: time blocks of a session (a tag run crossing a cut merges two)


def _block_groups(t: np.ndarray, tags: list[Tag], step: float, block: float,
                  window: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Per bin: block number within the session, and whether the bin is a guard bin.

    Cuts fall every ``block`` seconds, except where a tag (widened by one bin) covers the cut:
    a tag run stays in one group. The bins within half a smoothing window of a cut are guard
    bins: their smoothed features mix both sides, so they would leak across the split.
    """
    if len(t) == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    cuts = np.arange(block * np.ceil(float(t[0]) / block), float(t[-1]), block)
    cuts = cuts[cuts > t[0]]
    spans = [(tg.t_start - step, tg.t_end + step) for tg in tags]
    cuts = np.array([c for c in cuts if not any(a < c < b for a, b in spans)])
    grp = np.searchsorted(cuts, t, side="right") if len(cuts) else np.zeros(len(t), np.int64)
    guard = np.zeros(len(t), bool)
    for c in cuts:
        guard |= np.abs(t - c) < (window // 2) * step
    return grp.astype(np.int64), guard


def training_set(series: list[Series], tags: list[Tag], window: int,
                 block: float = BLOCK_SECONDS) -> tuple[TrainingSet, np.ndarray]:  # fmt: skip
    """Observed bins of the tagged sessions with their labels, and a baseline mask over all bins.

    A bin takes the label of the tag its midpoint falls in (calm/none spellings become
    ``CALM``); in a session with at least one tag, an untagged bin is ``CALM``: the clinician
    coded that session and saw nothing to tag there. Sessions without tags are left out (not
    coded). Bins inside tags with different labels, and untagged bins within one bin of a tag's
    edge (where the clinician's start and end press is a second either way), are left out.
    Groups: time blocks (``_block_groups``), so folds never split neighbouring bins. Returns the
    training set and a boolean mask, over ``np.vstack([s.X for s in series])``, of bins inside
    baseline-marked tags.
    """
    step = min((sr.grid_step for sr in series), default=1.0)
    by_session: dict[int, list[Tag]] = {}
    for tag in tags:
        by_session.setdefault(tag.session_id, []).append(tag)
    Xs, q, y, g, sess, base_mask = [], [], [], [], [], []
    for sr in series:
        t = sr.t_mid
        session_tags = by_session.get(sr.session_id, [])
        lab = np.full(len(t), None, dtype=object)
        ambiguous = np.zeros(len(t), bool)
        edge = np.zeros(len(t), bool)
        bmask = np.zeros(len(t), bool)
        for tag in session_tags:
            m = (t >= tag.t_start) & (t < tag.t_end)
            if tag.is_baseline:
                bmask |= m
            name = canonical_label(tag.label)
            ambiguous |= m & (lab != None) & (lab != name)
            lab[m & (lab == None)] = name
            edge |= ~m & (t >= tag.t_start - step) & (t < tag.t_end + step)
        base_mask.append(bmask)
        if not session_tags:
            continue
        untagged = lab == None
        lab[untagged] = CALM
        grp, guard = _block_groups(t, session_tags, sr.grid_step, block, window)
        use = ~ambiguous & ~(untagged & edge) & ~guard & observed(sr.X)
        if use.any():
            Xs.append(smooth(sr.X, window)[use])
            q.append(quality(sr.X)[use])
            y.append(lab[use])
            g.append(sr.session_id * 1_000_000 + grp[use])  # one id space; tracks of a session share blocks
            sess.append(np.full(int(use.sum()), sr.session_id))
    D = len(FEATURE_NAMES)
    ts = TrainingSet(
        np.vstack(Xs) if Xs else np.zeros((0, D)), np.concatenate(q) if q else np.zeros(0),
        np.concatenate(y) if y else np.zeros(0, object), np.concatenate(g) if g else np.zeros(0, int),
        np.concatenate(sess) if sess else np.zeros(0, int),
    )  # fmt: skip
    return ts, np.concatenate(base_mask) if base_mask else np.zeros(0, bool)


# --- personalisation -------------------------------------------------------------------------


def untagged_shares(series: list[Series], tagged: dict, model: PersonalModel, baseline: Baseline,
                    threshold: float) -> dict[str, dict]:  # fmt: skip
    """Label shares of the child's sessions without tags (not trained on, so held out as they are):
    before = the calibrated population model, after = the new model, over every seen bin."""
    out: dict[str, dict] = {}
    by_session: dict[int, list[Series]] = {}
    for sr in series:
        if str(sr.session_id) not in tagged:
            by_session.setdefault(sr.session_id, []).append(sr)
    for sid, srs in sorted(by_session.items()):
        before, after = [], []
        for sr in srs:
            b, a = score_series(sr.X, threshold, None, baseline), score_series(sr.X, threshold, model)
            before += [x for x in b.labels if x is not None]
            after += [x for x in a.labels if x is not None]
        if after:
            out[str(sid)] = {"bins": len(after), "tagged": None, "before": label_shares(before),
                             "after": label_shares(after)}  # fmt: skip
    return out


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
    it active and re-score their sessions. The report's figures are out of fold
    (``recognition.personal.personalize``), with each label's share of every tagged session
    before and after, stored with the version.

    activate: True always, False never, None (default) only when ``FitReport.improves``
    (not worse than the population model on the labels both output; where none are
    shared, clearly better than chance). Raises ``NotEnoughTags``.
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
    report.grouping = (f"grouped by {BLOCK_SECONDS:g} s time blocks of each session (a tag crossing a block edge "
                       f"keeps both in one group; the bin each side of a cut left out); untagged time of a tagged "
                       f"session counts as {CALM}")  # fmt: skip
    report.shares |= untagged_shares(series, report.shares, model, baseline, st.uncertain_threshold)
    if activate is None:
        do_activate = report.improves
        reason = ("" if do_activate else "not activated: ") + report.verdict()
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
