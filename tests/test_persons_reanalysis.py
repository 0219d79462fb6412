"""Names and corrections survive re-analysis, on real footage (two people, 56 frames).

Each analysis goes through ``tasks.store.run_analysis`` with a job row, exactly as a
worker runs it. The pipeline is the real one; its output for a (video, fps) is computed
once per module and reused (the pipeline is deterministic), except where a test re-runs
it on purpose to show that a fresh computation gives the same persons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from affectline.queue import ANALYZE_TASK
from storage import people
from storage.db import from_blob, session_scope
from storage.models import Job, JobStatus, Person, PersonEmbedding, TimeBin, Track
from storage.repo import create_job, create_recording, get_or_create_group

from tests.paths import MEDIA

VIDEO = MEDIA / "two_people_head_turns_270p.mp4"
FPS = 2.0


class Memo:
    """The real pipeline, run once per (video, fps)."""

    def __init__(self, pipeline):
        self.pipeline, self.cache, self.runs = pipeline, {}, 0

    def apply(self, src, hook=None, fps=None):
        key = (str(src.path), fps)
        if key not in self.cache:
            self.runs += 1
            self.cache[key] = self.pipeline.apply(src, hook=hook, fps=fps)
        return self.cache[key]

    def analyse_chunk(self, src, window, shape, hook=None):
        # run_analysis goes through chunk rows (tasks.analysis): memoise per chunk as well.
        key = (str(src.path), window, shape)
        if key not in self.cache:
            self.runs += 1
            self.cache[key] = self.pipeline.analyse_chunk(src, window, shape, hook=hook)
        return self.cache[key]


@pytest.fixture(scope="module")
def pipeline():
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline

    with Pipeline(Settings(academic_model="cues"), device="cpu") as p:
        yield p


@pytest.fixture(scope="module")
def memo(pipeline) -> Memo:
    return Memo(pipeline)


def analyse(db_url, settings, pipeline, session_id: int | None = None, fps: float = FPS, group: str = "Class 7") -> int:
    """Analyse the video as a new session of ``group``, or again as ``session_id`` (a new job)."""
    from tasks.eager import run_analysis

    with session_scope(db_url) as s:
        if session_id is None:
            g = get_or_create_group(s, group, "classroom")
            session_id = create_recording(s, str(VIDEO), "classroom", group_id=g.id).id
        job_id = create_job(s, ANALYZE_TASK, session_id=session_id, params={"analysis_fps": fps}).id
    run_analysis(job_id, settings, pipeline=pipeline)
    with session_scope(db_url) as s:
        job = s.get(Job, job_id)
        assert job.status == JobStatus.done, job.error
    return session_id


def tracks(db_url, session_id: int) -> list[dict]:
    """The session's tracks, left to right by mean face-box centre (the two people sit side by side)."""
    with session_scope(db_url) as s:
        rows = []
        for t in s.scalars(select(Track).where(Track.session_id == session_id)):
            p = s.get(Person, t.person_id)
            boxes = from_blob(t.face_boxes, 4)
            rows.append({
                "key": t.track_key, "person": p.id, "label": p.label, "enrolled": p.enrolled, "score": t.match_score,
                "x": float((boxes[:, 0] + boxes[:, 2]).mean() / 2), "times": from_blob(t.times).tolist(),
                "emb": from_blob(t.embedding), "bins": bin_starts(s, t.id),
            })  # fmt: skip
    return sorted(rows, key=lambda r: r["x"])


def bin_starts(s, track_id: int) -> list[float]:
    q = select(TimeBin.t_start).where(TimeBin.track_id == track_id).order_by(TimeBin.t_start)
    return [float(v) for v in s.scalars(q)]


def by_person(rows: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r["person"], []).append(r)
    return out


def test_enrolled_names_stick_on_reanalysis_and_in_a_later_session(db_url, settings, pipeline, memo):
    s1 = analyse(db_url, settings, memo)
    first = tracks(db_url, s1)
    assert len(first) == 2 and first[1]["x"] - first[0]["x"] > 100, "two people side by side"
    assert sorted(r["label"] for r in first) == ["Unknown 1", "Unknown 2"] and not any(r["enrolled"] for r in first)
    with session_scope(db_url) as s:
        ann = people.enroll(s, s1, first[0]["key"], "Ann", "teacher").id
        ben = people.enroll(s, s1, first[1]["key"], "Ben", "teacher").id

    # A fresh computation (not the memo), sampled at another rate: the same people come out and
    # match their names by embedding.
    analyse(db_url, settings, pipeline, session_id=s1, fps=3.0)
    again = tracks(db_url, s1)
    assert [(r["person"], r["label"]) for r in again] == [(ann, "Ann"), (ben, "Ben")]
    assert all(0.5 < r["score"] <= 1.0 for r in again), [r["score"] for r in again]
    assert len(again[0]["times"]) > len(first[0]["times"]), "3 fps samples more than 2 fps"

    # A later session of the class: matched by embedding, nobody is 'Unknown'.
    s2 = analyse(db_url, settings, memo)
    later = tracks(db_url, s2)
    assert [(r["person"], r["label"]) for r in later] == [(ann, "Ann"), (ben, "Ben")]
    assert all(r["score"] > 0.9 for r in later), [r["score"] for r in later]  # the same faces: distance ~0
    with session_scope(db_url) as s:
        roster = people.list_persons(s)
    assert [(p.id, p.label, p.enrolled, p.n_sessions) for p in roster] == [(ann, "Ann", True, 2), (ben, "Ben", True, 2)]


def test_rename_merge_split_and_delete_survive_reanalysis(db_url, settings, memo):
    sid = analyse(db_url, settings, memo)
    left, right = tracks(db_url, sid)

    # rename: 'Unknown N' becomes an enrolled person; a re-analysis keeps the id and the name.
    with session_scope(db_url) as s:
        ann = people.rename(s, left["person"], "Ann", "t").id
    analyse(db_url, settings, memo, session_id=sid)
    left, right = tracks(db_url, sid)
    assert (left["person"], left["label"], right["enrolled"]) == (ann, "Ann", False)
    assert left["score"] > 0.9 and right["score"] is None

    # merge (a mistake on purpose): both people are Ann, and stay so after re-analysis,
    # although matching gives a person one track per session: the override takes the other.
    with session_scope(db_url) as s:
        people.merge(s, ann, right["person"], "t")
    analyse(db_url, settings, memo, session_id=sid)
    rows = tracks(db_url, sid)
    assert [r["person"] for r in rows] == [ann, ann]
    assert sorted(r["score"] is None for r in rows) == [False, True], "one matched, one by the override"

    # split it back off under a name: the right person becomes Ben, and stays Ben.
    with session_scope(db_url) as s:
        ben = people.split(s, sid, rows[1]["key"], "t", name="Ben").id
    for _ in range(2):
        analyse(db_url, settings, memo, session_id=sid)
        left, right = tracks(db_url, sid)
        assert [(left["person"], left["label"]), (right["person"], right["label"])] == [(ann, "Ann"), (ben, "Ben")]
    with session_scope(db_url) as s:
        ann_embs = [
            from_blob(v) for v in s.scalars(select(PersonEmbedding.vector).where(PersonEmbedding.person_id == ann))
        ]
    assert min(np.linalg.norm(e - right["emb"]) for e in ann_embs) > settings.enroll_threshold, "Ben's face left Ann"

    # split a time range of Ann's track off to an unnamed person: the re-analysis cuts the new
    # track the same way (same samples, same bins).
    with session_scope(db_url) as s:
        part_person = people.split(s, sid, left["key"], "t", t_start=1.0, t_end=2.5).id
    cut = {r["person"]: r for r in tracks(db_url, sid)}
    assert 0 < len(cut[part_person]["times"]) < len(left["times"])
    assert all(1.0 <= t <= 2.5 for t in cut[part_person]["times"])
    analyse(db_url, settings, memo, session_id=sid)
    rows = by_person(tracks(db_url, sid))
    assert sorted(rows) == sorted([ann, ben, part_person])
    (part,), (rest,) = rows[part_person], rows[ann]
    assert (part["times"], part["bins"]) == (cut[part_person]["times"], cut[part_person]["bins"])
    assert (rest["times"], rest["bins"]) == (cut[ann]["times"], cut[ann]["bins"])
    assert sorted(part["times"] + rest["times"]) == left["times"]

    # deleting the split-off person deletes their override with them: Ann is whole again.
    with session_scope(db_url) as s:
        people.delete_person(s, part_person, "t")
    analyse(db_url, settings, memo, session_id=sid)
    left, right = tracks(db_url, sid)
    assert (left["person"], right["person"]) == (ann, ben)
    assert left["times"] == sorted(part["times"] + rest["times"])
    assert memo.runs <= 2, "one pipeline run per (video, fps) in this module"
