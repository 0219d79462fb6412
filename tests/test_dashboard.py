"""The Streamlit dashboard through AppTest, on a seeded temporary database (no video pipeline)."""

from __future__ import annotations

from dashboard.safe import shown

import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from services import admin as admin_service
from dashboard import actions, auth, data
from services import analyses
from storage import repo
from storage.db import migrate, session_scope
from storage.models import Job, JobStatus, Recording, User
from tests.page_charts import specs
from tests.dashboard_factories import Seeded, copy_seeded, make_seeded_template

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory):
    return make_seeded_template(tmp_path_factory.mktemp("seed"))


@pytest.fixture()
def seeded(seeded_template, settings) -> Seeded:
    return copy_seeded(seeded_template, settings)


@pytest.fixture()
def db_url(settings, seeded) -> str:
    return settings.resolved_database_url


def run_as(user_id: int | None, page: str | None = None, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    if user_id is not None:
        at.session_state[auth.USER_KEY] = user_id
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    if page is not None:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "title")
             for e in getattr(at, kind)]  # fmt: skip
    return "\n".join(shown(str(p)) for p in parts)  # as the page shows them (user text is escaped Markdown)


def sessions_table(at: AppTest) -> pd.DataFrame:
    return next(df.value for df in at.dataframe if "title" in df.value.columns)


def test_login_form_then_sessions_for_admin(seeded, db_url):
    with session_scope(db_url) as s:
        from storage import access

        access.set_password(s, seeded.users["admin"], "correct horse")
    at = run_as(None)
    assert at.text_input.len == 2 and not specs(at)
    at.text_input[0].input("admin")
    at.text_input[1].input("wrong")
    at.button[0].click().run()
    assert "Unknown username or wrong password." in texts(at)
    at.text_input[0].input("admin")
    at.text_input[1].input("correct horse")
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state[auth.USER_KEY] == seeded.users["admin"]
    assert set(sessions_table(at)["title"]) == {"maths lesson", "history lesson", "therapy lesson"}


def test_sessions_page_lists_seeded_sessions_for_admin(seeded):
    at = run_as(seeded.users["admin"])
    table = sessions_table(at)
    assert list(table["title"]) == ["therapy lesson", "history lesson", "maths lesson"]  # newest first
    assert list(table["persons"]) == [1, 2, 3]
    assert set(table["state"]) == {"Analysis finished."}


def test_open_session_button_goes_straight_to_the_chosen_session(seeded, monkeypatch):
    """The click's rerun leaves the sessions page before building it (its job queries are not run)."""
    from services import progress

    at = run_as(seeded.users["admin"])
    history = seeded.sessions["history"]
    at.selectbox(key="open_session").set_value(history).run()
    calls = []
    real = progress.active_jobs
    monkeypatch.setattr(progress, "active_jobs", lambda *a, **k: calls.append(a) or real(*a, **k))
    at.button(key="open_button").click().run()
    assert calls == []  # the sessions page's body (progress, table, upload form) was skipped
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "history lesson"
    assert at.query_params["session"] == str(history)
    assert not any("title" in df.value.columns and "state" in df.value.columns for df in at.dataframe)  # not the list


def test_teacher_sees_only_their_class(seeded, db_url):
    at = run_as(seeded.users["teacher"])
    assert list(sessions_table(at)["title"]) == ["maths lesson"]
    assert at.selectbox(key="open_session").options == [f"maths lesson (#{seeded.sessions['maths']})"]
    # A link to the therapy session (or another class) shows nothing of it.
    for other in ("therapy", "history"):
        at = AppTest.from_file(APP, default_timeout=30)
        at.session_state[auth.USER_KEY] = seeded.users["teacher"]
        at.query_params["session"] = str(seeded.sessions[other])
        at.run()
        at.switch_page("views/session.py").run()
        assert not at.exception
        shown = texts(at)
        assert f"Session {seeded.sessions[other]} does not exist or is not visible to you." in shown
        assert f"{other} lesson" not in shown
        assert at.title[0].value == "maths lesson"
    # Nor does the data layer hand it out, whatever the page asks for.
    viewer = data.viewer_for(db_url, seeded.users["teacher"])
    with pytest.raises(LookupError, match="not visible"):
        data.session_bins(db_url, viewer.group_ids, seeded.sessions["therapy"])
    with pytest.raises(LookupError, match="not visible"):
        actions.export_session(db_url, viewer, seeded.sessions["history"], "csv")


def test_clinician_sees_only_therapy_and_teacher_has_no_review_page(seeded):
    at = run_as(seeded.users["clinician"])
    assert list(sessions_table(at)["title"]) == ["therapy lesson"]
    at.switch_page("views/review.py").run()
    assert not at.exception
    assert at.selectbox(key="review_session").options == [f"therapy lesson (#{seeded.sessions['therapy']})"]
    (spec,) = specs(at)
    names = {t.get("name") for t in spec["data"]}
    assert "uncertain" in names and "happy" in names
    at = run_as(seeded.users["teacher"])
    with pytest.raises(ValueError):  # not registered with st.navigation for a teacher
        at.switch_page("views/review.py").run()
    with pytest.raises(ValueError):
        at.switch_page("views/admin.py").run()


def test_session_page_renders_engagement_and_one_chart_per_person(seeded):
    # One chart: the class curve, the heat map and a row per student on one x axis
    # (tests/test_dashboard_teacher.py covers the overview in depth).
    sid = seeded.sessions["maths"]
    at = run_as(seeded.users["teacher"], "views/session.py")
    assert at.title[0].value == "maths lesson"
    (spec,) = specs(at)
    assert spec["layout"]["title"]["text"] == "Class engagement"
    lay = spec["layout"]
    rows = sorted((k for k in lay if k.startswith("yaxis") and "title" in lay[k] and k not in ("yaxis", "yaxis2")),
                  key=lambda k: -lay[k]["domain"][0])  # fmt: skip
    assert sorted(lay[k]["title"]["text"] for k in rows) == ["Ada", "Ben", "Unknown 3"]
    assert "cues@0123456789ab: interpretable cue model, not a trained classifier" in texts(at)
    assert sid == at.session_state["session_id"]


def test_export_button_writes_the_documented_columns_and_an_audit_row(seeded, db_url):
    sid = seeded.sessions["maths"]
    at = run_as(seeded.users["teacher"], "views/session.py")
    assert data.count_audit(db_url, "export") == 0  # rendering the page exports nothing
    assert not at.get("download_button")
    at.button(key="export_button").click().run()
    assert not at.exception
    export = at.session_state[f"export_{sid}_csv"]
    df = pd.read_csv(io.BytesIO(export.data))
    assert tuple(df.columns) == repo.EXPORT_COLUMNS
    assert len(df) == export.n_rows == 3 * 40
    assert set(df["person_label"]) == {"Ada", "Ben", "Unknown 3"}
    assert (df.loc[~df["face_visible"], "engagement"].isna()).all()
    assert at.get("download_button")
    with session_scope(db_url) as s:
        (entry,) = [e for e in repo.audit_log(s) if e.action == "export"]
        assert (entry.actor, entry.target, entry.detail) == ("teacher", f"session:{sid}", {"format": "csv", "rows": 120})
    at.radio(key="export_format").set_value("parquet").run()
    at.button(key="export_button").click().run()
    pq = pd.read_parquet(io.BytesIO(at.session_state[f"export_{sid}_parquet"].data))
    assert tuple(pq.columns) == repo.EXPORT_COLUMNS and len(pq) == 120
    assert data.count_audit(db_url, "export", f"session:{sid}") == 2


def test_upload_saves_the_video_commits_a_job_then_enqueues_it(seeded, db_url, settings, monkeypatch):
    sent = []

    def record(settings_, job_id):
        # Enqueued only after the commit: another connection already sees the queued job.
        with session_scope(db_url) as s:
            sent.append((job_id, s.get(Job, job_id).status))

    monkeypatch.setattr(analyses, "send_analysis", record)
    at = run_as(seeded.users["teacher"])
    assert at.radio(key="upload_kind").value == "classroom"
    assert at.selectbox(key="upload_group").options == ["class-a"]  # only the teacher's class
    at.selectbox(key="upload_group").select(seeded.groups["class-a"])  # chosen, never defaulted (issue 11)
    at.file_uploader(key="upload_video").set_value(("../../lesson 3.mp4", b"\x00\x00\x00\x18ftypmp42" * 64, "video/mp4"))
    at.run()
    at.button(key="upload_button").click().run()
    assert not at.exception, at.exception
    assert "analysis job" in texts(at)
    with session_scope(db_url) as s:
        rec = s.query(Recording).order_by(Recording.id.desc()).first()
        job = repo.latest_job(s, rec.id)
        assert rec.group_id == seeded.groups["class-a"] and rec.kind.value == "classroom"
        assert job.status is JobStatus.queued and job.params == {"analysis_fps": settings.analysis_fps}
        path, job_id, rec_id = Path(rec.video_path), job.id, rec.id
    assert sent == [(job_id, JobStatus.queued)]
    assert path.parent == (settings.data_dir / "uploads").resolve() and path.name.endswith("lesson_3.mp4")
    assert path.read_bytes().startswith(b"\x00\x00\x00\x18ftyp")
    assert data.count_audit(db_url, "upload", f"session:{rec_id}") == 1
    table = sessions_table(at)
    row = table[table["id"] == rec_id].iloc[0]
    assert row["status"] == "queued" and row["state"].startswith("Waiting for the analysis worker")


def test_send_analysis_puts_the_task_on_the_default_sqlite_broker(settings):
    analyses.send_analysis(settings, 42)
    con = sqlite3.connect(settings.data_dir / "broker.db")
    payloads = [r[0] for r in con.execute("select payload from kombu_message")]
    con.close()
    (payload,) = payloads
    msg = json.loads(payload)
    assert msg["headers"]["task"] == "affectline.analyze_session"
    assert msg["headers"]["argsrepr"] == "[42]"


def test_a_broker_failure_marks_the_job_failed_in_plain_words(seeded, db_url, monkeypatch):
    def refuse(settings, job_id):
        raise ConnectionError("broker at redis://nowhere refused the connection")

    monkeypatch.setattr(analyses, "send_analysis", refuse)
    at = run_as(seeded.users["teacher"])
    at.selectbox(key="upload_group").select(seeded.groups["class-a"])
    at.file_uploader(key="upload_video").set_value(("x.mp4", b"0" * 100, "video/mp4"))
    at.run()
    at.button(key="upload_button").click().run()
    assert "the analysis could not be queued: broker at redis://nowhere refused the connection" in texts(at)
    with session_scope(db_url) as s:
        job = s.query(Job).order_by(Job.id.desc()).first()
        assert job.status is JobStatus.failed and "refused" in job.error


def test_live_progress_and_failure_are_shown_in_words(seeded, db_url):
    with session_scope(db_url) as s:
        job = repo.create_job(s, "affectline.analyze_session", session_id=seeded.sessions["maths"])
        repo.update_job(s, job.id, status=JobStatus.running, progress=0.4, message="tracking faces")
        bad = repo.create_job(s, "affectline.analyze_session", session_id=seeded.sessions["therapy"])
        repo.update_job(s, bad.id, status=JobStatus.failed, error="Traceback ...\nvideo.mp4: truncated file (moov atom missing)")
    at = run_as(seeded.users["admin"])
    (bar,) = at.get("progress")
    assert bar.proto.value == 40
    assert "maths lesson" in shown(bar.proto.text) and "Analysing: tracking faces (40% done)." in shown(bar.proto.text)
    assert "therapy lesson: Analysis failed: video.mp4: truncated file (moov atom missing)" in texts(at)
    assert "Traceback" not in texts(at)
    # The teacher sees the progress of their class only.
    at = run_as(seeded.users["clinician"])
    assert not at.get("progress")


def test_clinician_adds_and_deletes_a_tag(seeded, db_url):
    # The range is typed in mm:ss (or brushed on the chart: tests/test_dashboard_clinician.py).
    at = run_as(seeded.users["clinician"], "views/review.py")
    at.text_input(key="tag_from").input("0:03")
    at.text_input(key="tag_to").input("0:07")
    at.selectbox(key="tag_label").set_value("fear")
    at.text_area(key="tag_note").input("covered ears when the bell rang")
    at.button(key="add_tag").click().run()
    assert not at.exception
    viewer = data.viewer_for(db_url, seeded.users["clinician"])
    tags = data.list_tags(db_url, viewer, seeded.sessions["therapy"])
    assert tags[["t_start", "t_end", "label", "note", "author"]].values.tolist() == [
        [3.0, 7.0, "fear", "covered ears when the bell rang", "clinician"]
    ]
    spec = specs(at)[0]
    assert any(a.get("text") == "fear" for a in spec["layout"]["annotations"])
    at.button(key="delete_tag").click().run()  # asks first: nothing deleted yet
    assert len(data.list_tags(db_url, viewer, seeded.sessions["therapy"])) == 1
    assert "This deletes the tag 'fear'" in texts(at)
    at.button(key="delete_tag_confirm").click().run()
    assert data.list_tags(db_url, viewer, seeded.sessions["therapy"]).empty
    assert data.count_audit(db_url, "delete_tag") == 1
    # A clinic's own label joins the vocabulary when first used.
    at.text_input(key="tag_from").input("0:00")
    at.text_input(key="tag_to").input("0:02")
    at.selectbox(key="tag_label").set_value("other…")
    at.text_input(key="tag_other").input("stimming")
    at.button(key="add_tag").click().run()
    assert list(data.list_tags(db_url, viewer, seeded.sessions["therapy"])["label"]) == ["stimming"]
    assert "stimming" in data.tag_vocabulary(db_url)


def test_admin_creates_a_user_and_grants_a_group_and_sees_the_audit_log(seeded, db_url):
    at = run_as(seeded.users["admin"], "views/admin.py")
    form_inputs = [t for t in at.text_input if t.form_id == "new_user"]
    form_inputs[0].input("mr_smith")
    form_inputs[1].input("a long enough password")
    next(s for s in at.selectbox if s.form_id == "new_user").set_value("teacher")
    next(b for b in at.button if b.proto.form_id == "new_user").click().run()
    assert not at.exception
    assert "User mr_smith created." in texts(at)
    users = admin_service.users(db_url, data.viewer_for(db_url, seeded.users["admin"]))
    uid = int(users.loc[users["username"] == "mr_smith", "id"].iloc[0])
    at.selectbox(key="grant_user").set_value(uid).run()  # the groups offered depend on the user's role
    at.selectbox(key="grant_group").set_value(seeded.groups["class-b"])
    at.button(key="grant").click().run()
    assert data.viewer_for(db_url, uid).group_ids == (seeded.groups["class-b"],)
    audit = next(df.value for df in at.dataframe if "action" in df.value.columns)
    assert {"create_user", "grant"} <= set(audit["action"])


def test_people_page_lists_only_visible_persons(seeded):
    at = run_as(seeded.users["teacher"], "views/people.py")
    table = next(df.value for df in at.dataframe)
    assert sorted(table["label"]) == ["Ada", "Ben", "Unknown 3"]
    assert set(table["group"]) == {"class-a"}


def test_dashboard_never_imports_torch_recognition_or_the_workers_code():
    code = (
        "import sys\n"
        "import dashboard.app, dashboard.data, dashboard.charts, dashboard.auth, storage.access\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'recognition', 'pipeline', 'identity', 'clinic', 'tasks'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
    # The page scripts run inside Streamlit, not on import: check what they import by reading them.
    import ast

    for path in (ROOT / "dashboard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])  # fmt: skip
            for n in names:
                assert n.split(".")[0] not in ("torch", "recognition", "pipeline", "identity", "clinic", "tasks"), f"{path} imports {n}"


def test_teacher_renames_and_enrols_within_their_class_only_and_an_admin_deletes(seeded, db_url):
    url, maths = db_url, seeded.sessions["maths"]
    teacher = data.viewer_for(url, seeded.users["teacher"])
    unknown3 = seeded.persons["maths"][2]
    at = run_as(seeded.users["teacher"], "views/people.py")
    at.selectbox(key="rename_person").set_value(unknown3)
    at.text_input(key="rename_label").input("Cleo")
    at.button(key="rename_button").click().run()
    assert not at.exception and "Renamed to Cleo." in texts(at)
    table = next(df.value for df in at.dataframe)
    assert table.set_index("id").loc[unknown3, ["label", "enrolled"]].tolist() == ["Cleo", True]
    # Persons of another class are out of reach, whatever id is asked for.
    other = seeded.persons["history"][0]
    with pytest.raises(LookupError, match=f"person {other} does not exist or is not visible"):
        actions.rename_person(url, teacher, other, "Mallory")
    # Teachers name and enrol; merging and deleting persons is for administrators.
    assert "Merge two persons" not in texts(at) and "Delete a person" not in texts(at)
    with pytest.raises(PermissionError, match="may not delete person"):
        actions.delete_person(url, teacher, unknown3)
    with pytest.raises(PermissionError, match="may not merge people"):
        actions.merge_persons(url, teacher, unknown3, seeded.persons["maths"][0])
    # Enrol Ben's track under a new name, then an administrator deletes the person: both audited.
    tracks = data.session_tracks(url, teacher.group_ids, maths)
    ben_track = int(tracks.loc[tracks["person"] == "Ben", "id"].iloc[0])
    pid = actions.enroll_track(url, teacher, maths, ben_track, "Benjamin")
    assert data.count_audit(url, "enroll_person", f"person:{pid}") == 1
    at = run_as(seeded.users["admin"], "views/people.py")
    at.selectbox(key="delete_person").set_value(pid)
    at.button(key="delete_button").click().run()  # asks first, naming what goes
    assert data.count_audit(url, "delete_person", f"person:{pid}") == 0
    assert "This deletes Benjamin (person #" in texts(at)
    at.button(key="delete_button_confirm").click().run()
    assert "Person deleted." in texts(at)
    assert pid not in set(next(df.value for df in at.dataframe)["id"])
    assert data.count_audit(url, "delete_person", f"person:{pid}") == 1
    assert set(data.session_bins(url, teacher.group_ids, maths)["person_label"]) == {"Ada", "Cleo"}


def test_dashboard_user_logs_in_without_a_password_and_logout_stays_out(seeded, monkeypatch):
    from affectline.settings import get_settings

    monkeypatch.setenv("AFFECTLINE_DASHBOARD_USER", "clinician")
    monkeypatch.setattr(auth, "listen_address", lambda: "127.0.0.1")  # single-user mode is loopback-only
    get_settings.cache_clear()
    at = run_as(None)
    assert at.session_state[auth.USER_KEY] == seeded.users["clinician"]
    assert list(sessions_table(at)["title"]) == ["therapy lesson"]
    at.sidebar.button(key="logout").click().run()
    assert auth.USER_KEY not in at.session_state
    assert at.button[0].label == "Log in" and not at.dataframe


def test_an_empty_database_does_not_let_the_first_visitor_create_an_admin(empty_db):
    data.invalidate()
    at = run_as(None)
    assert "No accounts exist yet" in texts(at)
    assert not at.text_input and not at.button  # nothing to type: the first admin is made at the server
    assert "affectline users add NAME --role admin" in [c.value for c in at.code]
    with session_scope(empty_db) as s:
        assert s.scalar(select(func.count(User.id))) == 0


@pytest.fixture()
def empty_db(settings):
    migrate(settings.resolved_database_url)
    return settings.resolved_database_url


def test_upload_refuses_other_groups_wrong_kinds_and_non_videos(seeded, db_url, settings, monkeypatch):
    monkeypatch.setattr(analyses, "send_analysis", lambda *a: pytest.fail("nothing may be enqueued"))
    teacher = data.viewer_for(db_url, seeded.users["teacher"])
    admin = data.viewer_for(db_url, seeded.users["admin"])
    with pytest.raises(LookupError, match=f"group {seeded.groups['class-b']} does not exist or is not visible"):
        actions.enqueue_analysis(db_url, settings, teacher, "a.mp4", b"x", "classroom", seeded.groups["class-b"])
    with pytest.raises(ValueError, match="'child-x' is a therapy group, not classroom"):
        actions.enqueue_analysis(db_url, settings, admin, "a.mp4", b"x", "classroom", seeded.groups["child-x"])
    with pytest.raises(ValueError, match="notes.txt: not a video file type"):
        actions.enqueue_analysis(db_url, settings, teacher, "notes.txt", b"x", "classroom", seeded.groups["class-a"])
    assert not (settings.data_dir / "uploads").exists() or not any((settings.data_dir / "uploads").iterdir())


@pytest.mark.parametrize("name, safe", [("../../etc/passwd.mp4", "passwd.mp4"), ("lesson 3 (final).MOV", "lesson_3_final_.MOV"),
                                        ("..", "video"), ("ünïcode.mp4", "n_code.mp4")])  # fmt: skip
def test_safe_filename(name, safe):
    assert data.safe_filename(name) == safe


def test_job_phrases():
    from datetime import datetime, timedelta, timezone

    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    job = lambda status, **kw: data.JobState(1, 1, status, kw.get("p", 0.0), kw.get("m", ""), kw.get("e"),  # noqa: E731
                                             kw.get("at", now))  # fmt: skip
    assert data.job_phrase(None) == "Not analysed yet."
    assert data.job_phrase(job(JobStatus.queued), now) == "Waiting for the analysis worker to pick it up."
    late = data.job_phrase(job(JobStatus.queued, at=now - timedelta(minutes=10)), now)
    assert "waited 10 minutes: check that the analysis worker is running" in late
    assert data.job_phrase(job(JobStatus.running, p=0.257, m="detecting faces"), now) == "Analysing: detecting faces (26% done)."
    assert data.job_phrase(job(JobStatus.done), now) == "Analysis finished."
    assert data.job_phrase(job(JobStatus.failed, e="Traceback (most recent call last):\n  ...\nValueError: x.mp4: no video stream\n"), now) == (
        "Analysis failed: ValueError: x.mp4: no video stream")
    assert data.job_phrase(job(JobStatus.failed), now) == "Analysis failed: no reason was recorded"


def test_runner_config_skips_gc_and_magic_and_no_page_relies_on_magic():
    """dashboard/.streamlit/config.toml turns off the gc.collect() after every run and "magic" (both cost
    time on every open); with magic off a bare expression on a page would silently show nothing."""
    import ast
    import tomllib

    cfg = tomllib.loads((ROOT / "dashboard" / ".streamlit" / "config.toml").read_text())
    assert cfg["runner"] == {"postScriptGC": False, "magicEnabled": False}
    bare = []
    for path in [ROOT / "dashboard" / "app.py", *sorted((ROOT / "dashboard" / "views").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            for i, st in enumerate(getattr(node, "body", []) if isinstance(getattr(node, "body", None), list) else []):
                doc = i == 0 and isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and isinstance(
                    st, ast.Expr) and isinstance(st.value, ast.Constant)  # fmt: skip
                if isinstance(st, ast.Expr) and not doc and not isinstance(st.value, (ast.Call, ast.Await)):
                    bare.append(f"{path.name}:{st.lineno}")
    assert bare == [], f"bare expressions (magic is off, they show nothing): {bare}"
