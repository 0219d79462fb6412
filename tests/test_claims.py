"""``affectline --as`` claims and the audit listing (issue 20, item 4), through the real CLI process.

A claim is one line of printable text that both databases keep whole (the actor columns are
100 characters); anything else is refused in one line, exit 2, before anything is written. And
whatever is already stored (rows from before claims were checked, a user name typed at the login
page), ``audit list`` and ``audit export`` show one row per line, one field per tab or cell.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from affectline.lines import one_line, unescape
from services.actor import ACTOR_MAX, CLAIM_MAX, os_user
from storage import audit
from storage.db import migrate, session_scope
from storage.models import AuditEntry, SessionKind

ROOT = Path(__file__).resolve().parents[1]
FORGED = "x)\n999\t2026-12-06 01:00:00\tos:admin\tdelete_session\tsession:1\tbase"


def cli_env(tmp_path: Path, url: str | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFECTLINE_") or k == "AFFECTLINE_MODEL_DIR"}
    env["AFFECTLINE_DATA_DIR"] = str(tmp_path / "data")
    if url:
        env["AFFECTLINE_DATABASE_URL"] = url
    env.update(extra)
    return env


def affectline(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def n_audit(url: str) -> int:
    with session_scope(url) as s:
        return s.scalar(select(func.count(AuditEntry.id)))


def _session(url: str) -> int:
    from tests.dashboard_factories import add_analysed_session

    with session_scope(url) as s:
        from storage.repo import get_or_create_group

        g = get_or_create_group(s, "Year 5", "classroom").id
    return add_analysed_session(url, g, SessionKind.classroom, "lesson", 1, n_bins=5)[0]


def check_claims(url: str, env: dict, tmp_path: Path) -> None:
    sid = _session(url)
    before = n_audit(url)
    refused = {
        "forged line": FORGED,
        "escape sequence": "\x1b[2K\rDr Lee",
        "bidi override": "Dr \u202eeeL",
        "100 kB": "x" * 100_000,
        "150 characters": "y" * 150,
        "empty": "",
    }
    for what, claim in refused.items():
        r = affectline(env, "--as", claim, "export", str(sid), "-o", str(tmp_path / "e.csv"))
        assert r.returncode == 2, (what, r.returncode, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: --as claim"), (what, r.stderr)
        assert "Traceback" not in r.stderr and r.stdout == ""
        assert "\t" not in r.stderr and "\x1b" not in r.stderr and "\u202e" not in r.stderr, what
    assert n_audit(url) == before, "a refused claim wrote an audit row"
    assert not (tmp_path / "e.csv").exists()

    # The longest claim accepted is kept whole, and with the OS user fits the actor column.
    longest = "Dr " + "é" * (CLAIM_MAX - 3)
    r = affectline(env, "--as", longest, "export", str(sid), "-o", str(tmp_path / "e.csv"))
    assert r.returncode == 0, r.stderr
    with session_scope(url) as s:
        last = s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
        assert (last.action, last.actor) == ("export", f"os:{os_user()} (as {longest})")
        assert len(last.actor) <= ACTOR_MAX
    # Spaces collapse as in every other name.
    assert affectline(env, "--as", "  Ms   Head ", "audit", "list").returncode == 0


def check_listing(url: str, env: dict, tmp_path: Path) -> None:
    """Rows as they may already be stored (written before claims were checked, or typed at the login page)."""
    with session_scope(url) as s:
        audit.write(s, f"os:tina (as {FORGED})", "export", "session:1", rows=1)
        audit.write(s, "a\\nb", "login_failed", "login:eve\r\n1\tx", target_label="\x1b[31mred\u2028", client="1.2.3.4")
    with session_scope(url) as s:
        n = s.scalar(select(func.count(AuditEntry.id)))
        stored = {e.id: e for e in s.scalars(select(AuditEntry))}
        s.expunge_all()
    r = affectline(env, "audit", "list", "--limit", "1000")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == n, r.stdout  # one line per row: the forged newline did not add one
    for line in lines:
        f = line.split("\t")
        assert len(f) == 6, line  # id, time, actor, action, target, label: no extra field from a stored tab
        e = stored[int(f[0])]
        assert [unescape(x) for x in f[2:5]] == [e.actor, e.action, e.target]  # escaped, not lost
        assert not any(ch in line for ch in "\r\x1b\u2028")
    assert not any(ln.startswith("999\t") for ln in lines)
    assert f"os:tina (as {one_line(FORGED)})" in r.stdout and "\ta\\\\nb\t" in r.stdout

    out = tmp_path / "audit.csv"
    r = affectline(env, "audit", "export", "-o", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text(encoding="utf-8")
    assert text.count("\n") == n + 1 and "\r" not in text  # a header and one physical line per row
    rows = list(csv.DictReader(io.StringIO(text)))
    by_id = {int(row["id"]): row for row in rows}
    forged = next(e for e in stored.values() if FORGED in e.actor)
    assert unescape(by_id[forged.id]["actor"]) == forged.actor
    typed = next(e for e in stored.values() if e.action == "login_failed")
    assert unescape(by_id[typed.id]["target_label"]) == typed.target_label


def test_claims_and_listing_on_sqlite(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'data' / 'affectline.db'}"
    (tmp_path / "data").mkdir()
    migrate(url)
    env = cli_env(tmp_path)
    check_claims(url, env, tmp_path)
    check_listing(url, env, tmp_path)


@pytest.mark.services
def test_claims_and_listing_on_postgres(tmp_path: Path):
    """PostgreSQL refused a 150-character actor with StringDataRightTruncation (a traceback); now the
    claim is refused before, and the longest accepted one is stored whole."""
    from tests.services import postgres_server

    with postgres_server() as url:
        migrate(url)
        env = cli_env(tmp_path, url)
        check_claims(url, env, tmp_path)
        check_listing(url, env, tmp_path)


def test_a_forged_login_name_in_the_environment_is_not_the_os_user(tmp_path: Path):
    """getpass reads $LOGNAME/$USER first: a value that is not one line of text falls back to the passwd name."""
    import pwd

    url = f"sqlite:///{tmp_path / 'data' / 'affectline.db'}"
    (tmp_path / "data").mkdir()
    migrate(url)
    env = cli_env(tmp_path, LOGNAME=FORGED, USER=FORGED)
    out = tmp_path / "a.csv"
    assert affectline(env, "--as", "auditor", "audit", "export", "-o", str(out)).returncode == 0
    with session_scope(url) as s:
        actor = s.scalars(select(AuditEntry.actor).order_by(AuditEntry.id.desc())).first()
    assert actor == f"os:{pwd.getpwuid(os.getuid()).pw_name} (as auditor)"
