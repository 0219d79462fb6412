"""Consent: in a group that requires it, only consented persons get per-person rows; the rest
count only in the class aggregates; withdrawing deletes a person's stored data, audited.

The first test runs the real pipeline on real footage (two people, 56 frames) through
``tasks.store.run_analysis`` with a job row, exactly as a worker does; the others build
analyses by hand and store them through ``storage.repo.replace_analysis``, the boundary
that enforces the rules.
"""

from __future__ import annotations

from dashboard.safe import shown


from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from affectline.queue import ANALYZE_TASK
from services import privacy
from services.actor import Actor, operator
from storage import consent, people, repo
from storage.db import session_scope
from storage.models import (
    AuditEntry,
    ClassBin,
    Consent,
    FeatureSeries,
    Job,
    JobStatus,
    Person,
    PersonEmbedding,
    Role,
    SessionKind,
    Tag,
    TimeBin,
    Track,
)
from tests.page_charts import specs
from tests.dashboard_factories import add_analysed_session, make_bins
from tests.paths import MEDIA

VIDEO = MEDIA / "two_people_head_turns_270p.mp4"
FPS = 2.0


# --- real footage ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline():
    """The real pipeline, loaded once for the module."""
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline

    with Pipeline(Settings(academic_model="cues"), device="cpu") as p:
        yield p


def analyse(url, settings, pipeline, session_id: int | None = None, group: str = "Class C") -> int:
    from tasks.eager import run_analysis

    with session_scope(url) as s:
        if session_id is None:
            g = repo.get_or_create_group(s, group, "classroom")
            session_id = repo.create_recording(s, str(VIDEO), "classroom", group_id=g.id).id
        job_id = repo.create_job(s, ANALYZE_TASK, session_id=session_id, params={"analysis_fps": FPS}).id
    run_analysis(job_id, settings, pipeline=pipeline)
    with session_scope(url) as s:
        job = s.get(Job, job_id)
        assert job.status == JobStatus.done, job.error
    return session_id


def stored(url, session_id: int) -> dict[str, set[int]]:
    """Which persons have rows of each per-person table in the session."""
    with session_scope(url) as s:
        return {m.__tablename__: set(s.scalars(select(m.person_id).where(m.session_id == session_id).distinct()))
                for m in (Track, TimeBin, FeatureSeries)}  # fmt: skip


def curve(url, session_id: int) -> pd.DataFrame:
    with session_scope(url) as s:
        return repo.class_curve(s, session_id).set_index("t_start").sort_index()


def test_consent_required_group_stores_only_the_consented_face_on_real_footage(db_url, settings, pipeline):
    # Before the group requires consent: both children are stored, as 'Unknown 1' and 'Unknown 2'.
    sid = analyse(db_url, settings, pipeline)
    with session_scope(db_url) as s:
        rows = sorted(s.scalars(select(Track).where(Track.session_id == sid)), key=lambda t: t.t_start)
        assert len(rows) == 2, "two people in the video"
        unknown = [t.person_id for t in rows]
        n_bins_each = {t.person_id: s.scalar(select(func.count(TimeBin.id)).where(TimeBin.track_id == t.id)) for t in rows}
    everyone = curve(db_url, sid)
    assert everyone["n_persons"].max() == 2 and everyone["n_visible"].max() == 2

    # Ada is enrolled (named) and her guardian agrees; the other child's guardian has not answered.
    admin = operator("school office")
    with session_scope(db_url) as s:
        ada = people.rename(s, unknown[0], "Ada", admin.audit_name).id
    privacy.grant_consent(db_url, admin, ada, "analysis", "classroom analysis 2026/27", date.today() + timedelta(days=300))
    privacy.require_consent(db_url, admin, "Class C")

    sid = analyse(db_url, settings, pipeline, session_id=sid)  # re-analysis of the same session
    later = analyse(db_url, settings, pipeline)  # and a new session of the group

    for session in (sid, later):
        assert stored(db_url, session) == {"tracks": {ada}, "time_bins": {ada}, "feature_series": {ada}}
        with session_scope(db_url) as s:
            assert s.scalar(select(func.count(TimeBin.id)).where(TimeBin.session_id == session)) == n_bins_each[ada]
            # Nobody else got a person row: no 'Unknown N' for the face without consent.
            assert list(s.scalars(select(Person.label).where(Person.origin_session_id == session))) == []
            agg = consent.class_aggregates(s, session)
            note = consent.withheld_summary(s, session)
        # The other child is counted in the class aggregates, bin for bin, as many bins as her track has.
        assert len(agg) == n_bins_each[unknown[1]] and set(agg["n_faces"]) == {1}
        assert note.max_faces == 1 and "count only toward the class curve" in note.sentence()
        # And the class curve is the one computed when both were stored per person.
        c = curve(db_url, session)
        assert c.index.equals(everyone.index)
        assert (c["n_persons"] == everyone["n_persons"]).all() and (c["n_visible"] == everyone["n_visible"]).all()
        np.testing.assert_allclose(c["engagement"], everyone["engagement"], rtol=1e-6, equal_nan=True)
    with session_scope(db_url) as s:
        assert s.get(Person, unknown[1]) is None, "the old 'Unknown 2' went with the re-analysis"
    assert privacy.session_withheld(db_url, None, sid).max_faces == 1

    # Withdrawal: Ada's per-person data goes (audited); she still counts in the class curve.
    counts = privacy.withdraw_consent(db_url, admin, ada)
    assert counts["time_bins"] == 2 * n_bins_each[ada] and counts["tracks"] == 2 and counts["person_embeddings"] >= 1
    for session in (sid, later):
        assert stored(db_url, session) == {"tracks": set(), "time_bins": set(), "feature_series": set()}
        c = curve(db_url, session)
        assert (c["n_persons"] == everyone["n_persons"]).all()
        np.testing.assert_allclose(c["engagement"], everyone["engagement"], rtol=1e-6, equal_nan=True)
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count(PersonEmbedding.id)).where(PersonEmbedding.person_id == ada)) == 0
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "consent_withdraw"))
    assert (entry.actor, entry.target, entry.detail["time_bins"]) == (admin.audit_name, f"person:{ada}", counts["time_bins"])
    # A re-analysis after the withdrawal stores nobody per person, and still counts both faces.
    analyse(db_url, settings, pipeline, session_id=sid)
    assert stored(db_url, sid) == {"tracks": set(), "time_bins": set(), "feature_series": set()}
    assert (curve(db_url, sid)["n_persons"] == everyone["n_persons"]).all()


# --- the rules, on hand-made analyses ---------------------------------------------------------------


def _track(key: int, pid: int | None, rng, n: int = 20, thumb: bool = False) -> repo.TrackRecord:
    times = np.arange(0, n, 0.5, dtype=np.float32)
    boxes = np.tile(np.array([[10 + 40 * key, 10, 40 + 40 * key, 40]], np.float32), (len(times), 1))
    return repo.TrackRecord(
        track_key=key, times=times, face_boxes=boxes, context_boxes=boxes, embedding=rng.normal(size=128),
        bins=make_bins(n, rng, hidden=(3, 5)), features=np.zeros((n, 2), np.float32), feature_names=("a", "b"),
        person_id=pid, thumbnail=b"\xff\xd8jpeg" if thumb else None,
    )  # fmt: skip


def _store(url, sid: int, tracks) -> None:
    with session_scope(url) as s:
        repo.replace_analysis(s, repo.AnalysisResult(sid, 25.0, 500, 640, 360, 2.0, 1.0, "cues@x", "fer@y", list(tracks)))


@pytest.fixture()
def roster(db_url):
    """Class D with three enrolled children (Ada, Ben, Cleo) and one analysed session."""
    with session_scope(db_url) as s:
        g = repo.get_or_create_group(s, "Class D", SessionKind.classroom).id
    sid, pids = add_analysed_session(db_url, g, SessionKind.classroom, "lesson", 3, n_bins=20)
    with session_scope(db_url) as s:
        ids = [people.rename(s, p, name, "t").id for p, name in zip(pids, ("Ada", "Ben", "Cleo"))]
    return dict(group=g, session=sid, ada=ids[0], ben=ids[1], cleo=ids[2])


def test_rules_expired_refused_unknown_and_thumbnails(db_url, roster):
    rng = np.random.default_rng(5)
    g, sid, ada, ben, cleo = (roster[k] for k in ("group", "session", "ada", "ben", "cleo"))
    t0 = datetime.now(timezone.utc)
    with session_scope(db_url) as s:
        consent.grant(s, ada, "analysis", "t", "form 12", at=t0)
        consent.grant(s, ada, "thumbnails", "t", at=t0)
        consent.grant(s, ben, "analysis", "t", expires_at=t0 + timedelta(seconds=1), at=t0)
    tracks = lambda: [_track(0, ada, rng, thumb=True), _track(1, ben, rng, thumb=True),  # noqa: E731
                      _track(2, cleo, rng, thumb=True), _track(3, None, rng, thumb=True)]  # fmt: skip

    # Consent not required: everyone is stored, an unknown face as 'Unknown 1'; all thumbnails kept.
    _store(db_url, sid, tracks())
    with session_scope(db_url) as s:
        thumbs = dict(s.execute(select(Track.person_id, Track.thumbnail).where(Track.session_id == sid)).all())
        assert len(thumbs) == 4 and all(thumbs.values())
        assert s.scalar(select(func.count(ClassBin.id)).where(ClassBin.session_id == sid)) == 0

    # Required: Ada (valid) stays with her thumbnail; Ben's consent has expired; Cleo never
    # answered; the unknown face has nobody to answer for it.
    with session_scope(db_url) as s:
        consent.set_consent_required(s, g, True, "t")
    import time

    time.sleep(1.1)
    with session_scope(db_url) as s:
        consent.grant(s, cleo, "analysis", "t")  # Cleo now agrees to analysis, not to thumbnails
    _store(db_url, sid, tracks())
    assert stored(db_url, sid)["time_bins"] == {ada, cleo}
    with session_scope(db_url) as s:
        thumbs = dict(s.execute(select(Track.person_id, Track.thumbnail).where(Track.session_id == sid)).all())
        assert thumbs[ada] is not None and thumbs[cleo] is None
        agg = consent.class_aggregates(s, sid)
        assert agg["n_faces"].max() == 2  # Ben and the unknown face
        assert s.scalar(select(func.count(Person.id)).where(Person.origin_session_id == sid)) == 0

    # A recorded "no" (withdrawn, or lapsed like Ben's) holds where consent is not required too.
    with session_scope(db_url) as s:
        consent.set_consent_required(s, g, False, "t")
        consent.withdraw(s, cleo, "thumbnails", "t")
        consent.withdraw(s, ada, "analysis", "t")
    _store(db_url, sid, tracks())
    with session_scope(db_url) as s:
        thumbs = dict(s.execute(select(Track.person_id, Track.thumbnail).where(Track.session_id == sid)).all())
        labels = {pid: s.get(Person, pid).label for pid in thumbs}
    assert sorted(labels.values()) == ["Cleo", "Unknown 1"]
    assert thumbs[cleo] is None and all(v is not None for k, v in thumbs.items() if k != cleo)


def test_withdrawal_deletes_everything_per_person_and_folds_bins_into_the_class(db_url, roster):
    import uuid

    sid, ada, ben = roster["session"], roster["ada"], roster["ben"]
    with session_scope(db_url) as s:
        consent.grant(s, ada, "analysis", "t")
        s.add(Tag(uid=str(uuid.uuid4()), session_id=sid, person_id=ada, t_start=1, t_end=2, label="happy", author="t"))
        before = repo.class_curve(s, sid)
        ada_bins = s.scalar(select(func.count(TimeBin.id)).where(TimeBin.person_id == ada))
        ben_bins = s.scalar(select(func.count(TimeBin.id)).where(TimeBin.person_id == ben))
    counts = privacy.withdraw_consent(db_url, operator(), ada)
    assert counts["time_bins"] == ada_bins > 0 and counts["tags"] == 1 and counts["tracks"] == 1
    assert counts["person_embeddings"] == 1 and counts["feature_series"] == 1 and counts["sessions_folded"] == 1
    with session_scope(db_url) as s:
        for m in (TimeBin, FeatureSeries, Track, Tag, PersonEmbedding):
            assert s.scalar(select(func.count()).select_from(m).where(m.person_id == ada)) == 0, m.__tablename__
        assert s.scalar(select(func.count(TimeBin.id)).where(TimeBin.person_id == ben)) == ben_bins
        c = s.get(Person, ada) and s.scalar(select(Consent).where(Consent.person_id == ada, Consent.purpose == "analysis"))
        assert consent.state(c) == "withdrawn" and c.withdrawn_by == operator().audit_name
        after = repo.class_curve(s, sid)
    pd.testing.assert_frame_equal(after.reset_index(drop=True), before.reset_index(drop=True), check_dtype=False)


def test_consent_input_is_checked_and_needs_an_administrator(db_url, roster):
    admin, ada = operator(), roster["ada"]
    teacher = Actor(9, "tina", Role.teacher, (roster["group"],))
    with pytest.raises(PermissionError, match="tina"):
        privacy.grant_consent(db_url, teacher, ada)
    with pytest.raises(PermissionError):
        privacy.withdraw_consent(db_url, teacher, ada)
    with pytest.raises(ValueError, match="thumbnails consent needs it first"):
        privacy.grant_consent(db_url, admin, ada, "thumbnails")
    with pytest.raises(ValueError, match="not in the future"):
        privacy.grant_consent(db_url, admin, ada, "analysis", "", "2001-01-01")
    with pytest.raises(ValueError, match="not a date"):
        privacy.grant_consent(db_url, admin, ada, "analysis", "", "next year")
    with pytest.raises(ValueError, match="control characters"):
        privacy.grant_consent(db_url, admin, ada, "analysis", "=1+1\x00")
    with pytest.raises(ValueError, match="not one of analysis, thumbnails"):
        privacy.grant_consent(db_url, admin, ada, "marketing")
    with pytest.raises(LookupError, match="person 9999 does not exist"):
        privacy.grant_consent(db_url, admin, 9999)
    with session_scope(db_url) as s:
        unknown = Person(label="Unknown 9", group_id=roster["group"], enrolled=False)
        s.add(unknown)
        s.flush()
        uid = unknown.id
    with pytest.raises(ValueError, match="is not enrolled"):
        privacy.grant_consent(db_url, admin, uid)
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count(Consent.id))) == 0, "nothing recorded by a refused request"


def test_cli_manages_consent_with_the_operator_in_the_audit_trail(db_url, roster):
    from cli.main import main

    ada, ben = roster["ada"], roster["ben"]
    run = lambda *a, **k: CliRunner().invoke(main, list(a), **k)  # noqa: E731
    r = run("--as", "Ms Head", "consent", "grant", str(ada), "--scope", "signed form 2026", "--expires", "2099-07-31")
    assert r.exit_code == 0 and "analysis consent recorded until 2099-07-31" in r.output, r.output
    assert run("consent", "grant", str(ada), "--thumbnails").exit_code == 0
    assert run("consent", "require", "Class D").exit_code == 0
    r = run("consent", "list", "--group", "Class D")
    lines = {ln.split("\t")[2]: ln.split("\t") for ln in r.output.splitlines()[1:]}
    assert lines["Ada"][3:6] == ["valid", "valid", "per person"] and lines["Ada"][-2:] == ["2099-07-31", "signed form 2026"]
    assert lines["Ben"][3:6] == ["none", "none", "class only"]
    assert "(as Ms Head)" in lines["Ada"][6]
    r = run("consent", "withdraw", str(ben), input="y\n")  # a refusal, recorded without a grant
    assert r.exit_code == 0 and "deleted" in r.output and "time_bins" in r.output, r.output
    assert "warning" not in r.output  # the group requires consent: Ben's face is kept out from now on
    assert run("consent", "require", "Class D", "--off").exit_code == 0
    r = run("consent", "withdraw", str(ada), "--yes")
    assert "warning: Group 'Class D' does not require consent" in r.output, r.output
    assert run("consent", "withdraw", "424242", "--yes").output.strip().endswith("person 424242 does not exist or is not visible to you")
    r = run("consent", "require", "Nope")
    assert r.exit_code == 1 and "group 'Nope' does not exist" in r.output and "Traceback" not in r.output
    with session_scope(db_url) as s:
        actions = [e.action for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id)) if e.action.startswith("consent")]
    assert actions == ["consent_grant", "consent_grant", "consent_required", "consent_withdraw", "consent_required",
                       "consent_withdraw"]


# --- the dashboard page -------------------------------------------------------------------------


def _page(user_id: int):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from dashboard import auth, data

    data.invalidate()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=60)
    at.session_state[auth.USER_KEY] = user_id
    at.run()
    return at


def test_dashboard_page_lets_an_administrator_record_and_withdraw_consent(db_url, roster):
    from storage import access

    with session_scope(db_url) as s:
        admin = access.create_user(s, "root", Role.admin, "correct horse battery staple").id
        teacher = access.create_user(s, "tina", Role.teacher, "correct horse battery staple").id
        access.grant(s, teacher, roster["group"])
    at = _page(teacher)
    assert not at.exception
    with pytest.raises(ValueError):  # not registered with st.navigation for a teacher
        at.switch_page("views/consent.py").run()

    at = _page(admin).switch_page("views/consent.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(df.value for df in at.dataframe if "analysis" in df.value.columns)
    assert set(table["person"]) == {"Ada", "Ben", "Cleo"} and set(table["analysis"]) == {"none"}
    at.selectbox(key="grant_person").set_value(roster["ada"])
    at.text_input(key="grant_scope").set_value("signed form, class D")
    at.button[0].click().run()  # the form's submit button
    assert not at.exception, [e.value for e in at.exception]
    with session_scope(db_url) as s:
        c = s.scalar(select(Consent).where(Consent.person_id == roster["ada"]))
        assert consent.state(c) == "valid" and c.scope == "signed form, class D" and c.recorded_by == "root"
    at.selectbox(key="withdraw_person").set_value(roster["ben"])
    at.button(key="withdraw_button").click().run()
    assert not any("Consent withdrawn" in shown(e.value) for e in at.success)  # one click only asks
    assert stored(db_url, roster["session"])["time_bins"] == {roster["ada"], roster["ben"], roster["cleo"]}
    assert any("This deletes what is stored about Ben" in shown(w.value) for w in at.warning)
    at.button(key="withdraw_button_confirm").click().run()
    assert not at.exception, [shown(e.value) for e in at.exception]
    assert any("Consent withdrawn; deleted" in shown(e.value) for e in at.success)
    assert any("does not require consent" in shown(e.value) for e in at.warning), "Class D does not require it yet"
    assert stored(db_url, roster["session"])["time_bins"] == {roster["ada"], roster["cleo"]}
    with session_scope(db_url) as s:
        actors = {e.actor for e in s.scalars(select(AuditEntry).where(AuditEntry.action.like("consent_%")))}
    assert actors == {"root"}
    # The policy tab: require consent in the group, keep its sessions 30 days.
    g = roster["group"]
    at.selectbox(key="policy_group").set_value(g)
    at.toggle(key=f"policy_required_{g}").set_value(True)
    at.button(key="policy_required_save").click().run()
    at.checkbox(key=f"keep_{g}").uncheck().run()
    at.number_input(key=f"days_{g}").set_value(30)
    at.button(key="policy_days_save").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with session_scope(db_url) as s:
        assert consent.policy(s, g) == consent.Policy(g, True, 30)


def test_session_page_says_which_faces_count_only_toward_the_class_curve(db_url, roster):
    from storage import access

    rng = np.random.default_rng(11)
    with session_scope(db_url) as s:
        admin = access.create_user(s, "root", Role.admin, "correct horse battery staple").id
        consent.set_consent_required(s, roster["group"], True, "t")
        consent.grant(s, roster["ada"], "analysis", "t")
    _store(db_url, roster["session"], [_track(0, roster["ada"], rng), _track(1, roster["ben"], rng),
                                       _track(2, None, rng)])  # fmt: skip
    at = _page(admin)
    at.session_state["session_id"] = roster["session"]
    at.switch_page("views/session.py").run()
    assert not at.exception, [e.value for e in at.exception]
    captions = " ".join(c.value for c in at.caption)
    assert "Up to 2 faces without valid consent or not enrolled count only toward the class curve" in captions


def test_session_page_draws_the_class_curve_when_no_face_may_be_kept(db_url, roster):
    from storage import access

    rng = np.random.default_rng(12)
    with session_scope(db_url) as s:
        admin = access.create_user(s, "root", Role.admin, "correct horse battery staple").id
        consent.set_consent_required(s, roster["group"], True, "t")  # nobody has consented
    _store(db_url, roster["session"], [_track(0, roster["ben"], rng), _track(1, None, rng)])
    assert stored(db_url, roster["session"])["time_bins"] == set()
    at = _page(admin)
    at.session_state["session_id"] = roster["session"]
    at.switch_page("views/session.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "No faces were found" not in " ".join(shown(w.value) for w in at.warning)
    assert "count only toward the class curve" in " ".join(i.value for i in at.info)
    (fig,) = specs(at)
    curve = next(tr for tr in fig["data"] if tr.get("name") == "class engagement")
    assert any(v is not None for v in curve["y"])  # the withheld faces' engagement is drawn
