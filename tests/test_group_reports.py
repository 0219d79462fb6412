"""Reports for several groups or a date range at once (services.group_reports), the scheduled run the
beat sends, and the page that prints them."""

from __future__ import annotations

import subprocess
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from services import group_reports as gr
from services.actor import Actor, operator
from storage import repo
from storage.db import session_scope
from storage.models import AuditEntry, Recording, Role, SessionKind
from tests.dashboard_factories import add_analysed_session

TODAY = date(2026, 12, 9)  # a Wednesday: last week is Mon 2026-11-30 .. Sun 2026-12-06


def pdf_text(data: bytes, tmp_path: Path) -> str:
    p = tmp_path / "r.pdf"
    p.write_bytes(data)
    return subprocess.run(["pdftotext", "-layout", str(p), "-"], capture_output=True, text=True, check=True).stdout


@pytest.fixture()
def world(db_url):
    """Class A (two lessons last week, one the week before), Class B (one last week), Child X (none); each lesson
    6 minutes (long enough for a trend: Settings.trend_min_minutes)."""
    with session_scope(db_url) as s:
        a = repo.get_or_create_group(s, "Class A", SessionKind.classroom).id
        b = repo.get_or_create_group(s, "Class B", SessionKind.classroom).id
        x = repo.get_or_create_group(s, "Child X", SessionKind.therapy).id
    made = {}
    for name, g, day in (("a1", a, date(2026, 12, 1)), ("a2", a, date(2026, 12, 4)), ("a0", a, date(2026, 11, 24)),
                         ("b1", b, date(2026, 12, 2))):  # fmt: skip
        sid, _ = add_analysed_session(db_url, g, SessionKind.classroom, f"lesson {name}", 3, n_bins=360)
        with session_scope(db_url) as s:
            at = datetime(day.year, day.month, day.day, 9, tzinfo=timezone.utc)
            s.execute(update(Recording).where(Recording.id == sid).values(created_at=at))
        made[name] = sid
    return dict(url=db_url, a=a, b=b, x=x, **made)


def audits(url, action):
    with session_scope(url) as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))
        s.expunge_all()
        return rows


def test_one_pdf_for_several_groups_and_a_range(world, tmp_path):
    url = world["url"]
    rep = gr.groups_report(url, operator(), ["Class A", world["b"]], date(2026, 11, 30), date(2026, 12, 6))
    text = pdf_text(rep.data, tmp_path)
    assert "Group reports: 2 groups" in text and "Class A (classroom group" in text and "Class B (classroom group" in text
    assert "lesson a1" in text and "lesson a2" in text and "lesson b1" in text and "lesson a0" not in text  # the range
    assert rep.file_name == f"affectline_group_report_{world['a']}_{world['b']}_2026-11-30_2026-12-06.pdf"
    rows = audits(url, "report")
    assert [r.target for r in rows] == [f"group:{world['a']}", f"group:{world['b']}"]
    assert rows[0].detail["sessions"] == [world["a1"], world["a2"]] and rows[0].detail["with_groups"] == [world["a"], world["b"]]
    with pytest.raises(ValueError, match="before it starts"):
        gr.groups_report(url, operator(), ["Class A"], date(2026, 12, 6), date(2026, 11, 30))
    with pytest.raises(ValueError, match="at least one group"):
        gr.groups_report(url, operator(), [], None, None)
    teacher = Actor(5, "tina", Role.teacher, (world["a"],))
    with pytest.raises(LookupError, match="Class B does not exist or is not visible"):
        gr.groups_report(url, teacher, ["Class A", "Class B"])
    assert len(audits(url, "report")) == 2  # refused: nothing printed, nothing audited


@pytest.mark.parametrize("every, want", [("daily", (date(2026, 12, 8), date(2026, 12, 8))),
                                         ("weekly", (date(2026, 11, 30), date(2026, 12, 6))),
                                         ("monthly", (date(2026, 11, 1), date(2026, 11, 30)))])  # fmt: skip
def test_the_period_just_ended(every, want):
    assert gr.period(every, TODAY) == want
    assert gr.period("weekly", date(2026, 12, 7)) == (date(2026, 11, 30), date(2026, 12, 6))  # on the Monday itself


def test_scheduled_run_writes_each_group_once(world, tmp_path):
    url, out = world["url"], tmp_path / "reports"
    run = gr.scheduled_reports(url, out, "weekly", TODAY)
    want = [gr.report_path(out, g, date(2026, 11, 30), date(2026, 12, 6)) for g in (world["a"], world["b"])]
    assert run.written == want and not run.skipped  # Child X had no session: no empty report
    assert "lesson a2" in pdf_text(want[0].read_bytes(), tmp_path) and not list(out.rglob("*.part"))
    again = gr.scheduled_reports(url, out, "weekly", TODAY)  # a redelivered message
    assert not again.written and again.skipped == want
    runs = audits(url, "scheduled_reports")
    assert [r.actor for r in runs] == ["system:reports"] * 2 and runs[0].detail["written"] == [str(p) for p in want]
    assert {r.actor for r in audits(url, "report")} == {"system:reports"} and len(audits(url, "report")) == 2


def test_the_task_function_runs_the_cli_and_the_beat_sends_it(world, settings, monkeypatch, tmp_path):
    from affectline.queue import REPORTS_TASK, beat_schedule, make_celery
    from affectline.settings import Settings, get_settings
    from tasks.reports import register, run_scheduled_reports

    out = tmp_path / "out"
    monkeypatch.setenv("AFFECTLINE_GROUP_REPORTS_DIR", str(out))
    get_settings.cache_clear()
    written = run_scheduled_reports("weekly", TODAY.isoformat())  # the task's body, in a child process like the worker
    assert [Path(p) for p in written] == [gr.report_path(out, g, date(2026, 11, 30), date(2026, 12, 6))
                                          for g in (world["a"], world["b"])]  # fmt: skip
    assert all(Path(p).read_bytes().startswith(b"%PDF") for p in written)
    with pytest.raises(RuntimeError, match=r"\(never\) failed: Error: Invalid value for '--every'"):
        run_scheduled_reports("never")  # a bad value: one line from the CLI, not a traceback

    assert "group_reports" not in beat_schedule(Settings())  # off by default
    monkeypatch.setenv("AFFECTLINE_GROUP_REPORTS_EVERY", "weekly")
    get_settings.cache_clear()
    app = make_celery(get_settings())
    entry = app.conf.beat_schedule["group_reports"]
    assert entry["task"] == REPORTS_TASK and entry["args"] == ("weekly",)
    assert entry["schedule"].day_of_week == {1} and entry["schedule"].hour == {6} and "retention" in app.conf.beat_schedule
    register(app)
    assert REPORTS_TASK in app.tasks
    get_settings.cache_clear()


def test_cli_groups_and_scheduled(world, settings, tmp_path):
    from cli.main import main

    out = tmp_path / "two.pdf"
    r = CliRunner().invoke(main, ["report", "groups", "Class A", "Class B", "--from", "2026-11-30", "--to", "2026-12-06",
                                  "-o", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert out.read_bytes().startswith(b"%PDF") and "group report" in r.output
    r = CliRunner().invoke(main, ["report", "groups", "Class A", "Nope", "-o", str(tmp_path / "x.pdf")])
    assert r.exit_code == 1 and "group Nope does not exist" in r.output and not (tmp_path / "x.pdf").exists()
    r = CliRunner().invoke(main, ["report", "scheduled"])
    assert r.exit_code == 1 and "scheduled reports are off" in r.output
    r = CliRunner().invoke(main, ["report", "scheduled", "--every", "monthly", "--today", "2026-12-09"])
    assert r.exit_code == 0, r.output
    assert "2026-11-01 to 2026-11-30: 1 written" in r.output  # only Class A had a lesson in November (a0)
    (pdf,) = (settings.data_dir / "reports").rglob("*.pdf")
    assert pdf.name == f"affectline_group_report_{world['a']}_2026-11-01_2026-11-30.pdf"


def test_short_recordings_are_left_out_of_each_groups_part_with_a_note(world, tmp_path):
    url = world["url"]
    clip, _ = add_analysed_session(url, world["a"], SessionKind.classroom, "3-second clip", 2, n_bins=3, seed=5)
    with session_scope(url) as s:
        s.execute(update(Recording).where(Recording.id == clip)
                  .values(created_at=datetime(2026, 12, 3, 9, tzinfo=timezone.utc)))  # fmt: skip
    rep = gr.groups_report(url, operator(), ["Class A", world["b"]], date(2026, 11, 30), date(2026, 12, 6))
    text = " ".join(pdf_text(rep.data, tmp_path).split())
    assert "3-second clip" not in text and "lesson a1" in text and "lesson b1" in text
    assert text.count("1 recording shorter than 5 min was left out") == 1  # in Class A's part only
    a_row = next(e for e in audits(url, "report") if e.target == f"group:{world['a']}")
    assert a_row.detail["left_out_short"] == [clip] and clip not in a_row.detail["sessions"]
    kept = gr.groups_report(url, operator(), ["Class A"], date(2026, 11, 30), date(2026, 12, 6), min_minutes=0)
    assert "3-second clip" in pdf_text(kept.data, tmp_path)
