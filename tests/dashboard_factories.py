"""A small, plausible database for dashboard and access tests (no video pipeline).

``seed(url)`` builds three groups (two classes, one child's therapy caseload), an
admin, a teacher of class A, a clinician of the therapy group, and one analysed
session per group, stored through ``storage.repo.replace_analysis`` like a real
analysis. Numbers are smooth random walks turned into probabilities, with a
stretch where each person's face is not visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from affectline.queue import ANALYZE_TASK
from storage import access, repo
from storage.db import session_scope
from storage.models import JobStatus, Role, SessionKind

ACADEMIC_MODEL = "cues@0123456789ab"
EXPRESSION_MODEL = "fer_mini_xception@ba9876543210"
PERSONAL_LABELS = ("happy", "neutral", "anxious")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_bins(
    n: int, rng: np.random.Generator, *, start: float = 0.0, step: float = 1.0,
    hidden: tuple[int, int] | None = None, personal: bool = False,
) -> pd.DataFrame:  # fmt: skip
    """``n`` bins of one person; bins in ``hidden`` = [i0, i1) have no visible face and no scores."""
    t = start + step * np.arange(n)
    walk = lambda k: np.cumsum(rng.normal(0, 0.35, (n, k)), axis=0)  # noqa: E731  smooth over time
    acad = _softmax(walk(5) + np.array([1.0, 0.3, 0.0, -0.3, -0.2]))
    expr = _softmax(walk(7) + np.array([-0.5, -1.5, -1.0, 0.5, -0.3, -0.6, 1.2]))
    engagement = np.clip(0.55 + 0.6 * (acad[:, 0] + acad[:, 1] - acad[:, 3] - acad[:, 4]) / 2, 0, 1)
    df = pd.DataFrame({"t_start": t, "t_end": t + step, "face_visible": True, "engagement": engagement})
    for i, c in enumerate(repo.ACADEMIC_COLUMNS):
        df[c] = acad[:, i]
    for i, c in enumerate(repo.EXPRESSION_COLUMNS):
        df[c] = expr[:, i]
    if personal:
        conf = rng.uniform(0.3, 0.95, n)
        labels = np.array(PERSONAL_LABELS)[rng.integers(0, len(PERSONAL_LABELS), n)]
        df["personal_label"] = np.where(conf < 0.5, "uncertain", labels)
        df["personal_confidence"] = conf
    if hidden is not None:
        i0, i1 = hidden
        score_cols = [c for c in df.columns if c not in ("t_start", "t_end", "face_visible", "personal_label")]
        df.loc[i0 : i1 - 1, score_cols] = np.nan
        df.loc[i0 : i1 - 1, "face_visible"] = False
        if personal:
            df["personal_label"] = df["personal_label"].astype(object)
            df.loc[i0 : i1 - 1, "personal_label"] = None
    return df


def add_analysed_session(
    url: str, group_id: int, kind: SessionKind, title: str, n_persons: int, n_bins: int = 40, seed: int = 0,
    labels: tuple[str, ...] = (),
) -> tuple[int, list[int]]:  # fmt: skip
    """A session with ``n_persons`` analysed persons (and a finished job); returns (session id, person ids)."""
    rng = np.random.default_rng(seed)
    with session_scope(url) as s:
        rec = repo.create_recording(s, f"/videos/{title}.mp4", kind, title=title, group_id=group_id)
        job = repo.create_job(s, ANALYZE_TASK, session_id=rec.id, params={"fps": 4.0})
        tracks = []
        for k in range(n_persons):
            bins = make_bins(n_bins, rng, start=0.0, hidden=(10 + 3 * k, 15 + 3 * k), personal=kind is SessionKind.therapy)
            times = np.arange(0, n_bins, 0.25, dtype=np.float32)
            boxes = np.tile(np.array([[10 + 50 * k, 10, 50 + 50 * k, 50]], np.float32), (len(times), 1))
            tracks.append(repo.TrackRecord(
                track_key=k, times=times, face_boxes=boxes, context_boxes=boxes * 1.5, embedding=rng.normal(size=128),
                bins=bins, features=rng.normal(size=(n_bins, 4)).astype(np.float32), feature_names=("a", "b", "c", "d"),
            ))  # fmt: skip
        person_of = repo.replace_analysis(s, repo.AnalysisResult(
            recording_id=rec.id, fps=25.0, n_frames=25 * n_bins, width=640, height=360, analysis_fps=4.0,
            bin_seconds=1.0, academic_model=ACADEMIC_MODEL, expression_model=EXPRESSION_MODEL, tracks=tracks,
        ))  # fmt: skip
        repo.update_job(s, job.id, status=JobStatus.done, progress=1.0, message="analysed")
        pids = [person_of[k] for k in range(n_persons)]
        if labels:
            from storage.models import Person

            for pid, label in zip(pids, labels):
                s.get(Person, pid).label = label
        return rec.id, pids


@dataclass
class Seeded:
    """Ids of everything ``seed`` created."""

    groups: dict[str, int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, int] = field(default_factory=dict)
    persons: dict[str, list[int]] = field(default_factory=dict)


def seed(url: str, *, password: str | None = None) -> Seeded:
    """Groups class-a, class-b (classroom), child-x (therapy); users admin, teacher (class-a), clinician (child-x)."""
    out = Seeded()
    with session_scope(url) as s:
        for name, kind in (("class-a", SessionKind.classroom), ("class-b", SessionKind.classroom),
                           ("child-x", SessionKind.therapy)):  # fmt: skip
            out.groups[name] = repo.get_or_create_group(s, name, kind).id
        for name, role in (("admin", Role.admin), ("teacher", Role.teacher), ("clinician", Role.clinician)):
            out.users[name] = access.create_user(s, name, role, password).id
        access.grant(s, out.users["teacher"], out.groups["class-a"])
        access.grant(s, out.users["clinician"], out.groups["child-x"])
    for key, group, kind, n, labels in (
        ("maths", "class-a", SessionKind.classroom, 3, ("Ada", "Ben")),
        ("history", "class-b", SessionKind.classroom, 2, ()),
        ("therapy", "child-x", SessionKind.therapy, 1, ("Child X",)),
    ):
        sid, pids = add_analysed_session(url, out.groups[group], kind, f"{key} lesson", n, seed=len(out.sessions),
                                         labels=labels)  # fmt: skip
        out.sessions[key], out.persons[key] = sid, pids
    return out


# --- one seeded template per test module, copied for each test ----------------------------------


def make_seeded_template(directory) -> tuple[Path, Seeded]:
    """Migrate and seed a database file in ``directory`` (migrating is the slow part: once per module)."""
    from storage.db import get_engine, migrate

    path = Path(directory) / "affectline.db"
    url = f"sqlite:///{path}"
    migrate(url)
    ids = seed(url)
    get_engine(url).dispose()
    return path, ids


def copy_seeded(template: tuple[Path, Seeded], settings) -> Seeded:
    """The template copied to this test's ``settings.resolved_database_url``; dashboard caches cleared."""
    import sqlite3

    from dashboard import data

    src, ids = template
    dest = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)  # consistent copy, WAL included
    data.invalidate()  # cached results of an earlier test's database must not leak in
    return ids
