"""The audit trail cannot lie: append-only (triggers), ids never reused, names kept beside ids,
and rows that outlive what they name. On SQLite and on a throw-away PostgreSQL."""

from __future__ import annotations

import io
from contextlib import contextmanager

import pandas as pd
import pytest
from sqlalchemy import String, delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from storage import audit, people, repo
from storage.db import get_engine, migrate, session_scope
from storage.models import AuditEntry, Job, JobStatus, Person, Recording, SessionKind
from tests.dashboard_factories import add_analysed_session


@contextmanager
def _sqlite(settings):
    url = settings.resolved_database_url
    migrate(url)
    yield url


@contextmanager
def _postgres(settings):
    from tests.services import postgres_server

    with postgres_server() as url:
        migrate(url)
        yield url
        get_engine(url).dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def url(request, settings):
    with (_sqlite if request.param == "sqlite" else _postgres)(settings) as u:
        yield u


def _one_row(url: str) -> int:
    with session_scope(url) as s:
        e = audit.write(s, "os:tina", "export", "session:1", format="csv")
        s.flush()
        return e.id


def test_update_and_delete_of_audit_rows_are_refused_by_the_database(url):
    eid = _one_row(url)
    for stmt in (update(AuditEntry).where(AuditEntry.id == eid).values(actor="someone else"),
                 delete(AuditEntry).where(AuditEntry.id == eid), delete(AuditEntry)):  # fmt: skip
        with pytest.raises(DBAPIError, match="append-only"):
            with session_scope(url) as s:
                s.execute(stmt)
    # Through the ORM too: changing a loaded entry fails at flush.
    with pytest.raises(DBAPIError, match="append-only"):
        with session_scope(url) as s:
            s.get(AuditEntry, eid).actor = "someone else"
    # Raw SQL on its own connection, as a tool would.
    with pytest.raises(DBAPIError, match="append-only"):
        with get_engine(url).begin() as c:
            c.execute(text("UPDATE audit_log SET target = 'session:2'"))
    if get_engine(url).dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="append-only"):
            with get_engine(url).begin() as c:
                c.execute(text("TRUNCATE audit_log"))
    with session_scope(url) as s:
        (e,) = s.scalars(select(AuditEntry)).all()
        assert (e.id, e.actor, e.target, e.detail) == (eid, "os:tina", "session:1", {"format": "csv"})
    # Inserting stays possible: the log grows.
    assert _one_row(url) == eid + 1


def test_ids_are_never_handed_out_again_after_deletion(url):
    with session_scope(url) as s:
        gid = repo.get_or_create_group(s, "Room 5", SessionKind.classroom).id
    sid, pids = add_analysed_session(url, gid, SessionKind.classroom, "maths", 2, seed=1, labels=("Ada",))
    with session_scope(url) as s:
        jid = repo.create_job(s, "analyze", session_id=sid).id
        repo.update_job(s, jid, status=JobStatus.done)
        pid = pids[-1]  # the newest person: the id SQLite without AUTOINCREMENT would hand out again
        people.delete_person(s, pid, "os:tina")
    with session_scope(url) as s:
        repo.delete_session(s, sid, "os:tina")  # newest session, job cascade with it
    with session_scope(url) as s:
        assert s.get(Recording, sid) is None and s.get(Job, jid) is None and s.get(Person, pid) is None
        # Deleting what they name left the audit rows in place, with the names they had.
        rows = {e.action: e for e in s.scalars(select(AuditEntry))}
        assert rows["delete_session"].target == f"session:{sid}" and rows["delete_session"].target_label == "maths"
        assert rows["delete_person"].target == f"person:{pid}"
    sid2, pids2 = add_analysed_session(url, gid, SessionKind.classroom, "history", 2, seed=2)
    with session_scope(url) as s:
        jid2 = repo.create_job(s, "analyze", session_id=sid2).id
    assert sid2 > sid and min(pids2) > max(pids) and jid2 > jid


def test_every_row_keeps_the_target_name_it_had_but_never_a_persons(url):
    with session_scope(url) as s:
        gid = repo.get_or_create_group(s, "Room 5", SessionKind.classroom).id
    sid, pids = add_analysed_session(url, gid, SessionKind.classroom, "maths", 2, seed=1, labels=("Ada", "Ben"))
    with session_scope(url) as s:
        people.rename(s, pids[0], "Ada Lovelace", "os:tina")
        s.add(AuditEntry(actor="os:tina", action="note", target=f"group:{gid}", detail={}))  # a bare entry too
        repo.audit(s, "os:tina", "export", f"session:{sid}", rows=3)
    with session_scope(url) as s:
        s.get(Recording, sid).title = "maths, renamed"
        s.get(Person, pids[1]).label = "Benjamin"
        people.delete_person(s, pids[1], "os:tina")
    with session_scope(url) as s:
        stored = {e.action: e.target_label for e in s.scalars(select(AuditEntry))}
        # Sessions, groups: the name then. Persons: no name in the append-only table at all, so
        # deleting a child (or withdrawing consent) leaves no copy of their name behind.
        assert stored == {"rename_person": "", "note": "Room 5", "export": "maths", "delete_person": ""}
        assert not s.scalar(select(func.count(AuditEntry.id)).where(AuditEntry.detail.cast(String).contains("Ben")))
        shown = {a: list(g["target_label"]) for a, g in audit.frame(s).groupby("action")}
        assert shown["rename_person"] == ["Ada Lovelace"] and shown["delete_person"] == ["(deleted)"]  # names now
        assert shown["export"] == ["maths"]
        # A filter by name finds rows by the name then or the name now.
        assert set(audit.frame(s, audit.Filter(target="lovelace"))["action"]) == {"rename_person"}
        assert set(audit.frame(s, audit.Filter(target="renamed"))["action"]) == {"export"}


def test_audit_export_is_csv_safe(url):
    with session_scope(url) as s:
        audit.write(s, "=cmd|' /C calc'!A0", "login_failed", "login:@SUM(1+1)", client="127.0.0.1")
    from affectline.csvsafe import frame_to_csv

    with session_scope(url) as s:
        data = frame_to_csv(audit.export_rows(audit.frame(s)))
    assert "\n" + "1," in data and ",\"'=cmd|' /C calc'!A0\"," in data and "\"'@SUM(1+1)\"" in data
    df = pd.read_csv(io.StringIO(data))
    assert df.loc[0, "actor"] == "'=cmd|' /C calc'!A0" and df.loc[0, "id"] == 1


def test_sqlite_migration_keeps_every_child_row_and_turns_foreign_keys_back_on(settings):
    """0003 rebuilds parent tables (AUTOINCREMENT); with foreign keys on that would cascade away children."""
    from alembic import command

    from storage.db import alembic_config

    url = settings.resolved_database_url
    cfg = alembic_config(url)
    with get_engine(url).begin() as c:
        cfg.attributes["connection"] = c
        command.upgrade(cfg, "0002")
    with get_engine(url).begin() as c:
        c.exec_driver_sql("insert into groups(id,name,kind,created_at) values(1,'g','classroom','2026-01-01')")
        c.exec_driver_sql("insert into sessions(id,group_id,kind,title,video_path,created_at) "
                          "values(1,1,'classroom','t','v','2026-01-01')")  # fmt: skip
        c.exec_driver_sql("insert into persons(id,group_id,label,enrolled,origin_session_id,created_at) "
                          "values(1,1,'p',0,1,'2026-01-01')")  # fmt: skip
        c.exec_driver_sql("insert into tracks(session_id,track_key,person_id,t_start,t_end,n_samples,times,face_boxes,"
                          "context_boxes) values(1,1,1,0,1,1,x'',x'',x'')")  # fmt: skip
    migrate(url)
    with get_engine(url).begin() as c:
        assert c.exec_driver_sql("select count(*) from tracks").scalar() == 1
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        made = {r[0] for r in c.exec_driver_sql("select name from sqlite_master where sql like '%AUTOINCREMENT%'")}
        assert {"sessions", "persons", "jobs", "groups", "users", "audit_log", "tags"} <= made
        c.exec_driver_sql("delete from sessions where id = 1")
        assert c.exec_driver_sql("select count(*) from tracks").scalar() == 0  # cascades work again
    with session_scope(url) as s:
        assert s.scalar(select(func.count(AuditEntry.id))) == 0


def test_cli_audit_list_and_export_are_formula_safe_and_audited(settings, tmp_path):
    from click.testing import CliRunner

    from affectline.settings import get_settings
    from cli.main import main
    from services.actor import os_user

    url = settings.resolved_database_url
    migrate(url)
    with session_scope(url) as s:
        audit.write(s, "+tina", "login_failed", "login:=HYPERLINK(\"http://x\",\"y\")", client="10.0.0.7")
        audit.write(s, "os:tina", "export", "session:1", rows=3)
    get_settings.cache_clear()
    run = CliRunner().invoke
    r = run(main, ["audit", "list", "--action", "login"])
    assert r.exit_code == 0 and r.output.count("\n") == 1 and "\tlogin_failed\t" in r.output
    out = tmp_path / "audit.csv"
    r = run(main, ["--as", "auditor", "audit", "export", "-o", str(out), "--since", "2000-01-01"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out)
    assert list(df["actor"]) == ["os:tina", "'+tina"] and df.loc[1, "target"] == 'login:=HYPERLINK("http://x","y")'
    assert df.loc[1, "target_label"] == "'=HYPERLINK(\"http://x\",\"y\")" and df["id"].tolist() == [2, 1]
    with session_scope(url) as s:
        last = s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
        assert (last.action, last.actor, last.detail["rows"], last.detail["filter"]["since"]) == (
            "export_audit", f"os:{os_user()} (as auditor)", 2, "2000-01-01")
