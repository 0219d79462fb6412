"""Logins that resist guessing (throttle, lockout per account and per address, audited), argon2id
with the PBKDF2 upgrade path, disabled users, login sessions that expire, the first admin only
from the CLI, and CLI user commands audited with the OS user and the --as claim."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from streamlit.testing.v1 import AppTest

from services.actor import actor_for_user, os_user
from storage import access, logins, repo
from storage.db import session_scope
from storage.models import AuditEntry, LoginSession, Role, SessionKind, User

ROOT = Path(__file__).resolve().parents[1]
PW = "chalk and talk"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
POLICY = logins.Policy()  # 5 per account, 20 per address, waits from the 3rd failure, 15 min lockout


@pytest.fixture()
def teacher(db_url) -> int:
    with session_scope(db_url) as s:
        return access.create_user(s, "ms_k", Role.teacher, PW).id


def _try(url, name, pw, at, client="10.0.0.7"):
    with session_scope(url) as s:
        return logins.attempt(s, name, pw, client, policy=POLICY, now=at)


def _audits(url, action=None):
    with session_scope(url) as s:
        q = select(AuditEntry).order_by(AuditEntry.id)
        return list(s.scalars(q.where(AuditEntry.action == action) if action else q))


def test_repeated_failures_are_throttled_then_locked_even_for_the_right_password(db_url, teacher):
    t = T0
    for _ in range(2):
        assert _try(db_url, "ms_k", "guess", t).outcome == "wrong"
    r = _try(db_url, "ms_k", "guess", t)  # 3rd: from now on each failure makes the next try wait
    assert r.outcome == "wrong"
    r = _try(db_url, "ms_k", PW, t + timedelta(seconds=0.5))
    assert (r.outcome, r.user_id) == ("wait", None) and 0 < r.retry_after_s <= 1 and "wait 1 s" in r.message
    assert _try(db_url, "ms_k", "guess", t + timedelta(seconds=1.1)).outcome == "wrong"  # 4th: waits 2 s
    assert _try(db_url, "ms_k", "guess", t + timedelta(seconds=2)).outcome == "wait"
    assert _try(db_url, " ms_k", "guess", t + timedelta(seconds=3.2)).outcome == "wrong"  # 5th (same account): locked
    r = _try(db_url, "ms_k", PW, t + timedelta(minutes=10))
    assert r.outcome == "locked" and "locked for 5 min" in r.message and r.token is None
    # From another address too: the lock is on the account.
    assert _try(db_url, "ms_k", PW, t + timedelta(minutes=10), client="10.9.9.9").outcome == "locked"
    r = _try(db_url, "ms_k", PW, t + timedelta(minutes=19))
    assert r.outcome == "ok" and r.user_id == teacher and r.token
    # A success clears the account's count: one mistake later is just a mistake.
    assert _try(db_url, "ms_k", "typo", t + timedelta(minutes=20)).outcome == "wrong"
    assert _try(db_url, "ms_k", PW, t + timedelta(minutes=20)).outcome == "ok"

    failed, refused = _audits(db_url, "login_failed"), _audits(db_url, "login_refused")
    assert [e.detail["account_failures"] for e in failed] == [1, 2, 3, 4, 5, 1]
    assert [e.detail["locked"] for e in failed] == [False] * 4 + [True, False]
    assert [e.detail["reason"] for e in refused] == ["wait", "wait", "locked", "locked"]
    assert {e.target for e in failed + refused} == {f"user:{teacher}"} and {e.target_label for e in failed} == {"ms_k"}
    assert failed[0].actor == "ms_k from 10.0.0.7" and failed[0].detail["client"] == "10.0.0.7"
    assert [e.actor for e in _audits(db_url, "login")] == ["ms_k", "ms_k"]


def test_one_address_guessing_many_names_is_slowed_then_blocked_without_locking_out_other_accounts(db_url, teacher):
    """Issue 20: 20 failures with random names from one address used to lock every account there, the
    admin's included. Now the address is slowed to one checked try a second and a name that failed there
    3 times is refused there; an account that has not failed from it still logs in."""
    t = T0
    for i in range(POLICY.client_max_failures):  # a new name each time: no account reaches its limit
        assert _try(db_url, f"user{i}", "guess", t + timedelta(seconds=i)).outcome == "wrong"
    last = _audits(db_url, "login_failed")[-1]
    assert last.detail["client_failures"] == 20 and last.detail["locked"] is True  # the address is locked
    t = t + timedelta(seconds=20)
    assert _try(db_url, "ms_k", PW, t).outcome == "ok"  # ... but not for an account that has not failed there
    r = _try(db_url, "user99", "guess", t + timedelta(seconds=0.5))
    assert r.outcome == "wait" and 0 < r.retry_after_s <= 0.5  # one checked try per second from a locked address
    outcomes = [_try(db_url, "user99", "guess", t + timedelta(seconds=2 * k + 1)).outcome for k in range(4)]
    assert outcomes == ["wrong", "wrong", "wrong", "locked"]  # 3 failures of one name there: refused there
    assert _try(db_url, "user99", "guess", t + timedelta(seconds=9), client="10.0.0.8").outcome == "wrong"
    # A teacher behind the same address who mistypes twice still gets in.
    assert [_try(db_url, "ms_k", p, t + timedelta(seconds=11 + 2 * k)).outcome for k, p in
            enumerate(("typo", "typo again", PW))] == ["wrong", "wrong", "ok"]  # fmt: skip
    # Once the lock is over the address is checked as any other.
    assert _try(db_url, "user99", "guess", t + timedelta(minutes=16)).outcome == "wrong"
    # Unknown names are counted and answered like known ones, and audited under the name tried.
    (first,) = [e for e in _audits(db_url, "login_failed") if e.target == "login:user0"]
    assert first.detail["client_failures"] == 1 and first.target_label == "user0"
    assert {e.detail["client"] for e in _audits(db_url)} == {"10.0.0.7", "10.0.0.8"}


def test_unlock_clears_the_account_lock_and_every_address_lock_that_refuses_it(db_url, teacher):
    t = T0
    for i in range(POLICY.client_max_failures):
        _try(db_url, f"user{i}", "guess", t + timedelta(seconds=i))
    t += timedelta(seconds=20)
    for k in range(3):  # the teacher's 3 failures from the locked address: refused there, and the account waits
        assert _try(db_url, "ms_k", "guess", t + timedelta(seconds=5 * k)).outcome == "wrong"
    for k in range(2):  # and 2 from elsewhere: 5, the account is locked
        assert _try(db_url, "MS_K", "guess", t + timedelta(seconds=20 + 10 * k), client="10.0.0.9").outcome == "wrong"
    now = t + timedelta(minutes=1)
    assert _try(db_url, "ms_k", PW, now, client="10.0.0.8").outcome == "locked"
    with session_scope(db_url) as s:
        done = logins.unlock(s, "ms_k", policy=POLICY, now=now)
    assert done == logins.Unlocked(account_failures=5, account_locked=True, addresses=("10.0.0.7", "10.0.0.9"),
                                   refused_at=("10.0.0.7",))  # fmt: skip
    assert done.sentence("ms_k") == ("ms_k unlocked: cleared the account's 5 failed login(s) and its lock; its failures "
                                     "from 2 address(es) (10.0.0.7, 10.0.0.9); so the locked address(es) 10.0.0.7 no "
                                     "longer refuse it")  # fmt: skip
    assert _try(db_url, "ms_k", PW, now + timedelta(seconds=1)).outcome == "ok"  # from the locked address too
    assert _try(db_url, "user0", "guess", now + timedelta(seconds=3)).outcome == "wrong"  # the address's count stays
    with session_scope(db_url) as s:
        assert logins.unlock(s, "ms_k", policy=POLICY, now=now).sentence("ms_k") == \
            "ms_k: nothing to clear (no failed logins, no lock)"  # fmt: skip


def test_client_address_is_the_peer_unless_a_trusted_proxy_forwarded_it():
    from affectline.netaddr import client_address, parse_proxies

    none = parse_proxies("")
    assert client_address("10.0.0.7", ["203.0.113.9"], none) == "10.0.0.7"  # nobody trusted: the header is ignored
    proxies = parse_proxies(" 127.0.0.1, 10.1.0.0/16 ,::1")
    assert client_address("203.0.113.50", ["1.2.3.4"], proxies) == "203.0.113.50"  # the peer is no proxy
    assert client_address("127.0.0.1", ["1.2.3.4, 203.0.113.7"], proxies) == "203.0.113.7"  # right-most untrusted
    assert client_address("127.0.0.1", ["1.2.3.4", "203.0.113.7, 10.1.2.3"], proxies) == "203.0.113.7"  # proxy chain
    assert client_address("127.0.0.1", ["10.1.0.5, 10.1.2.3"], proxies) == "10.1.0.5"  # all proxies: the first
    assert client_address("127.0.0.1", ["1.2.3.4, not-an-ip"], proxies) == "127.0.0.1"  # garbage: the last trusted hop
    assert client_address("127.0.0.1", ["[2001:db8::1]:5555"], proxies) == "2001:db8::1"
    assert client_address("127.0.0.1", ["198.51.100.2:443"], proxies) == "198.51.100.2"
    assert client_address("::ffff:127.0.0.1", ["198.51.100.2"], proxies) == "198.51.100.2"  # v4-mapped peer
    assert client_address("127.0.0.1", [], proxies) == "127.0.0.1"
    with pytest.raises(ValueError, match="AFFECTLINE_TRUSTED_PROXIES: 'ten.0.0.1' is not an IP address"):
        parse_proxies("10.0.0.1, ten.0.0.1")


def test_trusted_proxies_setting_is_checked_at_start(monkeypatch):
    from pydantic import ValidationError

    from affectline.settings import Settings

    monkeypatch.setenv("AFFECTLINE_TRUSTED_PROXIES", "10.0.0.0/8,192.168.1.1")
    assert Settings().trusted_proxies == "10.0.0.0/8,192.168.1.1"
    monkeypatch.setenv("AFFECTLINE_TRUSTED_PROXIES", "proxy.local")
    with pytest.raises(ValidationError, match="'proxy.local' is not an IP address"):
        Settings()


def test_legacy_pbkdf2_hash_logs_in_once_and_is_replaced_by_argon2id(db_url, teacher):
    with session_scope(db_url) as s:
        s.get(User, teacher).password_hash = access.legacy_pbkdf2_hash(PW, iterations=1000)
    assert _try(db_url, "ms_k", "wrong one", T0).outcome == "wrong"
    with session_scope(db_url) as s:
        assert s.get(User, teacher).password_hash.startswith("pbkdf2_sha256$")  # a failure changes nothing
    assert _try(db_url, "ms_k", PW, T0).outcome == "ok"
    with session_scope(db_url) as s:
        stored = s.get(User, teacher).password_hash
        assert stored.startswith("$argon2id$") and access.verify_password(stored, PW)
        assert s.get(User, teacher).last_login_at is not None
    assert _try(db_url, "ms_k", PW, T0 + timedelta(seconds=1)).outcome == "ok"


def test_disabled_user_cannot_log_in_and_their_open_logins_end(db_url, teacher):
    r = _try(db_url, "ms_k", PW, T0)
    with session_scope(db_url) as s:
        assert logins.resume(s, r.token, timedelta(minutes=30), now=T0) == teacher
        access.set_disabled(s, teacher, True)
    with session_scope(db_url) as s:
        assert logins.resume(s, r.token, timedelta(minutes=30), now=T0) is None
        assert s.scalar(select(func.count(LoginSession.id))) == 0
        assert actor_for_user(s, teacher) is None  # acts nowhere, not even with an open page
    assert _try(db_url, "ms_k", PW, T0 + timedelta(seconds=1)).outcome == "wrong"
    assert _audits(db_url, "login_failed")[-1].detail["disabled"] is True
    with session_scope(db_url) as s:
        access.set_disabled(s, teacher, False)
    assert _try(db_url, "ms_k", PW, T0 + timedelta(seconds=2)).outcome == "ok"


def test_login_sessions_expire_when_idle_and_close_on_logout(db_url, teacher):
    idle = timedelta(minutes=30)
    with session_scope(db_url) as s:
        token = logins.open_session(s, teacher, "10.0.0.7", now=T0)
        other = logins.open_session(s, teacher, "10.0.0.7", now=T0)
        assert s.scalar(select(LoginSession.token_hash).limit(1)) not in (token, other)  # only a digest is kept
    with session_scope(db_url) as s:
        assert logins.resume(s, token, idle, now=T0 + timedelta(minutes=29)) == teacher  # use renews it
        assert logins.resume(s, token, idle, now=T0 + timedelta(minutes=58)) == teacher
        assert logins.resume(s, other, idle, now=T0 + timedelta(minutes=58)) is None  # idle 58 min: gone
        assert logins.resume(s, "made-up", idle, now=T0) is None
        logins.close(s, token)
    with session_scope(db_url) as s:
        assert logins.resume(s, token, idle, now=T0 + timedelta(minutes=59)) is None
        assert s.scalar(select(func.count(LoginSession.id))) == 0
    with session_scope(db_url) as s:
        access.set_password(s, teacher, "a new long password")  # ends open logins too
        t2 = logins.open_session(s, teacher)
        access.set_password(s, teacher, "another long password")
        assert logins.resume(s, t2, idle) is None


def test_grants_are_only_allowed_where_they_take_effect(db_url):
    with session_scope(db_url) as s:
        t = access.create_user(s, "t", Role.teacher)
        c = access.create_user(s, "c", Role.clinician)
        cls = repo.get_or_create_group(s, "Year 9", SessionKind.classroom)
        kid = repo.get_or_create_group(s, "Child X", SessionKind.therapy)
        access.grant(s, t.id, cls.id)
        access.grant(s, c.id, kid.id)
        with pytest.raises(ValueError, match=r"not granted: a teacher sees only classroom groups, not therapy ones \(Child X to t\)"):
            access.grant(s, t.id, kid.id)
        with pytest.raises(ValueError, match="a clinician sees only therapy groups"):
            access.grant(s, c.id, cls.id)
        assert access.granted_group_ids(s, t.id) == [cls.id] and access.granted_group_ids(s, c.id) == [kid.id]


# --- CLI -------------------------------------------------------------------------------------------


@pytest.fixture()
def cli(settings):
    from affectline.settings import get_settings
    from cli.main import main

    get_settings.cache_clear()
    runner = CliRunner(env={"AFFECTLINE_ACTOR": "tina"})  # the old way to pose as someone: ignored now
    return lambda *args: runner.invoke(main, list(args))


def test_cli_refuses_empty_and_short_passwords_and_creates_nobody(cli, db_url):
    for pw in ("", "short"):
        r = cli("users", "add", "evil", "--role", "admin", "--password", pw)
        assert r.exit_code == 2 and "the password" in r.output and ("empty" in r.output or "at least 12" in r.output)
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count(User.id))) == 0


def test_cli_user_commands_are_audited_with_the_os_user_and_the_claim(cli, db_url):
    me = f"os:{os_user()}"
    assert cli("--as", "Head Teacher", "users", "add", "ms_k", "--role", "teacher", "--password", PW).exit_code == 0
    with session_scope(db_url) as s:
        gid = repo.get_or_create_group(s, "Year 9", SessionKind.classroom).id
        repo.get_or_create_group(s, "Child X", SessionKind.therapy)
    assert cli("users", "grant", "ms_k", "Year 9").exit_code == 0
    r = cli("users", "grant", "ms_k", "Child X")
    assert r.exit_code == 1 and "not granted: a teacher sees only classroom groups" in r.output
    assert cli("users", "disable", "ms_k").exit_code == 0
    assert "ms_k\tteacher\tdisabled\tgroups: Year 9" in cli("users", "list").output
    assert cli("users", "enable", "ms_k").exit_code == 0
    assert cli("users", "passwd", "ms_k", "--password", "a brand new password").exit_code == 0
    r = cli("users", "role", "ms_k", "clinician")
    assert r.exit_code == 0 and "no longer take effect: Year 9" in r.output
    assert cli("users", "revoke", "ms_k", "Year 9").exit_code == 0
    r = cli("users", "unlock", "ms_k")
    assert r.exit_code == 0 and "ms_k: nothing to clear (no failed logins, no lock)" in r.output
    rows = _audits(db_url)
    assert [e.action for e in rows] == ["create_user", "grant", "disable_user", "enable_user", "set_password",
                                        "set_role", "revoke", "unlock_user"]  # fmt: skip
    assert rows[0].actor == f"{me} (as Head Teacher)" and {e.actor for e in rows[1:]} == {me}
    assert {e.target_label for e in rows} == {"ms_k"} and rows[1].detail == {"username": "ms_k", "group_id": gid,
                                                                           "group": "Year 9"}  # fmt: skip
    assert "tina" not in {e.actor for e in rows}


def test_dashboard_address_check_for_single_user_mode(cli, monkeypatch):
    monkeypatch.setenv("AFFECTLINE_DASHBOARD_USER", "demo")
    from affectline.settings import get_settings

    get_settings.cache_clear()
    r = cli("dashboard", "--address", "0.0.0.0")
    assert r.exit_code == 1 and "AFFECTLINE_DASHBOARD_USER logs in without a password, so it is refused" in r.output


# --- dashboard (AppTest) -----------------------------------------------------------------------------


def _app() -> AppTest:
    return AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)


def _texts(at) -> str:
    return "\n".join(str(e.value) for kind in ("info", "error", "warning", "title") for e in getattr(at, kind))


def test_single_user_mode_is_refused_when_listening_beyond_loopback(db_url, monkeypatch):
    from affectline.settings import get_settings

    monkeypatch.setenv("AFFECTLINE_DASHBOARD_USER", "demo")
    get_settings.cache_clear()
    at = _app()
    at.run()  # Streamlit's default address: every interface
    assert "AFFECTLINE_DASHBOARD_USER (log in without a password) is refused" in _texts(at)
    assert not at.text_input and not at.dataframe
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count(User.id))) == 0  # and no admin was made on the way


def test_login_form_opens_a_session_and_idle_time_ends_it(db_url, teacher, monkeypatch):
    from dashboard import auth

    at = _app()
    at.run()
    at.text_input[0].input("ms_k")
    at.text_input[1].input(PW)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[auth.USER_KEY] == teacher and at.session_state[auth.TOKEN_KEY]
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count(LoginSession.id))) == 1
    # 31 minutes later (the default idle limit is 30): the next click finds the login gone.
    at.session_state[auth.SEEN_KEY] = at.session_state[auth.SEEN_KEY] - 31 * 60
    at.run()
    assert auth.USER_KEY not in at.session_state and "ended after 30 minutes without use" in _texts(at)
    assert at.button[0].label == "Log in"
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count(LoginSession.id))) == 0


def test_an_open_dashboard_login_ends_when_the_password_changes(db_url, teacher):
    from dashboard import auth

    at = _app()
    at.run()
    at.text_input[0].input("ms_k")
    at.text_input[1].input(PW)
    at.button[0].click().run()
    assert at.session_state[auth.USER_KEY] == teacher
    with session_scope(db_url) as s:
        access.set_password(s, teacher, "changed by the admin")
    at.run()
    assert auth.USER_KEY not in at.session_state and "password changed or account disabled" in _texts(at)


def test_cli_unlock_says_what_it_cleared_and_the_locked_address_lets_the_user_in(cli, db_url, teacher):
    """Issue 20: `users unlock admin1` said "admin1 unlocked" while the address lock still refused the login."""
    for i in range(POLICY.client_max_failures):
        with session_scope(db_url) as s:
            logins.attempt(s, f"user{i}", "guess", "10.0.0.7", policy=POLICY)
    import time

    for _ in range(3):
        time.sleep(1.05)  # a locked address checks one try a second
        with session_scope(db_url) as s:
            assert logins.attempt(s, "ms_k", "guess", "10.0.0.7", policy=POLICY).outcome == "wrong"
    time.sleep(1.05)
    with session_scope(db_url) as s:
        assert logins.attempt(s, "ms_k", PW, "10.0.0.7", policy=POLICY).outcome in ("wait", "locked")
    r = cli("users", "unlock", "ms_k")
    assert r.exit_code == 0, r.output
    assert "ms_k unlocked: cleared the account's 3 failed login(s); its failures from 1 address(es) " \
           "(10.0.0.7); so the locked address(es) 10.0.0.7 no longer refuse it" in r.output  # fmt: skip
    time.sleep(1.05)
    with session_scope(db_url) as s:
        assert logins.attempt(s, "ms_k", PW, "10.0.0.7", policy=POLICY).outcome == "ok"
    (row,) = _audits(db_url, "unlock_user")
    assert row.detail["refused_at"] == ["10.0.0.7"] and row.detail["account_failures"] == 3 and row.target_label == "ms_k"
