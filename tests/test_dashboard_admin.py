"""The Admin page through AppTest, and services.admin under it, on a seeded temporary database."""

from __future__ import annotations

from dashboard.safe import shown

import io
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import actions, auth, data
from services import admin
from services.actor import actor_for_user
from storage import access
from storage.db import session_scope
from tests.dashboard_factories import Seeded, copy_seeded, make_seeded_template

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
ADMIN = "views/admin.py"


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory):
    return make_seeded_template(tmp_path_factory.mktemp("seed"))


@pytest.fixture()
def ids(seeded_template, settings) -> Seeded:
    return copy_seeded(seeded_template, settings)


@pytest.fixture()
def url(settings, ids) -> str:
    return settings.resolved_database_url


def actor(url: str, user_id: int):
    with session_scope(url) as s:
        return actor_for_user(s, user_id)


def admin_page(user_id: int, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state[auth.USER_KEY] = user_id
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    at.switch_page(ADMIN).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _by_columns(at: AppTest, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_non_admins_cannot_open_the_admin_page(url, ids):
    for who in ("teacher", "clinician"):
        at = AppTest.from_file(APP, default_timeout=30)
        at.session_state[auth.USER_KEY] = ids.users[who]
        at.run()
        with pytest.raises(Exception):
            at.switch_page(ADMIN).run()  # not among the role's pages: Streamlit refuses to switch
        assert not any("Admin" == t.value for t in at.title)
        with pytest.raises(PermissionError):
            admin.users(url, actor(url, ids.users[who]))


def test_create_user_and_change_role(url, ids):
    at = admin_page(ids.users["admin"])
    at.text_input[0].input("nurse")  # the new-user form comes first
    at.selectbox[0].select("clinician")
    at.text_input[1].input("a long pass phrase")
    at.button[0].click().run()  # form submit
    assert not at.exception
    assert "User nurse created." in [shown(s.value) for s in at.success]
    users = _by_columns(at, "username")
    row = users.set_index("username").loc["nurse"]
    assert row["role"] == "clinician" and bool(row["can_log_in"]) and not bool(row["disabled"])

    nurse = int(row["id"])
    at.selectbox(key="edit_user").select(nurse)
    at.selectbox(key="edit_role").select("teacher")
    click(at, "set_role")
    assert "nurse is now teacher." in [shown(s.value) for s in at.success]
    with session_scope(url) as s:
        assert access.get_user(s, "nurse").role.value == "teacher"
    log = admin.audit_log(url, actor(url, ids.users["admin"]), admin.AuditFilter(action="set_role"))
    assert log.iloc[0]["target_label"] == "nurse" and log.iloc[0]["detail"]["previous"] == "clinician"


def test_admin_cannot_demote_or_disable_themselves(url, ids):
    me = actor(url, ids.users["admin"])
    with pytest.raises(ValueError, match="own admin role"):
        admin.set_role(url, me, me.id, "teacher")
    with pytest.raises(ValueError, match="own account"):
        admin.set_disabled(url, me, me.id, True)


def test_disable_and_reenable_a_user(url, ids):
    teacher = ids.users["teacher"]
    at = admin_page(ids.users["admin"])
    at.selectbox(key="edit_user").select(teacher)
    at.run()
    click(at, "disable_user")
    assert "teacher is disabled." in [shown(s.value) for s in at.success]
    assert bool(_by_columns(at, "username").set_index("username").loc["teacher", "disabled"])
    with session_scope(url) as s:
        access.set_password(s, teacher, "chalk and talk")
    with session_scope(url) as s:
        assert access.authenticate(s, "teacher", "chalk and talk") is None
    click(at, "enable_user")
    assert "teacher is enabled again." in [shown(s.value) for s in at.success]
    with session_scope(url) as s:
        assert access.authenticate(s, "teacher", "chalk and talk") is not None
    actions = admin.audit_log(url, actor(url, ids.users["admin"]), admin.AuditFilter(target="user:%d" % teacher))
    assert {"disable_user", "enable_user"} <= set(actions["action"])


def test_grants_are_offered_and_allowed_only_where_they_take_effect(url, ids):
    me = actor(url, ids.users["admin"])
    teacher, clinician = ids.users["teacher"], ids.users["clinician"]
    # The service refuses a therapy group for a teacher and a class for a clinician.
    with pytest.raises(ValueError, match="teacher sees only classroom"):
        admin.grant(url, me, teacher, ids.groups["child-x"])
    with pytest.raises(ValueError, match="clinician sees only therapy"):
        admin.grant(url, me, clinician, ids.groups["class-b"])
    with pytest.raises(ValueError, match="already sees every group"):
        admin.grant(url, me, ids.users["admin"], ids.groups["class-b"])
    with session_scope(url) as s:
        assert access.granted_group_ids(s, teacher) == [ids.groups["class-a"]]

    at = admin_page(ids.users["admin"])
    grants = _by_columns(at, "in_effect")
    assert set(zip(grants["username"], grants["group"])) == {("teacher", "class-a"), ("clinician", "child-x")}
    assert grants["in_effect"].all()
    # The page lists only teachers and clinicians, and for a teacher only classroom groups.
    at.selectbox(key="grant_user").select(teacher).run()
    offered = at.selectbox(key="grant_group").options
    assert sorted(offered) == ["class-a (classroom)", "class-b (classroom)"]
    assert str(ids.users["admin"]) not in [str(o) for o in at.selectbox(key="grant_user").options]
    at.selectbox(key="grant_group").select(ids.groups["class-b"])
    click(at, "grant")
    assert "Granted class-b (classroom) to teacher (teacher)." in [shown(s.value) for s in at.success]
    assert actor(url, teacher).group_ids == (ids.groups["class-a"], ids.groups["class-b"])

    # A role change leaves old grants in the table, marked as without effect, with a warning.
    at.selectbox(key="edit_user").select(teacher)
    at.selectbox(key="edit_role").select("clinician")
    click(at, "set_role")
    assert any("no longer take effect" in shown(w.value) and "class-a" in shown(w.value) for w in at.warning)
    grants = _by_columns(at, "in_effect").set_index(["username", "group"])
    assert not grants.loc[("teacher", "class-a"), "in_effect"]

    at.selectbox(key="grant_user").select(teacher).run()
    at.selectbox(key="revoke_group").select(ids.groups["class-a"])
    click(at, "revoke")  # one click only asks, and says what the grant gives
    with session_scope(url) as s:
        assert access.granted_group_ids(s, teacher) == [ids.groups["class-a"], ids.groups["class-b"]]
    assert any("teacher will no longer see group class-a or its 1 session" in shown(w.value) for w in at.warning)
    click(at, "revoke_cancel")  # cancelled: still granted, no question left
    with session_scope(url) as s:
        assert access.granted_group_ids(s, teacher) == [ids.groups["class-a"], ids.groups["class-b"]]
    assert not [b for b in at.button if b.key == "revoke_confirm"]
    click(at, "revoke")
    assert shown(at.button(key="revoke_confirm").label) == "Yes, revoke"
    click(at, "revoke_confirm")
    with session_scope(url) as s:
        assert access.granted_group_ids(s, teacher) == [ids.groups["class-b"]]
    assert data.count_audit(url, "revoke") == 1


def test_audit_log_filters_names_and_export(url, ids):
    me = actor(url, ids.users["admin"])
    actions.export_session(url, actor(url, ids.users["teacher"]), ids.sessions["maths"], "csv")
    actions.export_session(url, me, ids.sessions["history"], "csv")
    admin.grant(url, me, ids.users["teacher"], ids.groups["class-b"])

    at = admin_page(ids.users["admin"])
    log = _by_columns(at, "target_label")
    assert len(log) >= 3 and log["id"].is_monotonic_decreasing

    at.text_input(key="audit_actor").input("teacher").run()
    log = _by_columns(at, "target_label")
    assert set(log["actor"]) == {"teacher"} and list(log["action"]) == ["export"]
    assert log.iloc[0]["target_label"] == "maths lesson"

    at.text_input(key="audit_actor").input("").run()
    at.selectbox(key="audit_action").select("grant").run()
    log = _by_columns(at, "target_label")
    assert list(log["target"]) == [f"user:{ids.users['teacher']}"] and list(log["target_label"]) == ["teacher"]

    # A target may be given by name: every entry about the history lesson.
    at.selectbox(key="audit_action").set_value(None).run()
    at.text_input(key="audit_target").input("history").run()
    log = _by_columns(at, "target_label")
    assert list(log["target"]) == [f"session:{ids.sessions['history']}"]

    # Dates: nothing before today... and nothing from tomorrow on.
    at.text_input(key="audit_target").input("").run()
    at.date_input(key="audit_since").set_value(date.today() + timedelta(days=1)).run()
    assert _by_columns(at, "target_label").empty
    at.date_input(key="audit_since").set_value(date.today() - timedelta(days=1)).run()
    at.date_input(key="audit_until").set_value(date.today() + timedelta(days=1)).run()
    assert len(_by_columns(at, "target_label")) >= 3

    at.selectbox(key="audit_action").select("export").run()
    click(at, "audit_export")
    csv = at.session_state["audit_csv"]
    df = pd.read_csv(io.BytesIO(csv))
    assert list(df.columns) == admin.AUDIT_COLUMNS and set(df["action"]) == {"export"} and len(df) == 2
    assert set(df["target_label"]) == {"maths lesson", "history lesson"}
    last = admin.audit_log(url, me, admin.AuditFilter(action="export_audit")).iloc[0]
    assert last["actor"] == "admin" and last["detail"]["rows"] == 2 and last["detail"]["filter"]["action"] == "export"


def test_deleted_targets_keep_their_id_and_name(url, ids):
    me = actor(url, ids.users["admin"])
    actions.export_session(url, me, ids.sessions["history"], "csv")
    actions.admin_delete_session(url, me, ids.sessions["history"])
    at = admin_page(ids.users["admin"])
    at.text_input(key="audit_target").input("history lesson").run()
    log = _by_columns(at, "target_label")
    assert list(log["action"]) == ["delete_session", "export"]
    assert set(log["target"]) == {f"session:{ids.sessions['history']}"} and set(log["target_label"]) == {"history lesson"}


def test_deleting_a_session_takes_a_second_step_that_names_what_goes(url, ids):
    from sqlalchemy import func, select

    from storage.models import Recording, TimeBin

    sid = ids.sessions["history"]
    with session_scope(url) as s:
        bins = s.scalar(select(func.count(TimeBin.id)).where(TimeBin.session_id == sid))
    at = admin_page(ids.users["admin"])
    at.selectbox(key="del_session").select(sid).run()
    click(at, "del_session_button")  # one click: a question, nothing deleted
    with session_scope(url) as s:
        assert s.get(Recording, sid) is not None
    (warn,) = [shown(w.value) for w in at.warning if "This deletes session" in shown(w.value)]
    assert f"'history lesson' (#{sid})" in warn and f"{bins:,} time bins" in warn and "cannot be undone" in warn
    click(at, "del_session_button_cancel")  # cancel: still nothing deleted, the question is gone
    assert not [w for w in at.warning if "This deletes session" in shown(w.value)]
    click(at, "del_session_button")
    click(at, "del_session_button_confirm")
    assert f"Session #{sid} deleted." in [shown(s.value) for s in at.success]
    with session_scope(url) as s:
        assert s.get(Recording, sid) is None


def test_the_question_follows_the_target(url, ids):
    """Asked about one session, then another picked: the confirm button is gone (no deleting the wrong one)."""
    at = admin_page(ids.users["admin"])
    at.selectbox(key="del_session").select(ids.sessions["history"]).run()
    click(at, "del_session_button")
    at.selectbox(key="del_session").select(ids.sessions["maths"]).run()
    assert not any(b.key == "del_session_button_confirm" for b in at.button)


def test_expired_sessions_are_deleted_only_after_the_confirmation(url, ids):
    from sqlalchemy import select, update

    from services import privacy
    from storage.models import Recording

    me = actor(url, ids.users["admin"])
    privacy.set_retention(url, me, ids.groups["class-a"], 1)
    with session_scope(url) as s:
        old = date.today() - timedelta(days=10)
        s.execute(update(Recording).where(Recording.group_id == ids.groups["class-a"]).values(created_at=old))
        expired = set(s.scalars(select(Recording.id).where(Recording.group_id == ids.groups["class-a"])))
    assert expired
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state[auth.USER_KEY] = ids.users["admin"]
    at.run()
    at.switch_page("views/consent.py").run()
    click(at, "retention_run")
    (warn,) = [shown(w.value) for w in at.warning if "expired session" in shown(w.value)]
    assert f"{len(expired)} session" in warn and "maths lesson" in warn
    with session_scope(url) as s:
        assert set(s.scalars(select(Recording.id))) >= expired
    click(at, "retention_run_confirm")
    assert any(f"Deleted {len(expired)} session(s)" in shown(s.value) for s in at.success)
    with session_scope(url) as s:
        assert not set(s.scalars(select(Recording.id))) & expired


def shown_headers(table) -> list[str]:
    """The headers a table shows: each column's configured label, else its name (as Streamlit draws it)."""
    import json

    conf = json.loads(table.proto.columns or "{}")

    def lab(c: str):
        cfg = conf.get(c, conf.get(f"name:{c}", conf.get(f"col:{c}")))
        if cfg is None:
            return c
        if cfg.get("hidden"):
            return None
        return cfg.get("label") or c

    return [h for h in (lab(str(c)) for c in table.value.columns) if h is not None]


def test_no_table_shows_a_code_name_as_its_header(url, ids):
    from services import columns, privacy

    me = actor(url, ids.users["admin"])
    pid = ids.persons["maths"][0]
    actions.rename_person(url, me, pid, "Ada")  # the consent table lists enrolled persons
    privacy.grant_consent(url, me, pid, "analysis", "form")
    seen: dict[str, list[str]] = {}
    for page in (ADMIN, "views/people.py", "views/consent.py", "views/sessions.py"):
        at = AppTest.from_file(APP, default_timeout=30)
        at.session_state[auth.USER_KEY] = ids.users["admin"]
        at.run()
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        for i, t in enumerate(at.dataframe):
            seen[f"{page}#{i}"] = shown_headers(t)
    # Every table of the four pages: users, groups, grants, sessions, audit; persons; consent, policies; sessions.
    for page, n in ((ADMIN, 5), ("views/people.py", 1), ("views/consent.py", 2), ("views/sessions.py", 1)):
        assert sum(k.startswith(f"{page}#") for k in seen) == n, (page, list(seen))
    bad = {k: [h for h in hs if columns.is_code_name(h)] for k, hs in seen.items()}
    assert not any(bad.values()), bad
    # A classroom session's students and a child's personal model versions (the page opened by deep link).
    from storage import person_models

    with session_scope(url) as s:
        person_models.save_model(s, ids.persons["therapy"][0], "personal", b"params", {"n_tags": 4, "n_bins": 300,
                                 "labels": ["calm"], "personal": {"macro_f1": 0.5}}, activate=True, actor="test")  # fmt: skip
    for page, key, table in (("views/session.py", "maths", "person_label"), ("views/review.py", "therapy", "personal_f1")):
        at = AppTest.from_file(APP, default_timeout=30)
        at.session_state[auth.USER_KEY] = ids.users["admin"]
        at.query_params["session"] = str(ids.sessions[key])
        at.run()
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        (t,) = [t for t in at.dataframe if table in t.value.columns]
        headers = shown_headers(t)
        assert headers and not [h for h in headers if columns.is_code_name(h)], (page, headers)
        seen[page] = headers
    assert "Student" in seen["views/session.py"] and "Minutes distracted" in seen["views/session.py"]
    assert {"Version", "Active", "Personal macro-F1"} <= set(seen["views/review.py"])
    consent_headers = seen["views/consent.py#0"]
    assert "Stored per person" in consent_headers and "Person no." in consent_headers
    # The audit table says what happened, in words and local time, not a dict.
    at = admin_page(ids.users["admin"])
    log = next(t.value for t in at.dataframe if "what" in t.value.columns)
    row = log[log["action"] == "consent_grant"].iloc[0]
    assert row["what"].startswith("Recorded analysis consent for ") and "scope 'form'" in row["what"]
    assert "{" not in " ".join(log["what"]) and "detail" not in log.columns
