"""The clinician's child-session page through AppTest: timelines with uncertain spans and cues, tags by brush or
mm:ss, edit/delete, baselines, personalisation queued by task name, model versions, the therapy export."""

from __future__ import annotations

from dashboard.safe import shown

import io
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from affectline.features import BLENDSHAPE_NAMES, FEATURE_NAMES
from affectline.queue import ANALYZE_TASK, PERSONALIZE_TASK, RESCORE_TASK
from dashboard import actions, auth, charts, data
from services import clinic, exports
from storage import person_models, repo
from storage.db import get_engine, migrate, session_scope
from storage.models import Job, JobStatus, Person, SessionKind
from tests.page_charts import drag, specs as page_specs
from tests.dashboard_factories import make_bins, seed

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
N_BINS = 600  # a 10-minute therapy session


def _features(n: int, rng: np.random.Generator) -> np.ndarray:
    """Plausible per-bin features in FEATURE_NAMES order: blendshapes in [0, 1], head pose in degrees."""
    x = np.full((n, len(FEATURE_NAMES)), np.nan, np.float32)
    nb = len(BLENDSHAPE_NAMES)
    x[:, :nb] = rng.uniform(0, 0.6, (n, nb))
    x[:, nb : nb + 3] = rng.normal(0, 15, (n, 3))
    return x


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    path = tmp_path_factory.mktemp("clinic") / "affectline.db"
    url = f"sqlite:///{path}"
    migrate(url)
    ids = seed(url)
    rng = np.random.default_rng(7)
    with session_scope(url) as s:
        rec = repo.create_recording(s, "/videos/therapy-2.mp4", SessionKind.therapy, title="therapy week 2",
                                    group_id=ids.groups["child-x"])  # fmt: skip
        job = repo.create_job(s, ANALYZE_TASK, session_id=rec.id)
        bins = make_bins(N_BINS, rng, hidden=(100, 130), personal=True)
        times = np.arange(0, N_BINS, 0.25, dtype=np.float32)
        boxes = np.tile(np.array([[10, 10, 90, 90]], np.float32), (len(times), 1))
        track = repo.TrackRecord(track_key=0, times=times, face_boxes=boxes, context_boxes=boxes, embedding=None,
                                 bins=bins, features=_features(N_BINS, rng), feature_names=FEATURE_NAMES)  # fmt: skip
        person_of = repo.replace_analysis(s, repo.AnalysisResult(
            recording_id=rec.id, fps=25.0, n_frames=25 * N_BINS, width=640, height=360, analysis_fps=4.0,
            bin_seconds=1.0, academic_model="cues@0123456789ab", expression_model="fer_mini_xception@ba9876543210",
            tracks=[track]))  # fmt: skip
        repo.update_job(s, job.id, status=JobStatus.done, progress=1.0)
        s.get(Person, person_of[0]).label = "Child Y"
        sid, pid = rec.id, person_of[0]
    get_engine(url).dispose()
    return path, ids, sid, pid


@pytest.fixture()
def db(template, settings):
    src, ids, sid, pid = template
    dest = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dest) as b:
        a.backup(b)
    data.invalidate()
    return settings.resolved_database_url, ids, sid, pid


@pytest.fixture()
def sent(monkeypatch):
    """Tasks sent by name (the broker itself is tested once, below)."""
    out: list[tuple[str, int]] = []
    monkeypatch.setattr(clinic, "send_task", lambda settings, task, job_id: out.append((task, job_id)))
    return out


def open_review(user_id: int, sid: int) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[auth.USER_KEY] = user_id
    at.query_params["session"] = str(sid)
    at.run()
    at.switch_page("views/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart(at: AppTest) -> dict:
    """The child's timelines: the page's first chart (the tagged behaviours' chart follows once there are tags)."""
    specs = page_specs(at)
    assert len(specs) <= 2 and all("week over week" in s["layout"]["title"]["text"] for s in specs[1:])
    return specs[0]


def _tags(url, ids, sid):
    return data.list_tags(url, data.viewer_for(url, ids.users["clinician"]), sid)


def test_timelines_shade_uncertain_spans_show_cues_and_are_not_class_engagement(db):
    url, ids, sid, pid = db
    at = open_review(ids.users["clinician"], sid)
    assert at.selectbox(key="review_session").value == sid
    spec = chart(at)
    assert spec["layout"]["title"]["text"] == "Child Y"
    assert "Class engagement" not in json.dumps(spec["layout"])
    bars = [t for t in spec["data"] if t["type"] == "bar"]
    assert "uncertain" in {t["name"] for t in bars}  # the label row: runs, not dots
    shapes = spec["layout"]["shapes"]
    uncertain = [sh for sh in shapes if sh["fillcolor"] == charts.UNCERTAIN_FILL]
    hidden = [sh for sh in shapes if sh["fillcolor"] == charts.GAP_COLOR]
    assert uncertain and hidden
    assert {(sh["x0"], sh["x1"]) for sh in hidden} == {(charts.ms(100), charts.ms(130))}  # the 30 s without a face
    hover = next(t for t in spec["data"] if t.get("name") == "angry")
    assert "cues: smile" in hover["text"][0] and "head yaw" in hover["text"][0]
    assert spec["layout"]["xaxis"]["type"] == "date" and spec["layout"]["xaxis"]["tickformat"] == "%M:%S"
    # the cue model is interpretable: its rules are one click away on the page
    assert any("not** a trained classifier" in m.value for m in at.markdown)


def test_brush_fills_the_range_then_a_tag_is_drawn_on_every_row(db):
    url, ids, sid, pid = db
    at = open_review(ids.users["clinician"], sid)
    drag(at, f"child_chart_{sid}_{pid}", "2000-01-01 00:11:00", "2000-01-01 00:10:00")  # what chart.js sends
    # a brush from right to left: 10:00-11:00 is past the 10-minute session's end, so it is clipped to it
    assert (at.text_input(key="tag_from").value, at.text_input(key="tag_to").value) == ("10:00", "10:00")
    at.text_input(key="tag_from").input("1:40")
    at.text_input(key="tag_to").input("2:05")  # the slider could not do this: 100-125 s on a 10-minute session
    at.selectbox(key="tag_label").set_value("fear")
    at.text_area(key="tag_note").input("covered ears")
    at.button(key="add_tag").click().run()
    assert not at.exception
    tags = _tags(url, ids, sid)
    assert tags[["t_start", "t_end", "label", "note", "is_baseline"]].values.tolist() == [
        [100.0, 125.0, "fear", "covered ears", False]]  # fmt: skip
    with session_scope(url) as s:  # the tag added from the page is in the audit log, with who and what
        (entry,) = [e for e in repo.audit_log(s) if e.action == "add_tag"]
        assert (entry.actor, entry.target) == ("clinician", f"tag:{tags['uid'].iloc[0]}")
        assert entry.detail == {"session_id": sid, "person_id": pid, "label": "fear", "t_start": 100.0, "t_end": 125.0,
                                "baseline": False}  # fmt: skip
    shapes = chart(at)["layout"]["shapes"]
    drawn = [sh for sh in shapes if sh["fillcolor"] == charts.TAG_FILL]
    assert len(drawn) == 3 and {sh["yref"] for sh in drawn} == {"y domain", "y2 domain", "y3 domain"}
    assert any(a.get("text") == "fear" for a in chart(at)["layout"]["annotations"])
    at.text_input(key="tag_from").input("3:00")
    at.text_input(key="tag_to").input("2:00")
    at.button(key="add_tag").click().run()
    assert any("before it starts" in shown(e.value) for e in at.error) and len(_tags(url, ids, sid)) == 1


def test_edit_to_a_baseline_then_delete(db):
    url, ids, sid, pid = db
    viewer = data.viewer_for(url, ids.users["clinician"])
    actions.add_tag(url, viewer, sid, pid, 30, 60, "happy", "")
    at = open_review(ids.users["clinician"], sid)
    assert at.text_input(key="edit_from").value == "00:30"
    at.text_input(key="edit_from").input("00:20")
    at.selectbox(key="edit_label").set_value("neutral")
    at.checkbox(key="edit_baseline").check()
    at.button(key="edit_tag").click().run()
    assert not at.exception
    (tag,) = _tags(url, ids, sid).itertuples()
    assert (tag.t_start, tag.t_end, tag.label, tag.is_baseline) == (20.0, 60.0, "neutral", True)
    assert data.count_audit(url, "edit_tag") == 1
    base = [sh for sh in chart(at)["layout"]["shapes"] if sh["fillcolor"] == charts.BASELINE_FILL]
    assert len(base) == 3
    assert any(a.get("text") == "baseline: neutral" for a in chart(at)["layout"]["annotations"])
    at.button(key="delete_tag").click().run()
    assert len(_tags(url, ids, sid)) == 1  # one click only asks
    at.button(key="delete_tag_confirm").click().run()
    assert _tags(url, ids, sid).empty and data.count_audit(url, "delete_tag") == 1


def test_personalise_is_queued_by_task_name_and_its_progress_shown(db, sent):
    url, ids, sid, pid = db
    viewer = data.viewer_for(url, ids.users["clinician"])
    actions.add_tag(url, viewer, sid, pid, 0, 60, "happy", "")
    at = open_review(ids.users["clinician"], sid)
    at.radio(key="personalise_policy").set_value("always")
    at.button(key="personalise").click().run()
    assert not at.exception
    (task, jid), = sent
    assert task == PERSONALIZE_TASK
    with session_scope(url) as s:
        job = s.get(Job, jid)
        assert (job.person_id, job.status, job.params) == (pid, JobStatus.queued, {"activate": True, "actor": "clinician"})
        repo.update_job(s, jid, status=JobStatus.running, progress=0.2, message="cross-validating")
    at.run()
    (bar,) = at.get("progress")
    assert bar.proto.value == 20 and "Personalising: cross-validating (20%)" in shown(bar.proto.text)
    assert data.count_audit(url, "personalise", f"person:{pid}") == 1


def test_versions_report_activate_and_roll_back(db, sent):
    url, ids, sid, pid = db
    with session_scope(url) as s:
        for f1 in (0.41, 0.63):
            person_models.save_model(s, pid, "personal", b"params", {
                "n_tags": 4, "n_bins": 300, "labels": ["happy", "neutral"], "activation": "activated on request",
                "personal": {"macro_f1": f1, "coverage": 0.8}, "population": {"macro_f1": 0.35},
                "population_calibrated": {"macro_f1": 0.38}}, activate=True, actor="test")  # fmt: skip
    at = open_review(ids.users["clinician"], sid)
    table = next(df.value for df in at.dataframe if "personal_f1" in df.value.columns)
    assert table[["version", "active", "personal_f1", "population_f1"]].values.tolist() == [
        [2, True, 0.63, 0.35], [1, False, 0.41, 0.35]]  # fmt: skip
    at.button(key="model_rollback").click().run()
    assert not at.exception
    with session_scope(url) as s:
        assert person_models.active_model(s, pid, "personal").version == 1
    assert sent[-1][0] == RESCORE_TASK
    at.selectbox(key="model_version").set_value(2).run()
    at.button(key="model_activate").click().run()
    with session_scope(url) as s:
        assert person_models.active_model(s, pid, "personal").version == 2
        rescore = s.get(Job, sent[-1][1])
        assert (rescore.task, rescore.person_id, rescore.status) == (RESCORE_TASK, pid, JobStatus.queued)
    assert data.count_audit(url, "activate_personal_model", f"person:{pid}") == 4  # 2 saves, rollback, activate


def test_therapy_export_carries_label_confidence_model_and_tags(db):
    url, ids, sid, pid = db
    viewer = data.viewer_for(url, ids.users["clinician"])
    actions.add_tag(url, viewer, sid, pid, 10, 20, "fear", "")
    actions.add_tag(url, viewer, sid, pid, 15, 40, "calm", "", is_baseline=True) if "calm" in data.tag_vocabulary(url) \
        else actions.add_tag(url, viewer, sid, pid, 15, 40, "neutral", "", is_baseline=True)  # fmt: skip
    at = open_review(ids.users["clinician"], sid)
    at.button(key="therapy_export").click().run()
    assert not at.exception
    out = at.session_state[f"therapy_export_{sid}_{pid}_csv"]
    df = pd.read_csv(io.BytesIO(out.data), keep_default_na=False)
    assert tuple(df.columns) == exports.THERAPY_COLUMNS and len(df) == N_BINS
    assert set(df["personal_model"]) == {"population"}
    by_t = df.set_index("t_start")
    assert by_t.loc[12.0, "tags"] == "fear" and by_t.loc[16.0, "tags"] in ("fear; neutral", "fear; calm")
    assert bool(by_t.loc[16.0, "baseline"]) and not bool(by_t.loc[12.0, "baseline"])
    assert by_t.loc[50.0, "tags"] == ""
    vis = df["face_visible"].astype(str) == "True"
    assert set(df.loc[vis, "personal_label"]) <= {"happy", "neutral", "anxious", "uncertain"}
    conf = pd.to_numeric(df.loc[vis, "personal_confidence"])
    assert ((conf >= 0) & (conf <= 1)).all()
    with session_scope(url) as s:
        (entry,) = [e for e in repo.audit_log(s) if e.action == "export"]
        assert entry.detail["kind"] == "therapy" and entry.detail["rows"] == N_BINS


def test_send_task_puts_the_personalisation_on_the_default_broker(settings):
    clinic.send_task(settings, PERSONALIZE_TASK, 7)
    con = sqlite3.connect(settings.data_dir / "broker.db")
    (payload,) = [r[0] for r in con.execute("select payload from kombu_message")]
    con.close()
    msg = json.loads(payload)
    assert msg["headers"]["task"] == PERSONALIZE_TASK and msg["headers"]["argsrepr"] == "[7]"


def test_teacher_cannot_personalise(db):
    url, ids, sid, pid = db
    teacher = data.viewer_for(url, ids.users["teacher"])
    with pytest.raises((PermissionError, LookupError)):
        clinic.request_personalisation(url, None, teacher, pid)


def test_admin_reviews_and_tags_any_child(db):
    url, ids, sid, pid = db
    at = open_review(ids.users["admin"], sid)
    assert chart(at)["layout"]["title"]["text"] == "Child Y"
    at.text_input(key="tag_from").input("0:10")
    at.text_input(key="tag_to").input("0:20")
    at.button(key="add_tag").click().run()
    assert not at.exception
    assert _tags(url, ids, sid)[["t_start", "t_end", "author"]].values.tolist() == [[10.0, 20.0, "admin"]]


def test_model_report_shows_why_population_is_not_compared_and_the_session_shares(db, sent):
    url, ids, sid, pid = db
    metrics = {"n_tags": 9, "n_bins": 300, "labels": ["anxiety", "calm"], "activation": "activated on request",
               "personal": {"macro_f1": 0.9, "balanced_accuracy": 0.9, "coverage": 0.8}, "population": None,
               "population_calibrated": None, "personal_compared": None, "comparison_labels": [],
               "population_omitted": "it can output none of anxiety, calm",
               "shares": {str(sid): {"bins": 300, "tagged": {"calm": 0.95, "anxiety": 0.05},
                                     "before": {"happy": 0.6, "neutral": 0.4},
                                     "after": {"calm": 0.93, "anxiety": 0.07}}}}  # fmt: skip
    with session_scope(url) as s:
        person_models.save_model(s, pid, "personal", b"params", metrics, activate=True, actor="test")
    at = open_review(ids.users["clinician"], sid)
    assert not at.exception
    table = next(df.value for df in at.dataframe if "personal_f1" in df.value.columns)
    assert table.loc[0, "compared_on"] == "not compared" and pd.isna(table.loc[0, "population_f1"])
    assert any("population model not compared: it can output none of anxiety, calm" in shown(c.value)
               for c in at.caption)  # fmt: skip
    shares = next(df.value for df in at.dataframe if "after" in df.value.columns)
    got = shares.set_index("label")
    assert got.loc["calm", "after"] == 0.93 and got.loc["anxiety", "tagged"] == 0.05
    assert got.loc["happy", "before"] == 0.6


def test_version_picker_agrees_with_the_table_after_a_rollback(db, sent):
    url, ids, sid, pid = db
    with session_scope(url) as s:
        for f1 in (0.41, 0.63):
            person_models.save_model(s, pid, "personal", b"params", {"n_tags": 4, "n_bins": 300, "labels": ["happy"],
                                     "personal": {"macro_f1": f1}}, activate=True, actor="test")  # fmt: skip
    at = open_review(ids.users["clinician"], sid)
    assert shown(at.selectbox(key="model_version").label) == "Version (active: v2)"
    at.selectbox(key="model_version").set_value(2).run()  # v2 picked while it is the active one
    at.button(key="model_rollback").click().run()
    assert not at.exception
    table = next(df.value for df in at.dataframe if "personal_f1" in df.value.columns)
    active = table.loc[table["active"], "version"].tolist()
    picker = at.selectbox(key="model_version")
    # the picked version is still v2, by number (it was kept as the text "v2 (active)" and came back as that text)
    assert active == [1] and picker.value == 2 and shown(picker.label) == "Version (active: v1)"
    assert picker.options == ["v2", "v1"]
    assert not at.button(key="model_activate").disabled  # v2 is not the active one any more
