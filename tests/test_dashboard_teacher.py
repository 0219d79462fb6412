"""The teacher's class overview through AppTest: one linked mm:ss axis, heat map, moments, check-ins, students by
name (never ranked), this lesson over earlier ones, trends, and the page as a PDF."""

from __future__ import annotations

from dashboard.safe import shown

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import auth, charts, data, viewcache
from services import summaries as sm
from storage.db import get_engine, migrate, session_scope
from storage.models import Person, Recording
from tests.page_charts import chart_data, drag, specs
from tests.big_session import add_class_session
from tests.dashboard_factories import Seeded, seed

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> tuple[Path, Seeded, int, int]:
    """The seeded database plus two 20-minute, 12-student lessons of class-a (the newer one has planted events)."""
    path = tmp_path_factory.mktemp("teacher") / "affectline.db"
    url = f"sqlite:///{path}"
    migrate(url)
    ids = seed(url)
    old, _ = add_class_session(url, ids.groups["class-a"], minutes=20, n_persons=12, title="week 1", seed=1)
    new, pids = add_class_session(url, ids.groups["class-a"], minutes=20, n_persons=12, title="week 2", seed=2)
    with session_scope(url) as s:  # week 1 a week earlier; one student left unnamed
        s.get(Recording, old).created_at = datetime.now(timezone.utc) - timedelta(days=7)
        p = s.get(Person, pids[5])
        p.label, p.enrolled = "Unknown 9", False
    get_engine(url).dispose()
    return path, ids, old, new


@pytest.fixture()
def db(template, settings):
    src, ids, old, new = template
    dest = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)
    data.invalidate()
    return settings.resolved_database_url, ids, old, new


def open_session(user_id: int, session_id: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[auth.USER_KEY] = user_id
    at.query_params["session"] = str(session_id)
    at.run()
    at.switch_page("views/session.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def student_rows(fig: dict) -> list[str]:
    """The students drawn under the heat map: the y-axis titles of rows 3 and on, top to bottom."""
    lay = fig["layout"]
    rows = sorted((k for k in lay if k.startswith("yaxis") and "domain" in lay[k] and k not in ("yaxis", "yaxis3")),
                  key=lambda k: -lay[k]["domain"][0])  # fmt: skip
    return [lay[k]["title"]["text"] for k in rows if "title" in lay[k]]


def x_ranges(fig: dict) -> set[tuple]:
    return {tuple(v["range"]) for k, v in fig["layout"].items() if k.startswith("xaxis")}


def _x_seconds(trace: dict) -> np.ndarray:
    return (np.asarray(_values(trace["x"]), float) - charts.ORIGIN_MS) / 1000.0



def _values(v):
    """Plotly may send arrays as typed buffers ({'dtype', 'bdata'}) or as lists."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return v


def test_class_overview_one_axis_heatmap_moments_and_students_by_name(db):
    url, ids, old, new = db
    at = open_session(ids.users["teacher"], new)
    assert at.title[0].value == "week 2"
    spec = specs(at)
    overview = spec[0]
    assert overview["layout"]["title"]["text"] == "Class engagement"
    kinds = [t["type"] for t in overview["data"]]
    assert kinds.count("heatmap") == 1 and "bar" not in kinds  # class curve + visible faces + students x time
    faces = next(t for t in overview["data"] if t.get("name") == "visible faces")  # one filled step line, no bars
    assert faces["line"]["shape"] == "hv" and faces["fill"] == "tozeroy" and faces["yaxis"] == "y2"
    fy, fx = _values(faces["y"]), _values(faces["x"])
    assert len(fx) == len(fy) <= viewcache.MAX_POINTS + 1 and fx[-1] == charts.ms(1200) and 0 < np.nanmax(fy) <= 12
    heat = next(t for t in overview["data"] if t["type"] == "heatmap")
    z = _values(heat["z"]).reshape(12, -1) if isinstance(heat["z"], dict) else np.asarray(heat["z"], float)
    assert len(heat["y"]) == 12 and z.shape[0] == 12 and z.shape[1] <= viewcache.HEAT_COLUMNS
    assert np.isnan(z).sum() > 0  # the student hidden for 5 minutes is blank there, not low
    # the heat map's rows are the students by name, not by engagement
    viewer = data.viewer_for(url, ids.users["teacher"])
    summary = viewcache.class_overview(url, viewer.group_ids, new).summary
    assert heat["y"] == summary["person_label"].tolist() == sm.roster(summary)["person_label"].tolist()
    assert summary["person_label"].tolist() != summary.sort_values("mean_engagement")["person_label"].tolist()
    # one time axis, in mm:ss, the whole session's range on the class chart and on every small multiple
    xa = overview["layout"]["xaxis"]
    assert xa["type"] == "date" and xa["tickformat"] == "%M:%S" and xa["range"] == [charts.ms(0), charts.ms(1200)]
    anchor = overview["layout"]["xaxis"]["matches"]  # every panel matches the bottom one: one axis
    assert all(v.get("matches", k.replace("axis", "")) == anchor for k, v in overview["layout"].items() if k.startswith("xaxis"))
    students = student_rows(overview)
    assert students == summary["person_label"].iloc[:6].tolist()  # the first six by name by default
    assert x_ranges(overview) == {(charts.ms(0), charts.ms(1200))}  # every panel on the session's range, one matched axis
    assert len(spec) == 1  # one chart: zooming the class curve zooms the heat map and every student with it
    # what the server sends is bounded by the screen, not the session length
    curve = next(t for t in overview["data"] if t.get("name") == "class engagement")
    assert len(_values(curve["y"])) <= viewcache.MAX_POINTS
    # moments: the planted dip at 06:40 (20 min / 90 min x 30:00) is listed with who
    shown = "\n".join(m.value for m in at.markdown)
    assert "Class engagement dipped" in shown and "Student 01" in shown
    assert at.button(key="moment_0").label.count(":") == 2


def test_a_moment_click_zooms_every_chart_and_shows_who(db):
    url, ids, _, new = db
    at = open_session(ids.users["teacher"], new)
    viewer = data.viewer_for(url, ids.users["teacher"])
    moments = viewcache.class_overview(url, viewer.group_ids, new).moments
    i, dip = next((i, m) for i, m in enumerate(moments) if m.kind == "dip")
    at.button(key=f"moment_{i}").click().run()
    assert not at.exception
    t0, t1 = max(0.0, dip.t_start - 60), min(1200.0, dip.t_end + 60)
    spec = specs(at)
    assert spec[0]["layout"]["xaxis"]["range"] == pytest.approx([charts.ms(t0), charts.ms(t1)])
    # zoomed in far enough, the class curve is back to one point per bin
    curve = next(t for t in spec[0]["data"] if t.get("name") == "class engagement")
    x = _x_seconds(curve)
    assert np.diff(x) == pytest.approx(np.ones(len(x) - 1)) and x[0] == pytest.approx(t0 + 0.5)
    # the students drawn are the ones the moment involved, on the same range
    assert set(student_rows(spec[0])) == set(dip.person_labels[:12])
    assert x_ranges(spec[0]) == {tuple(spec[0]["layout"]["xaxis"]["range"])}
    assert at.text_input(key=f"from_{new}").value == sm.format_clock(t0)
    at.button(key="view_whole").click().run()
    assert specs(at)[0]["layout"]["xaxis"]["range"] == [charts.ms(0), charts.ms(1200)]


def test_typed_range_and_heat_map_value(db):
    url, ids, _, new = db
    at = open_session(ids.users["teacher"], new)
    at.text_input(key=f"from_{new}").input("10:00")
    at.text_input(key=f"to_{new}").input("12:30").run()
    assert specs(at)[0]["layout"]["xaxis"]["range"] == [charts.ms(600), charts.ms(750)]
    at.selectbox(key="heat_value").set_value("distraction").run()
    heat = next(t for t in specs(at)[0]["data"] if t["type"] == "heatmap")
    assert heat["colorscale"][0][1] != "" and heat["name"] == "distraction"
    at.text_input(key=f"to_{new}").input("9:00").run()  # before 'from': refused in words, the view is kept
    assert any("must be after" in shown(e.value) for e in at.error)
    assert specs(at)[0]["layout"]["xaxis"]["range"] == [charts.ms(600), charts.ms(750)]


def test_brushing_the_class_chart_sets_the_range(db):
    """A box drawn on the class chart (what chart.js sends back) zooms every chart to it."""
    url, ids, _, new = db
    at = open_session(ids.users["teacher"], new)
    # AppTest cannot drag; hand the page the trigger the browser would send (tests/test_browser_roles.py drags).
    drag(at, f"class_chart_{new}", "2000-01-01 00:05:00", "2000-01-01 00:08:20")
    assert not at.exception, [e.value for e in at.exception]
    rng = specs(at)[0]["layout"]["xaxis"]["range"]
    assert rng == [charts.ms(300), charts.ms(500)], rng
    # Dragging is that box-select (it refines); the wheel zooms plotly's own way, and the caption says which is which.
    (chart, *_) = chart_data(at)
    assert chart["figure"]["layout"]["dragmode"] == "select" and chart["select"] is True
    assert chart["config"]["scrollZoom"] is True
    assert any("drag across the chart: every panel is redrawn finer" in c.value for c in at.caption)


def test_trends_across_the_groups_sessions(db):
    url, ids, old, new = db
    at = open_session(ids.users["teacher"], new)
    assert not any(s["layout"]["title"]["text"].startswith("Engagement across") for s in specs(at))  # opt-in
    at.toggle(key="show_trends").set_value(True).run()
    trend = next(s for s in specs(at) if s["layout"]["title"]["text"].startswith("Engagement across sessions"))
    cls = next(t for t in trend["data"] if t["name"] == "class")
    # oldest first: week 1 (a week ago), week 2; the seeded maths lesson is a 40 s recording: left out, and said so
    assert [x.split(" (")[0] for x in cls["x"]] == ["week 1", "week 2"]
    table = next(df.value for df in at.dataframe if "week 1" in df.value.columns)
    assert list(table.columns) == ["week 1", "week 2"]
    assert table.loc["Student 01"].notna().sum() == 2 and "Ada" not in table.index
    notes = [c.value for c in at.caption if "shorter than 5 min" in c.value]
    assert notes and all(n.startswith("1 recording shorter than 5 min was left out") for n in notes)
    # This lesson's curve over the earlier lesson of the group, on one axis of minutes from the start.
    over = next(s for s in specs(at) if s["layout"]["title"]["text"].startswith("This lesson over earlier lessons"))
    names = [t["name"] for t in over["data"]]
    assert names[-1] == "this lesson: week 2" and [n.split(" (")[0] for n in names[:-1]] == ["week 1"]
    assert over["layout"]["xaxis"]["title"]["text"] == "minutes from the start of the lesson"
    for t in over["data"]:
        x = np.asarray(_values(t["x"]), float)
        assert 0 < x[0] < 1 and 19 < x[-1] < 20  # both 20-minute lessons on the same minutes
    this = np.asarray(_values(over["data"][-1]["y"]), float)
    curve = viewcache.class_series_full(url, data.viewer_for(url, ids.users["teacher"]).group_ids, new)
    assert np.nanmean(this) == pytest.approx(curve["engagement"].mean(), abs=0.01)


def test_teacher_names_an_unknown_face_without_thumbnails(db):
    url, ids, _, new = db
    at = open_session(ids.users["teacher"], new)
    viewer = data.viewer_for(url, ids.users["teacher"])
    tracks = data.session_tracks(url, viewer.group_ids, new)
    pid = int(tracks.loc[tracks["person"] == "Unknown 9", "person_id"].iloc[0])
    # a classroom without video review and no kept thumbnails: no face, and the page says why
    assert not at.get("image")
    at.toggle(key="show_faces").set_value(True).run()
    assert not at.get("image") and "video review is off for group class-a" in "\n".join(shown(c.value) for c in at.caption)
    at.text_input(key=f"enrol_name_{pid}").input("Zoe").run()
    at.button(key=f"enrol_{pid}").click().run()
    assert not at.exception
    with session_scope(url) as s:
        p = s.get(Person, pid)
        assert (p.label, p.enrolled) == ("Zoe", True)


def test_therapy_session_is_not_called_class_engagement(db):
    url, ids, _, _ = db
    at = open_session(ids.users["clinician"], ids.sessions["therapy"])
    assert specs(at)[0]["layout"]["title"]["text"] == "Engagement over time (therapy session)"


def test_axis_seconds_reads_what_plotly_sends():
    assert charts.axis_seconds("2000-01-01 00:05:00") == 300.0
    assert charts.axis_seconds("2000-01-01 01:02:03.5") == pytest.approx(3723.5)
    assert charts.axis_seconds(charts.ms(42.5)) == pytest.approx(42.5)
    assert charts.axis_seconds(charts.ORIGIN_MS + 90_000) == 90.0
    # no point of a session is a 4-digit number: plotly.js would read it as a year
    assert charts.ms(1.5) > 1e11


def test_a_newer_failed_session_is_not_the_default(db):
    from affectline.queue import ANALYZE_TASK
    from storage import repo
    from storage.models import JobStatus, SessionKind

    url, ids, _, new = db
    with session_scope(url) as s:
        rec = repo.create_recording(s, "/videos/broken.mp4", SessionKind.classroom, title="broken upload",
                                    group_id=ids.groups["class-a"])  # fmt: skip
        job = repo.create_job(s, ANALYZE_TASK, session_id=rec.id)
        repo.update_job(s, job.id, status=JobStatus.failed, error="broken.mp4: truncated file")
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[auth.USER_KEY] = ids.users["teacher"]
    at.run()
    assert not at.exception
    assert at.selectbox(key="open_session").value == new  # the newest ready one, not the failed upload
    at.switch_page("views/session.py").run()
    assert at.title[0].value == "week 2"


def test_long_lived_views_follow_changes_made_elsewhere(db):
    """Views are cached for an hour under the session's fingerprint: a change by the CLI or a worker (no
    dashboard invalidate) shows once the 10 s fingerprint is re-read."""
    from storage import people

    url, ids, _, new = db
    viewer = data.viewer_for(url, ids.users["teacher"])
    before = viewcache.class_overview(url, viewer.group_ids, new)
    assert len(before.summary) == 12
    gone = int(before.summary["person_id"].iloc[0])
    with session_scope(url) as s:  # as `affectline persons delete` would, in another process
        people.delete_person(s, gone, "admin")
        s.get(Person, int(before.summary["person_id"].iloc[1])).label = "Renamed"
    assert len(viewcache.class_overview(url, viewer.group_ids, new).summary) == 12  # within the 10 s window
    viewcache.session_fingerprint.clear()  # ... 10 s later
    viewcache.person_labels.clear()
    after = viewcache.class_overview(url, viewer.group_ids, new)
    assert len(after.summary) == 11 and gone not in set(after.summary["person_id"])
    assert "Renamed" in set(after.summary["person_label"])
    heat = viewcache.heatmap_view(url, viewer.group_ids, new, "engagement", after.t0, after.t1,
                             tuple(int(p) for p in after.summary["person_id"]))  # fmt: skip
    assert heat.shape[0] == 11 and "Renamed" in heat.person_labels
    # The page's chart is kept per view too, and is rebuilt for the new fingerprint and the new label.
    order = tuple(int(p) for p in after.summary["person_id"])
    fig = viewcache.class_figure(url, viewer.group_ids, new, after.t0, after.t1, "engagement", order[:2], "Class")
    assert "Renamed" in fig.data[2].y and len(fig.data[2].y) == 11  # the heat map's rows
    assert fig is viewcache.class_figure(url, viewer.group_ids, new, after.t0, after.t1, "engagement", order[:2], "Class")


def test_admin_opens_any_class_session(db):
    url, ids, _, new = db
    at = open_session(ids.users["admin"], ids.sessions["history"])
    assert at.title[0].value == "history lesson"
    (spec,) = specs(at)
    assert spec["layout"]["title"]["text"] == "Class engagement" and len(student_rows(spec)) == 2


def _page_text(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "subheader", "title", "header", "info") for e in at.get(kind)]
    return "\n".join(str(p) for p in parts)


def test_students_are_listed_by_name_with_no_rank_or_bars(db):
    url, ids, _, new = db
    at = open_session(ids.users["teacher"], new)
    table = next(df for df in at.dataframe if "person_label" in df.value.columns)
    assert "rank" not in table.value.columns
    labels = table.value["person_label"].tolist()
    assert labels == sm.roster(table.value.assign(person_id=range(len(labels))))["person_label"].tolist()  # by name
    config = json.loads(table.proto.columns)
    assert not any(c.get("type_config", {}).get("type") == "progress" for c in config.values())  # no ranked bars
    assert "#" not in [c.get("label") for c in config.values()]
    text = _page_text(at)
    assert "lowest engagement first" not in text and "lowest mean engagement first" not in text
    assert "Students (12), by name" in text


def test_five_students_distracted_together_are_worth_a_check_in(db):
    """Five of twelve distracted together at 20:00-23:00 of a 25-minute lesson: flagged one by one, with the
    moment to watch; a click narrows every chart to it, draws that student and plays the video from its start."""
    from tests.big_session import Event

    url, ids, _, _ = db
    five = (1, 4, 6, 8, 10)
    sid, pids = add_class_session(url, ids.groups["class-a"], minutes=25, n_persons=12, title="week 3", seed=4,
                                  events=(Event("distraction", 1200, 1380, five),))  # fmt: skip
    at = open_session(ids.users["teacher"], sid)
    text = _page_text(at)
    assert "Worth a check-in (5)" in text
    lines = [m.value for m in at.markdown if "looked distracted" in m.value]
    assert sorted(ln.split("**")[1] for ln in lines) == [f"Student {i + 1:02d}" for i in five]
    assert all(at.button(key=f"checkin_{i}").label.startswith(("19:5", "20:0")) for i in range(5))
    first = lines[0].split("**")[1]
    at.button(key="checkin_0").click().run()
    assert not at.exception
    (t0, t1) = at.session_state[f"view_{sid}"]
    assert 1100 <= t0 <= 1150 and 1420 <= t1 <= 1460
    assert student_rows(specs(at)[0]) == [first]
    seek_t, _ = at.session_state[f"seek_{sid}"]
    assert abs(seek_t - 1200) <= 10  # the review player (where a copy exists) plays from the moment


def test_this_page_as_pdf_has_the_pages_content_and_is_audited(db, tmp_path):
    import re
    import subprocess

    from storage import repo

    url, ids, _, new = db
    at = open_session(ids.users["teacher"], new)
    at.button(key="page_pdf_button").click().run()
    assert not at.exception
    pdf = at.session_state[f"page_pdf_{new}"]
    assert any(shown(b.proto.label).startswith("Download this page as PDF") for b in at.get("download_button"))
    (tmp_path / "p.pdf").write_bytes(pdf.data)
    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "p.pdf"), "-"], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip
    page = _page_text(at)
    viewer = data.viewer_for(url, ids.users["teacher"])
    ov = viewcache.class_overview(url, viewer.group_ids, new)
    # the same students in the same order, the same check-ins and moments as the page
    rows = [ln.split()[0] + " " + ln.split()[1] for ln in text.split("Per student (by name)")[1].splitlines()
            if re.match(r"\s*(Student \d\d|Unknown \d)", ln)]  # fmt: skip
    assert rows == ov.summary["person_label"].tolist()
    assert f"Worth a check-in ({len(ov.checkins)})" in text and f"Worth a check-in ({len(ov.checkins)})" in page
    for c in ov.checkins:
        assert f"{sm.format_clock(c.t_start)}-{sm.format_clock(c.t_end)}" in text
    assert f"Moments ({len(ov.moments)})" in text and "This lesson over earlier lessons" in text
    assert not re.search(r"^\s*#\s", text, re.M) and "lowest" not in text
    with session_scope(url) as s:
        assert [e.target for e in repo.audit_log(s) if e.action == "report"] == [f"session:{new}"]


def test_many_check_ins_past_twelve_wait_in_an_expander(db):
    """A class-wide tired spell flags fourteen of fifteen students at once (Student 15's face is hidden for most
    of it: not visible is never tired): twelve rows shown, the rest in an expander."""
    from tests.big_session import Event

    url, ids, _, _ = db
    sid, _ = add_class_session(url, ids.groups["class-a"], minutes=12, n_persons=15, title="tired", seed=6,
                               events=(Event("fatigue", 300, 480, tuple(range(15))),))  # fmt: skip
    at = open_session(ids.users["teacher"], sid)
    assert "Worth a check-in (14)" in _page_text(at)
    assert not [m for m in at.markdown if "**Student 15** looked" in m.value]
    (more,) = [e for e in at.expander if shown(e.label) == "2 more check-ins"]
    inside = {b.key for b in more.button}
    assert inside == {"checkin_12", "checkin_13"}
    assert all(at.button(key=f"checkin_{i}").key not in inside for i in range(12))
