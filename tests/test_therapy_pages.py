"""Therapy pages speak therapy: per-session counts and total durations of each tagged behaviour, week over week,
on the session page and the child's review page (rendered through AppTest), and no "class" or "students"
wording anywhere on them or in the therapy PDFs."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from affectline.queue import ANALYZE_TASK
from dashboard import actions, auth, data
from services import therapy
from storage import repo
from storage.db import get_engine, migrate, session_scope
from storage.models import JobStatus, Recording, SessionKind
from tests.page_charts import specs
from tests.dashboard_factories import make_bins, seed

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
CLASSROOM_WORDS = re.compile(r"\b(class(es)?|students?|pupils?|classroom)\b", re.I)
WEEK1 = datetime(2026, 11, 25, 10, tzinfo=timezone.utc)  # a Wednesday: the week of Monday 23 November
WEEK2 = datetime(2026, 12, 1, 10, tzinfo=timezone.utc)  # Tuesday of the next week


# --- the counting, without a page --------------------------------------------------------------


def test_counts_durations_and_weeks():
    sessions = pd.DataFrame({"session_id": [1, 2, 3], "title": ["a", "b", "c"], "at": [WEEK1, WEEK1, WEEK2]})
    tags = pd.DataFrame([
        (1, "fear", 1.0, 3.0), (1, "fear", 2.0, 6.0),  # overlapping: 2 tags, 5 s (not 6)
        (1, "happy", 10.0, 20.0), (2, "happy", 0.0, 30.0), (2, "hand flapping", 7.0, 7.0),  # a point event
        (3, "fear", 5.0, 8.0),
    ], columns=["session_id", "label", "t_start", "t_end"])  # fmt: skip
    per = therapy.behaviour_counts(tags, sessions)
    assert per[["session_id", "label", "count", "seconds"]].values.tolist() == [
        [1, "fear", 2, 5.0], [1, "happy", 1, 10.0], [2, "hand flapping", 1, 0.0], [2, "happy", 1, 30.0],
        [3, "fear", 1, 3.0]]  # fmt: skip
    wk = therapy.weekly(per, sessions)
    w1, w2 = pd.Timestamp("2026-11-23", tz="UTC"), pd.Timestamp("2026-11-30", tz="UTC")
    assert wk.values.tolist() == [[w1, "fear", 2, 5.0, 2], [w1, "hand flapping", 1, 0.0, 2], [w1, "happy", 2, 40.0, 2],
                                  [w2, "fear", 1, 3.0, 1]]  # fmt: skip
    table = therapy.week_table(wk)
    assert table.columns.tolist() == ["behaviour", "week of 2026-11-23", "week of 2026-11-30"]
    assert table.values.tolist() == [["fear", "2 · 00:05", "1 · 00:03"], ["hand flapping", "1 · 00:00", "0 · 00:00"],
                                     ["happy", "2 · 00:40", "0 · 00:00"]]  # fmt: skip
    one = therapy.session_table(per, 1, 100.0)
    assert one.values.tolist() == [["fear", 2, "00:05", "5%"], ["happy", 1, "00:10", "10%"]]


# --- the pages -----------------------------------------------------------------------------------


def _add_session(s, group_id: int, pid: int, title: str, at: datetime, n_bins: int, rng) -> int:
    rec = repo.create_recording(s, f"/videos/{title}.mp4", SessionKind.therapy, title=title, group_id=group_id)
    job = repo.create_job(s, ANALYZE_TASK, session_id=rec.id)
    times = np.arange(0, n_bins, 0.25, dtype=np.float32)
    boxes = np.tile(np.array([[10, 10, 90, 90]], np.float32), (len(times), 1))
    track = repo.TrackRecord(track_key=0, times=times, face_boxes=boxes, context_boxes=boxes, embedding=None,
                             bins=make_bins(n_bins, rng, personal=True), features=np.zeros((n_bins, 2), np.float32),
                             feature_names=("a", "b"), person_id=pid)  # fmt: skip
    repo.replace_analysis(s, repo.AnalysisResult(rec.id, 25.0, 25 * n_bins, 640, 360, 4.0, 1.0, "cues@0123456789ab",
                                                 "fer_mini_xception@ba9876543210", [track]))  # fmt: skip
    repo.update_job(s, job.id, status=JobStatus.done, progress=1.0)
    s.get(Recording, rec.id).created_at = at
    return rec.id


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("therapy") / "affectline.db"
    url = f"sqlite:///{path}"
    migrate(url)
    ids = seed(url)
    rng = np.random.default_rng(5)
    pid = ids.persons["therapy"][0]
    with session_scope(url) as s:
        s.get(Recording, ids.sessions["therapy"]).created_at = WEEK1
        later = _add_session(s, ids.groups["child-x"], pid, "session 2", WEEK2, 60, rng)
    get_engine(url).dispose()
    return path, ids, later


@pytest.fixture()
def db(template, settings):
    src, ids, later = template
    dest = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)
    data.invalidate()
    url = settings.resolved_database_url
    first, pid = ids.sessions["therapy"], ids.persons["therapy"][0]
    v = data.viewer_for(url, ids.users["clinician"])
    actions.add_tag(url, v, first, pid, 1, 3, "fear", "")
    actions.add_tag(url, v, first, pid, 2, 6, "fear", "")
    actions.add_tag(url, v, first, pid, 10, 20, "happy", "")
    actions.add_tag(url, v, later, pid, 5, 8, "fear", "")
    return url, ids, first, later, pid


def _open(user_id: int, page: str, sid: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[auth.USER_KEY] = user_id
    at.query_params["session"] = str(sid)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _table(at: AppTest, column: str) -> pd.DataFrame:
    (df,) = [d.value for d in at.dataframe if column in d.value.columns]  # AppTest keeps no dataframe keys
    return df


def _all_text(at: AppTest) -> str:
    """Every string the page sent: Markdown, labels, options, chart specs, table column names. Not the cue
    model's documentation (an expander of the review page): there "class" is a model's output class and
    "students" what it was not validated on, the model card's words about the model, not about the child."""
    out = []
    doc = (ROOT / "docs" / "cue_model.md").read_text()

    def walk(node):
        proto = getattr(node, "proto", None)
        value = getattr(node, "value", None)
        if isinstance(value, str) and value.strip()[:200] == doc.strip()[:200]:
            return
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    for df in at.dataframe:
        out.append(" ".join(map(str, df.value.columns)) + " " + df.value.to_string())
    return "\n".join(out)


def _words(text: str) -> list[str]:
    # our own widget keys and plotly's state names are not shown to anyone
    text = re.sub(r'"uirevision":\s*"[^"]*"', "", text)
    return sorted({m.group(0) for m in CLASSROOM_WORDS.finditer(text)})


def test_the_session_page_of_a_therapy_session_counts_behaviours_week_over_week(db):
    url, ids, first, later, pid = db
    at = _open(ids.users["clinician"], "views/session.py", later)
    charts = specs(at)
    assert charts[0]["layout"]["title"]["text"] == "Engagement over time (therapy session)"
    here = _table(at, "share of the session")
    assert here.values.tolist() == [["fear", 1, "00:03", "5%"]]  # 3 s of a 60 s session
    weeks = _table(at, "week of 2026-11-23")
    assert weeks.values.tolist() == [["fear", "2 · 00:05", "1 · 00:03"], ["happy", "1 · 00:10", "0 · 00:00"]]
    by_session = _table(at, "session")
    assert by_session.values.tolist() == [["2026-11-25", f"therapy lesson (#{first})", "2 · 00:05", "1 · 00:10"],
                                          ["2026-12-01", f"session 2 (#{later})", "1 · 00:03", "0 · 00:00"]]
    bars = charts[-1]["data"]
    assert {b["name"]: b["y"] for b in bars} == {"fear": [round(5 / 60, 2), 0.05], "happy": [round(10 / 60, 2), 0.0]}
    assert {b["name"]: b["text"] for b in bars}["fear"] == ["2×", "1×"]
    assert _words(_all_text(at)) == []


def test_a_childs_check_ins_are_worded_for_the_child():
    from services import checkins

    n = 600
    dist = np.full(n, 0.1)
    dist[300:420] = 0.8  # two minutes well above the child's own usual level
    bins = pd.DataFrame({"person_id": 7, "person_label": "Child X", "t_start": np.arange(n, dtype=float),
                         "face_visible": True, "readable": 1.0, "distraction": dist, "fatigue": 0.1})  # fmt: skip
    (c,) = checkins.checkins(bins, 1.0)
    said = " ".join([checkins.intro(True), checkins.none_found(True), checkins.line(c)])
    assert checkins.line(c) == "Child X looked distracted for 2.0 min (distraction 0.80 vs their usual 0.10)."
    assert _words(said) == [] and "child" in checkins.intro(True)
    assert _words(checkins.intro(False) + checkins.none_found(False))  # the scan finds the classroom's words


def test_the_therapy_session_page_lists_the_childs_check_ins_in_therapy_words(db):
    from services import checkins

    url, ids, first, later, pid = db
    at = _open(ids.users["clinician"], "views/session.py", later)
    from dashboard.safe import shown

    said = [shown(m.value) for m in [*at.markdown, *at.caption]]
    assert "**Worth a look (0)**" in said and checkins.none_found(True) in said
    assert not any("Yellow" in t for t in said) and any("Navy: tags" in t for t in said)  # not "happy"'s yellow
    assert _words(_all_text(at)) == []


def test_the_review_page_counts_behaviours_and_says_nothing_of_a_class(db):
    url, ids, first, later, pid = db
    at = _open(ids.users["clinician"], "views/review.py", first)
    here = _table(at, "share of the session")
    assert here.values.tolist() == [["fear", 2, "00:05", "12%"], ["happy", 1, "00:10", "25%"]]  # of 40 s
    assert _words(_all_text(at)) == []


@pytest.mark.parametrize("page", ["views/sessions.py", "views/reports.py", "views/people.py"])
def test_the_clinicians_other_pages_say_nothing_of_a_class(db, page):
    url, ids, first, later, pid = db
    at = _open(ids.users["clinician"], page, later)
    assert _words(_all_text(at)) == []


def test_a_classroom_session_page_still_speaks_of_the_class(db):
    """The check above can fail: the same scan finds the words on a classroom page."""
    url, ids, *_ = db
    at = _open(ids.users["admin"], "views/session.py", ids.sessions["maths"])
    assert "students" in [w.lower() for w in _words(_all_text(at))]


def _pdf_text(pdf: bytes, tmp_path) -> str:
    import subprocess

    f = tmp_path / "r.pdf"
    f.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(f), "-"], capture_output=True, text=True, check=True).stdout


def test_therapy_pdfs_say_child_not_class(db, tmp_path):
    from services import reports

    url, ids, first, later, pid = db
    clinician = data.viewer_for(url, ids.users["clinician"])
    session_pdf = _pdf_text(reports.session_report(url, clinician, later).data, tmp_path)
    assert _words(session_pdf) == [] and "Therapy session report" in session_pdf
    assert "fear" in session_pdf and "Tagged behaviours" in session_pdf
    # The seeded sessions are short recordings: min_minutes=0 keeps them (trend_min_minutes would leave them out).
    group_pdf = _pdf_text(reports.group_report(url, clinician, ids.groups["child-x"], min_minutes=0).data, tmp_path)
    assert _words(group_pdf) == [], _words(group_pdf)
    assert "week of 2026-11-23" in group_pdf and "week of 2026-11-30" in group_pdf
