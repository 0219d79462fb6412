"""Consent by CSV (services.consent_csv, `affectline consent import/export`): a round trip gives the
register back, a bad file is refused row by row with nothing stored, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, func, select, text

from services import consent_csv, privacy
from services.actor import Actor, operator
from storage import consent, people, repo
from storage.db import get_engine, migrate, session_scope
from storage.models import AuditEntry, Consent, Role, SessionKind, TimeBin
from tests.dashboard_factories import add_analysed_session

OP = operator()
NEXT_YEAR = (date.today() + timedelta(days=365)).isoformat()


@pytest.fixture(scope="module")
def pg_server():
    from tests.services import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def url(request, settings):
    if request.param == "sqlite":
        u = settings.resolved_database_url
        migrate(u)
        yield u
        return
    server = request.getfixturevalue("pg_server")
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    u = server.rsplit("/", 1)[0] + "/" + name
    migrate(u)
    yield u
    get_engine(u).dispose()


@pytest.fixture()
def roster(url):
    """Class E: Ada, Ben, Cleo enrolled, one analysed session; Class F: another Ada."""
    with session_scope(url) as s:
        g = repo.get_or_create_group(s, "Class E", SessionKind.classroom).id
        f = repo.get_or_create_group(s, "Class F", SessionKind.classroom).id
    sid, pids = add_analysed_session(url, g, SessionKind.classroom, "lesson", 3, n_bins=10)
    _, (other,) = add_analysed_session(url, f, SessionKind.classroom, "lesson f", 1, n_bins=10)
    with session_scope(url) as s:
        ids = [people.rename(s, p, n, "t").id for p, n in zip(pids, ("Ada", "Ben", "Cleo"))]
        people.rename(s, other, "Ada", "t")
    return dict(group=g, session=sid, ada=ids[0], ben=ids[1], cleo=ids[2], other_ada=other)


def register(url) -> dict:
    with session_scope(url) as s:
        return {(r.person_id): (r.analysis, r.thumbnails, r.scope, r.expires_at) for r in consent.register(s)}


def audits(url, action: str) -> list[AuditEntry]:
    with session_scope(url) as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))
        s.expunge_all()
        return rows


def test_round_trip_gives_the_register_back(url, roster):
    ada, ben, cleo = roster["ada"], roster["ben"], roster["cleo"]
    csv = (f"person_id,person,group,purpose,answer,scope,expires\n"
           f"{ada},Ada,Class E,analysis,yes,\"form 12, signed by mother\",{NEXT_YEAR}\n"
           f"{ada},Ada,Class E,thumbnails,yes,,\n"
           f",Ben,Class E,,no,,\n"  # by group and name; purpose defaults to analysis
           f"{cleo},,,analysis,,,\n")  # fmt: skip  # no answer: left alone
    res = consent_csv.import_csv(url, OP, csv.encode(), "forms.csv")
    assert (res.rows, res.granted, res.refused, res.unchanged, res.blank) == (4, 2, 1, 0, 1)
    assert res.deleted["time_bins"] == 10  # Ben's refusal deleted his stored timeline
    want = register(url)
    assert want[ada][:3] == ("valid", "valid", "form 12, signed by mother") and want[ada][3].date().isoformat() == NEXT_YEAR
    assert want[ben][0] == "refused" and want[cleo][0] == "none"
    (row,) = audits(url, "consent_import")
    assert (row.detail["granted"], row.detail["refused"], row.detail["rows"]) == (2, 1, 4)

    data, n = consent_csv.export_csv(url, OP)
    assert n == 6 and len(audits(url, "consent_export")) == 1  # Ada and Ben twice (his "no" covers thumbnails), Cleo, the other Ada
    # Change the register, then import the export: it is as it was (and nothing is counted twice).
    privacy.withdraw_consent(url, OP, ada, "thumbnails")
    privacy.grant_consent(url, OP, cleo, "analysis", "phone call")
    with session_scope(url) as s:
        s.execute(Consent.__table__.delete().where(Consent.person_id == cleo))  # as if never answered
    privacy.grant_consent(url, OP, ada, "analysis", "other text")
    back = consent_csv.import_csv(url, OP, data, "export.csv")
    assert register(url) == want
    assert (back.granted, back.refused, back.unchanged) == (2, 0, 2)  # Ada's two answers again; Ben's two "no"s stand
    again = consent_csv.import_csv(url, OP, data, "export.csv")
    assert (again.granted, again.refused, again.unchanged) == (0, 0, 4)


def test_a_bad_file_is_refused_row_by_row_and_stores_nothing(url, roster):
    ada, ben = roster["ada"], roster["ben"]
    privacy.grant_consent(url, OP, ben, "analysis", "form 3")
    before = register(url)
    with session_scope(url) as s:
        bins = s.scalar(select(func.count(TimeBin.id)))
    csv = ("person_id,person,group,purpose,answer,scope,expires\n"
           f"{ada},Ada,Class E,analysis,yes,ok,{NEXT_YEAR}\n"  # row 2: fine, yet not stored
           f"{ben},Ben,Class E,analysis,no,,\n"  # row 3: fine, yet nothing deleted
           "9999,,,analysis,yes,,\n"  # row 4
           f"{ada},Ben,,thumbnails,yes,,\n"  # row 5: the name does not match the number
           f"{ben},,,video,yes,,\n"  # row 6
           f"{roster['cleo']},,,analysis,maybe,,\n"  # row 7
           f"{ben},,,thumbnails,yes,,31/12/2030\n"  # row 8
           f"{ben},,,thumbnails,yes,,2001-01-01\n"  # row 9: duplicate and in the past
           ",Ada,,analysis,yes,,\n"  # row 10: no group to find her by
           ",Zed,Class E,analysis,yes,,\n"  # row 11
           "x1,,,analysis,yes,,\n")  # fmt: skip  # row 12
    with pytest.raises(consent_csv.ConsentFileError) as e:
        consent_csv.import_csv(url, OP, csv.encode(), "bad.csv")
    lines = str(e.value).splitlines()
    got = {(p.row, p.column) for p in e.value.problems}
    assert got == {(4, "person_id"), (5, "person"), (6, "purpose"), (7, "answer"), (8, "expires"), (9, "person_id"),
                   (9, "expires"), (10, "person_id"), (11, "person"), (12, "person_id")}, lines  # fmt: skip
    assert all(line.startswith("bad.csv: row ") for line in lines) and len(lines) == len(got)
    assert "unknown person 9999" in str(e.value) and "'maybe' is not yes, no or empty" in str(e.value)
    assert "not a date (YYYY-MM-DD)" in str(e.value) and "unknown person 'Zed' in group 'Class E'" in str(e.value)
    assert register(url) == before
    with session_scope(url) as s:
        assert s.scalar(select(func.count(TimeBin.id))) == bins
    assert not audits(url, "consent_import") and audits(url, "consent_import_refused")[0].detail["problems"] == len(got)


def test_storage_rules_refuse_the_whole_file(url, roster):
    """A thumbnails "yes" without analysis consent: storage refuses it, and the rows applied before it roll back."""
    ada, ben = roster["ada"], roster["ben"]
    csv = f"person_id,answer,purpose\n{ada},yes,analysis\n{ben},yes,thumbnails\n{roster['cleo']},no,analysis\n"
    with pytest.raises(consent_csv.ConsentFileError) as e:
        consent_csv.import_csv(url, OP, csv, "t.csv")
    assert [(p.row, p.column) for p in e.value.problems] == [(3, "answer")] and "thumbnails consent" in str(e.value)
    assert {v[0] for v in register(url).values()} == {"none"}
    with session_scope(url) as s:
        assert s.scalar(select(func.count(TimeBin.id)).where(TimeBin.person_id == roster["cleo"])) == 10


def test_header_problems_and_names(url, roster):
    for raw, want in [(b"", "empty"), (b"person_id;answer\n1;yes\n", "';'"), (b"person_id,answr\n", "answr"),
                      (b"\xff\xfeperson_id", "not UTF-8"), (b"answer,person\n", "person_id")]:  # fmt: skip
        with pytest.raises(consent_csv.ConsentFileError, match=want):
            consent_csv.import_csv(url, OP, raw, "h.csv")
    # By group and name (any case): two Adas, one per group; a spreadsheet's BOM and blank trailing lines are fine.
    res = consent_csv.import_csv(url, OP, "\ufeffgroup,person,answer\nclass f,ADA,yes\n,,\n".encode(), "h.csv")
    assert res.granted == 1 and register(url)[roster["other_ada"]][0] == "valid" and register(url)[roster["ada"]][0] == "none"


def test_export_is_formula_safe_and_reads_back(url, roster):
    with session_scope(url) as s:
        people.rename(s, roster["ada"], "=HYPERLINK(\"http://x\",\"y\")", "t")
    privacy.grant_consent(url, OP, roster["ada"], "analysis", "+form -2")
    data, _ = consent_csv.export_csv(url, OP, "Class E")
    text_ = data.decode()
    assert "\"'=HYPERLINK(" in text_ and "\"'+form -2\"" in text_
    res = consent_csv.import_csv(url, OP, data, "again.csv")  # the neutralised name and scope are read back as stored
    assert (res.granted, res.unchanged) == (0, 1)


def test_teachers_may_not_and_hidden_groups_are_unknown(url, roster):
    teacher = Actor(99, "tina", Role.teacher, (roster["group"],))
    with pytest.raises(PermissionError):
        consent_csv.import_csv(url, teacher, "person_id,answer\n", "t.csv")
    admin_of_e = Actor(98, "ed", Role.admin, (roster["group"],))
    with pytest.raises(consent_csv.ConsentFileError, match=f"unknown person {roster['other_ada']}"):
        consent_csv.import_csv(url, admin_of_e, f"person_id,answer\n{roster['other_ada']},yes\n", "t.csv")


def test_cli_import_and_export(url, roster, tmp_path, monkeypatch):
    from cli.main import main

    monkeypatch.setenv("AFFECTLINE_DATABASE_URL", url)
    from affectline.settings import get_settings

    get_settings.cache_clear()
    bad = tmp_path / "bad.csv"
    bad.write_text(f"person_id,answer\n{roster['ada']},yes\n777,yes\n{roster['ben']},perhaps\n")
    r = CliRunner().invoke(main, ["consent", "import", str(bad)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert f"{bad}: row 3, column person_id: unknown person 777" in r.output
    assert f"{bad}: row 4, column answer: 'perhaps' is not yes, no or empty" in r.output
    assert "2 problem(s); nothing was stored" in r.output and register(url)[roster["ada"]][0] == "none"
    good = tmp_path / "good.csv"
    good.write_text(f"person_id,answer,expires\n{roster['ada']},yes,{NEXT_YEAR}\n")
    r = CliRunner().invoke(main, ["consent", "import", "--dry-run", str(good)])
    assert r.exit_code == 0 and "1 consent(s) to record" in r.output and register(url)[roster["ada"]][0] == "none"
    r = CliRunner().invoke(main, ["consent", "import", str(good)])
    assert r.exit_code == 0 and "1 consent(s) recorded" in r.output and register(url)[roster["ada"]][0] == "valid"
    out = tmp_path / "out" / "register.csv"
    r = CliRunner().invoke(main, ["consent", "export", "-o", str(out), "--group", "Class E"])
    assert r.exit_code == 0, r.output
    assert out.read_text().splitlines()[0] == ",".join([*consent_csv.COLUMNS, *consent_csv.INFO_COLUMNS])
    assert f"{roster['ada']},\"Ada\",\"Class E\",\"analysis\",\"yes\"" in out.read_text()
    get_settings.cache_clear()


def test_consent_page_exports_checks_and_imports(settings):
    """The Consent page: export, a bad upload listed row by row (nothing stored), a good one imported."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from dashboard import auth, data
    from dashboard.safe import shown
    from storage import access

    u = settings.resolved_database_url
    migrate(u)
    with session_scope(u) as s:
        g = repo.get_or_create_group(s, "Class E", SessionKind.classroom).id
        root = access.create_user(s, "root", Role.admin, "correct horse battery staple").id
    _, pids = add_analysed_session(u, g, SessionKind.classroom, "lesson", 2, n_bins=5)
    with session_scope(u) as s:
        ada, ben = (people.rename(s, p, n, "t").id for p, n in zip(pids, ("Ada", "Ben")))
    data.invalidate()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=60)
    at.session_state[auth.USER_KEY] = root
    at.run()
    at.switch_page("views/consent.py").run()
    at.button(key="consent_export").click().run()
    assert not at.exception, [e.value for e in at.exception]
    got, n = at.session_state["consent_csv"]
    assert n == 2 and got.decode().startswith("person_id,person,group,purpose,answer")
    assert len(audits(u, "consent_export")) == 1

    at.file_uploader(key="consent_upload").set_value(("forms.csv", f"person_id,answer\n{ada},yes\n{ben},perhaps\n".encode(), "text/csv")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("1 problem(s); nothing will be stored" in shown(e.value) for e in at.error)
    assert "row 3, column answer: 'perhaps' is not yes, no or empty" in at.code[0].value
    assert not any(b.key == "consent_import" for b in at.button) and register(u)[ada][0] == "none"

    at.file_uploader(key="consent_upload").set_value(("forms.csv", f"person_id,answer\n{ada},yes\n{ben},no\n".encode(), "text/csv")).run()
    assert any("1 consent(s) to record, 1 refusal(s) to record" in shown(i.value) for i in at.info)
    assert register(u)[ada][0] == "none"  # checked, not stored
    at.button(key="consent_import").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("forms.csv imported: 2 row(s): 1 consent(s) recorded, 1 refusal(s) recorded" in shown(s.value) for s in at.success)
    assert register(u)[ada][0] == "valid" and register(u)[ben][0] == "refused"
    (row,) = audits(u, "consent_import")
    assert row.actor == "root" and row.detail["file"] == "forms.csv"
