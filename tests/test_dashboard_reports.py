"""The Reports & exports page (AppTest) and the export selections and per-person summaries under it."""

from __future__ import annotations

from dashboard.safe import shown

import io
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import auth
from services import exports, summaries
from services.actor import actor_for_user, operator
from storage import repo
from storage.db import get_engine, migrate, session_scope
from tests.dashboard_factories import Seeded, copy_seeded, make_seeded_template, seed

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
PAGE = "views/reports.py"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_seeded_template(tmp_path_factory.mktemp("seed"))


@pytest.fixture()
def ids(template, settings) -> Seeded:
    return copy_seeded(template, settings)


@pytest.fixture()
def url(settings, ids) -> str:
    return settings.resolved_database_url


def actor(url, uid):
    with session_scope(url) as s:
        return actor_for_user(s, uid)


def audits(url, action):
    with session_scope(url) as s:
        return [(e.actor, e.target, e.detail) for e in repo.audit_log(s) if e.action == action]


def page(user_id: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[auth.USER_KEY] = user_id
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def full_export(url, sid) -> pd.DataFrame:
    with session_scope(url) as s:
        return repo.export_frame(s, sid)


def test_selection_export_is_the_full_export_cut_to_the_range_and_persons(url, ids):
    sid = ids.sessions["maths"]
    ada = ids.persons["maths"][0]
    out = exports.export_selection(url, operator(), sid, "csv", exports.Selection(10.0, 20.0, (ada,)))
    got = pd.read_csv(io.BytesIO(out.data))
    full = full_export(url, sid)
    want = full[(full["person_id"] == ada) & (full["t_start"] < 20) & (full["t_end"] > 10)].reset_index(drop=True)
    assert tuple(got.columns) == repo.EXPORT_COLUMNS and len(got) == 10 and out.n_rows == 10
    pd.testing.assert_frame_equal(got, pd.read_csv(io.BytesIO(exports.frame_bytes(want, "csv"))))
    assert out.file_name == f"affectline_session_{sid}_0010-0020_1persons.csv"
    # No selection: the same bytes as the full export.
    assert exports.export_selection(url, operator(), sid, "csv").data == exports.export_session(url, operator(), sid,
                                                                                                "csv").data  # fmt: skip
    sel_audit = [d for _, _, d in audits(url, "export") if "t0" in d]
    assert sel_audit == [{"format": "csv", "rows": 10, "t0": 10.0, "t1": 20.0, "persons": [ada]}]
    with pytest.raises(ValueError, match="ends"):
        exports.Selection(20.0, 10.0)


def test_summary_export_matches_the_summary_of_the_selected_bins(url, ids):
    sid = ids.sessions["maths"]
    out = exports.export_summary(url, operator(), sid, "csv", exports.Selection(0.0, 30.0))
    got = pd.read_csv(io.BytesIO(out.data))
    assert list(got.columns) == ["session_id", *summaries.ROSTER_COLUMNS, "from_s", "to_s"] and len(got) == 3
    assert "rank" not in got.columns
    full = full_export(url, sid)
    want = summaries.roster(summaries.student_summary(full[full["t_start"] < 30], 1.0, duration=30.0))
    assert list(got["person_id"]) == list(want["person_id"])  # by name, as every screen
    assert got["mean_engagement"].round(5).tolist() == want["mean_engagement"].round(5).tolist()
    assert got["minutes_not_visible"].round(4).tolist() == want["minutes_not_visible"].round(4).tolist()
    assert (got["minutes_not_visible"] > 0).all()  # each seeded person has a hidden stretch before 30 s
    assert audits(url, "export_summary")[0][2] == {"format": "csv", "rows": 3, "t0": 0.0, "t1": 30.0}


def test_exports_respect_visibility(url, ids):
    teacher = actor(url, ids.users["teacher"])
    for fn in (exports.export_selection, exports.export_summary):
        with pytest.raises(LookupError, match="not visible"):
            fn(url, teacher, ids.sessions["therapy"], "csv")
    assert not audits(url, "export") and not audits(url, "export_summary")


def test_teacher_downloads_a_class_report_and_a_filtered_export(url, ids):
    at = page(ids.users["teacher"])
    assert at.title[0].value == "Reports & exports"
    assert at.selectbox(key="report_session").options == [f"maths lesson · class-a · classroom (#{ids.sessions['maths']})"]
    at.button(key="report_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    sid = ids.sessions["maths"]
    report = at.session_state[f"report_{sid}"]
    assert report.data.startswith(b"%PDF") and report.kind == "class"
    labels = [shown(b.proto.label) for b in at.get("download_button")]
    assert f"Download affectline_class_report_session_{sid}.pdf ({report.pages} pages)" in labels
    assert audits(url, "report") == [("teacher", f"session:{sid}", {"kind": "class", "pages": report.pages,
                                                                    "bytes": len(report.data)})]  # fmt: skip

    at.text_input(key="export_from").input("0:10")
    at.text_input(key="export_to").input("00:20")
    at.multiselect(key="export_persons").select(ids.persons["maths"][0])
    at.run()
    at.button(key="export_sel_button").click().run()
    out = at.session_state[f"export_sel_{sid}"]
    assert out.n_rows == 10 and set(pd.read_csv(io.BytesIO(out.data))["person_label"]) == {"Ada"}
    at.button(key="export_sum_button").click().run()
    summ = pd.read_csv(io.BytesIO(at.session_state[f"export_sum_{sid}"].data))
    assert list(summ["person_label"]) == ["Ada"]

    at.text_input(key="export_from").input("ten past").run()
    assert any("'ten past' is not mm:ss" in shown(e.value) for e in at.error)
    assert at.button(key="export_sel_button").disabled


def test_clinician_gets_a_child_report_and_admin_a_group_report(url, ids):
    at = page(ids.users["clinician"])
    at.button(key="report_button").click().run()
    assert at.session_state[f"report_{ids.sessions['therapy']}"].kind == "child"

    at = page(ids.users["admin"])
    at.multiselect(key="report_groups").set_value([ids.groups["class-a"]]).run()
    at.button(key="group_report_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    rep = at.session_state[f"group_report_{ids.groups['class-a']}_{date.today() - timedelta(days=30)}_{date.today()}"]
    assert rep.kind == "group" and rep.data.startswith(b"%PDF")
    assert any(shown(b.proto.label).startswith("Download affectline_group_report_") for b in at.get("download_button"))
    (entry,) = [e for e in audits(url, "report") if e[1].startswith("group:")]
    # the seeded maths lesson is a 40 s recording: left out (trend_min_minutes), and the audit row says which
    assert entry[0] == "admin" and entry[1] == f"group:{ids.groups['class-a']}" and entry[2]["sessions"] == []
    assert entry[2]["left_out_short"] == [ids.sessions["maths"]]


@pytest.mark.services
def test_fast_bins_reports_and_selections_on_postgresql(settings, tmp_path):
    """The driver-cursor read (services.bins) gives PostgreSQL's rows the same shape as SQLite's."""
    from services import reports
    from tests.services import postgres_server

    with postgres_server() as pg:
        migrate(pg)
        ids = seed(pg)
        sid, ada = ids.sessions["maths"], ids.persons["maths"][0]
        out = exports.export_selection(pg, operator(), sid, "csv", exports.Selection(5.0, 25.0, (ada,)))
        full = full_export(pg, sid)
        want = full[(full["person_id"] == ada) & (full["t_start"] < 25) & (full["t_end"] > 5)].reset_index(drop=True)
        pd.testing.assert_frame_equal(pd.read_csv(io.BytesIO(out.data)),
                                      pd.read_csv(io.BytesIO(exports.frame_bytes(want, "csv"))))  # fmt: skip
        for key in ("maths", "therapy"):
            rep = reports.session_report(pg, operator(), ids.sessions[key])
            assert rep.data.startswith(b"%PDF") and rep.pages >= 1
        assert reports.group_report(pg, operator(), "class-a").data.startswith(b"%PDF")
        get_engine(pg).dispose()


def test_admin_prints_several_groups_in_one_pdf(url, ids):
    a, b = ids.groups["class-a"], ids.groups["class-b"]
    at = page(ids.users["admin"])
    at.multiselect(key="report_groups").set_value([a, b]).run()
    at.date_input(key="report_since").set_value(date.today() - timedelta(days=7)).run()
    at.button(key="group_report_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    rep = at.session_state[f"group_report_{a}_{b}_{date.today() - timedelta(days=7)}_{date.today()}"]
    assert rep.data.startswith(b"%PDF") and rep.file_name.startswith(f"affectline_group_report_{a}_{b}_")
    assert sorted(e[1] for e in audits(url, "report")) == sorted([f"group:{a}", f"group:{b}"])
    at.multiselect(key="report_groups").set_value([]).run()
    assert at.button(key="group_report_button").disabled
