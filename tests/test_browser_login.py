"""Logins in a real browser (headless Debian chromium, `streamlit run` on localhost): guessing a
password locks the account out, a refresh keeps the login, a deep link opened before the login
lands on its page after it, logout ends it."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from storage import access
from storage.db import session_scope
from storage.models import AuditEntry, LoginSession
from tests.dashboard_factories import seed
from tests.browser import dashboard_server, shown_text
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def _chromium() -> None:
    assert CHROMIUM, "Debian chromium is not installed: apt-get install -y chromium (.ci/run does this)"


@pytest.fixture()
def server(db_url, settings):
    ids = seed(db_url)
    with session_scope(db_url) as s:
        access.set_password(s, ids.users["teacher"], "chalk and talk")
        access.set_password(s, ids.users["admin"], "correct horse battery")
    with dashboard_server(settings.data_dir, {"AFFECTLINE_LOGIN_MAX_FAILURES": "3"}) as url:
        yield url, ids


def _log_in(page, name: str, password: str) -> None:
    page.get_by_role("textbox", name="Username").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def _wait_for_audit(url: str, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(url) as s:
            if len(list(s.scalars(select(AuditEntry.id).where(AuditEntry.action.like("login%"))))) >= n:
                return
        time.sleep(0.1)
    raise TimeoutError(f"fewer than {n} login audit rows after {timeout:.0f} s")


def test_guessing_locks_out_refresh_keeps_the_login_and_deep_links_land(server, db_url):
    from playwright.sync_api import expect, sync_playwright

    base, ids = server
    expect.set_options(timeout=30_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # 1. A guesser: three wrong passwords lock the account; then even the right one is refused.
            page = browser.new_context().new_page()
            page.goto(base)
            for i, guess in enumerate(("password1", "chalk", "chalk and cheese"), start=1):
                _log_in(page, "teacher", guess)
                _wait_for_audit(db_url, i)  # this try was answered (the message alone was there already)
                expect(page.get_by_text(shown_text("Unknown username or wrong password."))).to_be_visible()
            _log_in(page, "teacher", "chalk and talk")
            expect(page.get_by_text(shown_text("Too many failed logins: locked for 15 min"))).to_be_visible()
            assert page.get_by_role("heading", name="Sessions").count() == 0
            page.context.close()

            # 2. Another account from the same address still logs in (3 failures is far below the address limit).
            ctx = browser.new_context()
            page = ctx.new_page()
            # A deep link opened before logging in: the login form, then that very page and session.
            page.goto(f"{base}/session?session={ids.sessions['history']}")
            expect(page.get_by_role("button", name="Log in")).to_be_visible()
            _log_in(page, "admin", "correct horse battery")
            expect(page.get_by_role("heading", name="history lesson")).to_be_visible()
            assert "/session" in page.url and f"session={ids.sessions['history']}" in page.url
            expect(page.get_by_text(shown_text("admin · admin"))).to_be_visible()
            assert [c["name"] for c in ctx.cookies() if c["name"] == "affectline_login"] == ["affectline_login"]

            # 3. A refresh keeps the login (the cookie's token, checked against the database).
            page.reload()
            expect(page.get_by_role("heading", name="history lesson")).to_be_visible()
            expect(page.get_by_text(shown_text("admin · admin"))).to_be_visible()
            assert page.get_by_role("button", name="Log in").count() == 0
            # ... and so does a new tab of the same browser.
            tab = ctx.new_page()
            tab.goto(base)
            expect(tab.get_by_role("heading", name="Sessions")).to_be_visible()
            tab.close()

            # 4. Logout ends it: the cookie is cleared and a refresh shows the form again.
            page.get_by_role("button", name="Log out").click()
            expect(page.get_by_role("button", name="Log in")).to_be_visible()
            page.reload()
            expect(page.get_by_role("button", name="Log in")).to_be_visible()
            assert not [c for c in ctx.cookies() if c["name"] == "affectline_login" and c["value"]]
            ctx.close()
        finally:
            browser.close()

    with session_scope(db_url) as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.action.like("login%")).order_by(AuditEntry.id)))
        assert s.scalar(select(LoginSession.id)) is None  # the one login was closed by the logout
    teacher = f"user:{ids.users['teacher']}"
    assert [(e.action, e.target) for e in rows] == [
        ("login_failed", teacher), ("login_failed", teacher), ("login_failed", teacher), ("login_refused", teacher),
        ("login", f"user:{ids.users['admin']}"),
    ]  # fmt: skip
    assert [e.detail["account_failures"] for e in rows[:3]] == [1, 2, 3] and rows[2].detail["locked"] is True
    assert rows[3].detail["reason"] == "locked" and all(e.target_label == "teacher" for e in rows[:4])
    assert all(e.detail["client"] == "127.0.0.1" for e in rows)


@pytest.mark.parametrize("address, works", [("127.0.0.1", True), ("0.0.0.0", False)])
def test_single_user_demo_mode_works_on_loopback_only(db_url, settings, address, works):
    """`make demo` (AFFECTLINE_DASHBOARD_USER=demo affectline dashboard) on 127.0.0.1 logs in without
    a password; the same on every interface is refused in the page, and no account is made."""
    from playwright.sync_api import expect, sync_playwright

    with dashboard_server(settings.data_dir, {"AFFECTLINE_DASHBOARD_USER": "demo"}, address=address) as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page()
                page.set_default_timeout(30_000)
                page.goto(url)
                if works:
                    expect(page.get_by_text(shown_text("demo · admin"))).to_be_visible(timeout=30_000)
                else:
                    expect(page.get_by_text(shown_text("AFFECTLINE_DASHBOARD_USER (log in without a password) is refused"))
                           ).to_be_visible(timeout=30_000)  # fmt: skip
                    assert page.get_by_role("button", name="Log in").count() == 0
            finally:
                browser.close()
    with session_scope(db_url) as s:
        assert [u.username for u in access.list_users(s)] == (["demo"] if works else [])
