"""PDF reports: rendered with poppler (pdftoppm, pdftotext) and checked for what a reader would look for."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from services import report_charts, reports
from services.actor import actor_for_user, operator
from storage import people, person_models, repo, tags
from storage.db import session_scope
from storage.models import AuditEntry, Recording, SessionKind
from tests.big_session import add_class_session
from tests.dashboard_factories import add_analysed_session, seed


@pytest.fixture(autouse=True)
def _poppler() -> None:
    assert shutil.which("pdftoppm") and shutil.which("pdftotext"), "poppler-utils missing (.ci/run installs it)"


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "r.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True).stdout


def flat(text: str) -> str:
    """The text with line breaks and runs of spaces as single spaces (phrases wrap across lines)."""
    return " ".join(text.split())


def pdf_pages(pdf: bytes, tmp_path: Path, dpi: int = 60) -> list[np.ndarray]:
    path = tmp_path / "p.pdf"
    path.write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", str(dpi), "-png", str(path), str(tmp_path / "page")], check=True)
    return [np.asarray(Image.open(p).convert("RGB"), dtype=int) for p in sorted(tmp_path.glob("page-*.png"))]


def near(img: np.ndarray, hex_color: str, tol: int = 40) -> np.ndarray:
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
    return np.abs(img - rgb).max(axis=2) <= tol


def colourful(img: np.ndarray) -> np.ndarray:
    return (img.max(axis=2) - img.min(axis=2)) > 60


@pytest.fixture()
def ids(db_url):
    return seed(db_url)


@pytest.fixture()
def big(db_url, ids):
    """A 20-minute, 12-student class with a planted dip at 06:40-07:20 (students 01-08) and a hidden face."""
    sid, pids = add_class_session(db_url, ids.groups["class-a"], minutes=20, n_persons=12, title="Planted class")
    return sid, pids


def test_class_report_has_curve_heat_map_moments_check_ins_and_students_by_name(db_url, ids, big, tmp_path):
    sid, _ = big
    out = reports.session_report(db_url, operator(), sid)
    assert out.kind == "class" and out.data.startswith(b"%PDF") and out.pages >= 2
    text = pdf_text(out.data, tmp_path)
    assert "Class session report: Planted class" in text
    assert "cues@0123456789ab: interpretable cue model, not a trained classifier" in text
    assert "not a trained classifier of academic emotion" in flat(text)  # what the model is not
    # The planted dip (distraction of students 01-08 from 06:40 for 40 s) is a moment, with who.
    dip = next(line for line in text.splitlines() if "class engagement dipped" in line)
    start = re.search(r"(\d\d:\d\d)-\d\d:\d\d", dip).group(1)
    assert abs(60 * int(start[:2]) + int(start[3:]) - 400) <= 15, dip
    assert "distraction spiked" in text and "Student 01" in text.split("Moments")[1]
    # Worth a check-in: the planted fatigue of the last 2.2 minutes (students 07-12), each against their own usual.
    checks = text.split("Worth a check-in")[1].split("Per student")[0]
    flagged = sorted(set(re.findall(r"Student (\d\d)", checks)))
    assert flagged == [f"{i:02d}" for i in range(7, 13)], checks
    assert "tired" in checks and re.search(r"17:[45]\d-20:00", checks)
    # Per-student table: every student once, by name, no rank column, no "lowest first"; the hidden one (12)
    # with ~5 minutes not visible.
    table = text.split("Per student (by name)")[1]
    lines = [ln.split() for ln in table.splitlines() if ln.strip().startswith("Student ")]
    assert [r[1] for r in lines] == [f"{i:02d}" for i in range(1, 13)]  # name order, not engagement order
    means = [float(r[2]) for r in lines]
    assert means != sorted(means)
    rows = {r[1]: r for r in lines}
    assert abs(float(rows["12"][-1]) - 5.0) < 0.2 and all(float(r[-1]) < 0.1 for k, r in rows.items() if k != "12")
    assert not re.search(r"^\s*#\s", text, re.M) and "lowest" not in text and not re.search(r"^\s*\d+\s+Student", text, re.M)

    pages = pdf_pages(out.data, tmp_path)
    # Chart areas are drawn: the engagement line and the shaded moments on page 1, the heat map's colours.
    assert near(pages[0], report_charts.ENGAGEMENT_LINE).sum() > 300
    assert near(pages[0], "#fbd3b5", tol=25).sum() > 200  # a moment's orange span (alpha 0.18 on white)
    heat = max(pages, key=lambda p: colourful(p).sum())
    filled_rows = (colourful(heat).mean(axis=1) > 0.5).sum()  # pixel rows more than half covered in colour
    assert filled_rows > 80, filled_rows  # the 12 students' rows, ~140 px at 60 dpi
    assert near(heat, report_charts.UNSEEN, tol=6).sum() > 20  # the hidden student's grey cells


def test_child_report_shows_tags_uncertain_spans_and_models(db_url, ids, tmp_path):
    sid, (pid,) = ids.sessions["therapy"], ids.persons["therapy"]
    with session_scope(db_url) as s:
        tags.add_tag(s, session_id=sid, person_id=pid, t_start=20.0, t_end=31.0, label="happy", note="played with the dog",
                     author="clinician")  # fmt: skip
    clin = _actor(db_url, ids.users["clinician"])
    out = reports.session_report(db_url, clin, sid)
    assert out.kind == "child"
    text = pdf_text(out.data, tmp_path)
    assert "Therapy session report: therapy lesson" in text
    assert "fer_mini_xception@ba9876543210: FER2013 mini-Xception expression network" in text
    assert "no baseline or personal model active" in text and "not as a diagnosis" in flat(text)

    # With a personal model active: its version and how it compared with the population model.
    fit = {"n_folds": 5, "n_bins": 120, **{k: {"macro_f1": f1, "balanced_accuracy": 0.5, "coverage": 0.8,
                                               "accuracy_when_certain": 0.7}
                                           for k, f1 in (("population", 0.31), ("population_calibrated", 0.42),
                                                         ("personal", 0.66))},
           "shares": {str(sid): {"bins": 100, "tagged": {"calm": 0.9, "happy": 0.1}, "before": {"neutral": 1.0},
                                 "after": {"calm": 0.85, "happy": 0.15}}}}  # fmt: skip
    with session_scope(db_url) as s:
        person_models.save_model(s, pid, "personal", b"x", fit, activate=True)
    text = pdf_text(reports.session_report(db_url, clin, sid).data, tmp_path)
    assert "personal model v1" in text and "5 folds over 120 bins" in flat(text)
    assert "tagged calm 90%, happy 10% | before neutral 100% | after calm 85%, happy 15%" in flat(text)
    assert "saved before the comparison was restricted" in flat(text)  # an older version's report says so
    rows = {ln.split()[0]: ln.split() for ln in text.splitlines() if re.match(r"\s*(population|personal)\s", ln)}
    assert rows["personal"][1] == "0.66" and rows["population"][1] == "0.31"
    out = reports.session_report(db_url, clin, sid)
    line = next(ln for ln in text.splitlines() if "played with the dog" in ln)
    assert "00:20" in line and "00:31" in line and "happy" in line and "clinician" in line
    assert "uncertain" in text.split("Personal model labels")[1].splitlines()[0]
    page = pdf_pages(out.data, tmp_path, dpi=100)[0]
    assert near(page, report_charts.TAG_COLORS[0], tol=30).sum() > 30  # the tag's start line on both panels
    assert near(page, report_charts.UNSEEN, tol=6).sum() > 300  # the face-not-visible span
    hatch = near(page, "#616161", tol=25)
    assert hatch.sum() > 200  # uncertain spans are hatched


def test_group_report_over_a_date_range(db_url, ids, tmp_path):
    g = ids.groups["class-a"]
    old, (ada_then, ben_then) = add_analysed_session(db_url, g, SessionKind.classroom, "old lesson", 2, seed=7)
    with session_scope(db_url) as s:
        s.get(Recording, old).created_at = datetime.now(timezone.utc) - timedelta(days=30)
        ada, ben = ids.persons["maths"][:2]
        people.merge(s, ada, ada_then, "teacher")  # the same children, recognised in both sessions
        people.merge(s, ben, ben_then, "teacher")
    # Both lessons are 40 s recordings: by default (trend_min_minutes = 5) left out, and the report says so.
    short = reports.group_report(db_url, operator(), "class-a", date.today() - timedelta(days=40), date.today())
    text = flat(pdf_text(short.data, tmp_path))
    assert "Sessions (0)" in text and "2 recordings shorter than 5 min were left out" in text
    assert "old lesson" not in text and "maths lesson" not in text
    out = reports.group_report(db_url, operator(), "class-a", date.today() - timedelta(days=40), date.today(),
                               min_minutes=0)  # fmt: skip
    text = pdf_text(out.data, tmp_path)
    assert "Group report: class-a" in text and "Sessions (2)" in text and "left out" not in text
    assert "old lesson" in text and "maths lesson" in text and "history lesson" not in text
    per = text.split("Per student over the range (by name)")[1].splitlines()
    ada = next(ln for ln in per if ln.strip().startswith("Ada"))
    assert ada.split()[1] == "2"  # seen in both sessions
    names = [ln.split()[0] for ln in per if ln.strip()[:3] in ("Ada", "Ben", "Per")]
    assert names == sorted(names, key=str.casefold) and "lowest" not in text  # by name, never ranked
    recent = reports.group_report(db_url, operator(), str(g), date.today() - timedelta(days=2), min_minutes=0)
    text = pdf_text(recent.data, tmp_path)
    assert "Sessions (1)" in text and "old lesson" not in text
    assert colourful(pdf_pages(out.data, tmp_path)[0]).sum() > 500  # the trend chart is drawn
    with pytest.raises(ValueError, match="before it starts"):
        reports.group_report(db_url, operator(), g, date.today(), date.today() - timedelta(days=1))


def test_group_summaries_from_sql_are_the_pandas_ones(db_url, ids, big):
    """The group report's per-person sums, aggregated in SQL, equal ``student_summary`` over the loaded bins:
    a hidden face (no scores there), ties and two sessions of different bin lengths."""
    import pandas as pd

    from services import bins as bins_io
    from services import summaries
    from storage.models import TimeBin

    sid, pids = big
    maths = ids.sessions["maths"]
    with session_scope(db_url) as s:  # a tie (confusion = fatigue: confusion wins, as argmax) and a missing score
        row = s.query(TimeBin).filter_by(session_id=sid, person_id=pids[0]).order_by(TimeBin.t_start).first()
        row.confusion, row.fatigue, row.distraction, row.neutrality, row.enjoyment = 0.4, 0.4, 0.1, 0.05, None
        steps = {r.id: float(r.bin_seconds or 1.0) for r in s.query(Recording).filter(Recording.id.in_([sid, maths]))}
        got = bins_io.student_summaries(s, [sid, maths], steps)
        for k in (sid, maths):
            want = summaries.student_summary(bins_io.load_bins(s, k, reports.CLASS_COLUMNS), steps[k])
            pd.testing.assert_frame_equal(got[k], want, check_dtype=False)
        assert bins_io.student_summaries(s, [], {}) == {}
    assert got[sid]["minutes_not_visible"].max() > 4.9  # the planted 300 s hidden face is counted


def test_group_report_over_a_term_of_the_same_students(db_url, ids, tmp_path):
    from tests.big_session import add_term

    g = ids.groups["class-a"]
    sids = add_term(db_url, g, n_sessions=5, minutes=6, n_persons=4, distinct=2)
    clip, _ = add_analysed_session(db_url, g, SessionKind.classroom, "3-second clip", 2, n_bins=3, seed=9)
    with session_scope(db_url) as s:  # a 3-second clip in the same weeks: it would drag the trend and top the table
        s.get(Recording, clip).created_at = datetime(2026, 9, 3, 10, tzinfo=timezone.utc)
    out = reports.group_report(db_url, operator(), g, date(2026, 9, 1), date(2026, 9, 30))
    text = pdf_text(out.data, tmp_path)
    assert "Sessions (5)" in text and all(f"Lesson {i:02d}" in text for i in range(1, 6))
    assert "3-second clip" not in text and "1 recording shorter than 5 min was left out" in flat(text)
    with session_scope(db_url) as s:
        (entry,) = [e for e in repo.audit_log(s) if e.action == "report"]
        assert entry.detail["left_out_short"] == [clip] and clip not in entry.detail["sessions"]
    per = text.split("Per student")[1].splitlines()
    rows = [ln for ln in per if ln.strip().startswith("Student ")]
    assert len(rows) == 4 and all(ln.split()[2] == "5" for ln in rows)  # each student once, seen in all 5
    assert len(set(sids)) == 5


def _actor(url, uid):
    with session_scope(url) as s:
        return actor_for_user(s, uid)


def test_reports_are_audited_and_respect_visibility(db_url, ids):
    teacher = _actor(db_url, ids.users["teacher"])
    reports.session_report(db_url, teacher, ids.sessions["maths"])
    reports.group_report(db_url, teacher, "class-a")
    for hidden in (ids.sessions["therapy"], ids.sessions["history"], 10_000):
        with pytest.raises(LookupError, match="does not exist or is not visible"):
            reports.session_report(db_url, teacher, hidden)
    with pytest.raises(LookupError, match="does not exist or is not visible"):
        reports.group_report(db_url, teacher, "child-x")
    with session_scope(db_url) as s:
        got = [(e.actor, e.target, e.detail["kind"]) for e in repo.audit_log(s) if e.action == "report"]
    assert got == [("teacher", f"group:{ids.groups['class-a']}", "group"),
                   ("teacher", f"session:{ids.sessions['maths']}", "class")]  # fmt: skip


def test_cli_report_session_and_group(db_url, ids, big, tmp_path, settings):
    from cli.main import main

    sid, _ = big
    runner = CliRunner()
    res = runner.invoke(main, ["--as", "Ms Head", "report", "session", str(sid), "-o", str(tmp_path / "c.pdf")])
    assert res.exit_code == 0, res.output
    assert "class report" in res.output and (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")
    res = runner.invoke(main, ["report", "group", "class-a", "--from", str(date.today()), "--to", str(date.today()),
                               "-o", str(tmp_path / "g.pdf")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "Planted class" in pdf_text((tmp_path / "g.pdf").read_bytes(), tmp_path)
    res = runner.invoke(main, ["report", "session", "99999", "-o", str(tmp_path / "x.pdf")])
    assert res.exit_code != 0 and "session 99999 does not exist" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.pdf").exists()
    res = runner.invoke(main, ["report", "group", "class-a", "--from", "last week", "-o", str(tmp_path / "y.pdf")])
    assert res.exit_code == 2 and "last week" in res.output
    with session_scope(db_url) as s:
        actors = [e.actor for e in s.query(AuditEntry).filter(AuditEntry.action == "report")]
    assert len(actors) == 2 and actors[0].endswith("(as Ms Head)")


def test_two_reports_built_at_once_are_both_whole(db_url, ids, tmp_path):
    """Streamlit serves each browser session from its own thread: reports must not share figure state."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [ids.sessions["maths"], ids.sessions["therapy"]] * 2
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda sid: reports.session_report(db_url, operator(), sid), jobs))
    for i, (sid, out) in enumerate(zip(jobs, outs)):
        text = pdf_text(out.data, tmp_path)
        title = "Class session report: maths lesson" if sid == ids.sessions["maths"] else "Therapy session report"
        (tmp_path / str(i)).mkdir()
        assert title in text and colourful(pdf_pages(out.data, tmp_path / str(i))[0]).sum() > 500


def test_class_report_counts_not_readable_apart_and_says_how_accurate_the_model_is(db_url, ids, big, tmp_path):
    """Student 01's face visible but unreadable for 5 minutes: its own column and violet cells, no emotion."""
    from sqlalchemy import update

    from storage.models import TimeBin

    sid, pids = big
    with session_scope(db_url) as s:
        s.execute(update(TimeBin).where(TimeBin.session_id == sid, TimeBin.person_id == pids[0], TimeBin.t_start >= 60,
                                        TimeBin.t_start < 360)
                  .values(face_visible=True, readable=0.0, unreadable_reason="too_small", engagement=None,
                          neutrality=None, enjoyment=None, confusion=None, fatigue=None, distraction=None))  # fmt: skip
    out = reports.session_report(db_url, operator(), sid)
    text = flat(pdf_text(out.data, tmp_path))
    assert "accuracy not measured" in text and "not readable" in text
    assert "Minutes not readable: visible minutes of a face the model cannot read" in text  # the table's column
    row = next(line for line in pdf_text(out.data, tmp_path).splitlines() if re.match(r"\s*Student 01\s", line))
    assert row.split()[-2:] == ["5.0", "0.0"]  # 5 minutes not readable, in their own column; none not visible
    pages = pdf_pages(out.data, tmp_path, dpi=80)
    assert any(near(p, report_charts.NOT_READABLE, 30).sum() > 50 for p in pages)  # the violet cells are drawn
