"""Issue 20 in a real browser (headless Debian chromium, the dashboard as `affectline dashboard` serves it):

- titles, group, person and tag names, job messages and URL parameters carrying Markdown links and images,
  HTML, LaTeX and Streamlit's own :red[...] / :material/...: / :smile: codes show as text: no link or image
  to evil.example anywhere in the page's DOM (plotly's SVG included);
- the login cookie is HttpOnly and SameSite=Strict (no page script can read it);
- a new X-Forwarded-For per try from an untrusted peer gives no extra guesses and the audit records the
  socket's address; behind a configured trusted proxy the forwarded address is the one counted and audited.
"""

from __future__ import annotations

import re
import time
from urllib.parse import quote

import pytest
from sqlalchemy import select

from storage import access
from storage.db import session_scope
from storage.models import AuditEntry, Group, Job, JobStatus, Person, Recording, Tag, TagLabel
from tests.browser import dashboard_server, shown_text
from tests.dashboard_factories import seed
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.timeout(400)

ADMIN_PW = "correct horse battery"
URL_PARAM = "[Your login expired: click here](https://evil.example/login) ![x](https://evil.example/t.png)"
TITLE = "[Class A - new login required](https://evil.example/login) ![t](https://evil.example/title.png)"
GROUP = "[class-a](https://evil.example/g) $x^2$ :red[alarm] <img src=https://evil.example/g.png>"
PERSONS = ("<a href='https://evil.example/p'>Ada</a> :smile:",
           "[Ben](https://evil.example/b) :material/home: ![i](https://evil.example/b.png)")  # fmt: skip
CHILD = "![c](https://evil.example/c.png) <b>Child</b> :material/home:"
TAG = "<img src=https://evil.example/tag.png>"
NOTE = "[note](https://evil.example/n) <a href='https://evil.example/n2'>n</a>"
JOB_MESSAGE = "decoder said [retry here](https://evil.example/retry) ![x](https://evil.example/j.png)"
HISTORY = "<a href=\"https://evil.example/h\">history</a> lesson"

# Every element that points at evil.example (HTML or SVG, href/src/xlink:href), and Streamlit's own renderings
# of Markdown extensions (material icon spans, KaTeX, coloured text) and the :smile: emoji.
PROBE = """() => {
  const pointing = [...document.querySelectorAll('*')].filter(e => [...e.attributes].some(
      a => /^(href|src|srcset|xlink:href|action|formaction|poster|data|style)$/i.test(a.name) && a.value.includes('evil.example')))
    .map(e => e.outerHTML.slice(0, 160));
  const rendered = [...document.querySelectorAll(
      '[aria-label="home icon"], .katex, .stMarkdownColoredText, .stMarkdownColoredBackground')]
    .map(e => e.outerHTML.slice(0, 160));
  return {pointing, rendered, smile: document.body.innerText.includes("\\u{1F604}")};
}"""


@pytest.fixture(autouse=True)
def _chromium() -> None:
    assert CHROMIUM, "Debian chromium is not installed: apt-get install -y chromium (.ci/run does this)"


def _plant(url: str):
    ids = seed(url)
    with session_scope(url) as s:
        access.set_password(s, ids.users["admin"], ADMIN_PW)
        s.get(Recording, ids.sessions["maths"]).title = TITLE
        s.get(Recording, ids.sessions["history"]).title = HISTORY
        s.get(Group, ids.groups["class-a"]).name = GROUP
        for pid, label in zip(ids.persons["maths"], PERSONS):
            s.get(Person, pid).label = label
        (child,) = ids.persons["therapy"]
        s.get(Person, child).label = CHILD
        s.add(TagLabel(name=TAG))
        s.flush()
        s.add(Tag(uid="00000000-0000-0000-0000-000000000020", version=1, session_id=ids.sessions["therapy"],
                  person_id=child, t_start=2.0, t_end=8.0, label=TAG, note=NOTE, author="clinician"))  # fmt: skip
        job = s.scalar(select(Job).where(Job.session_id == ids.sessions["history"]))
        job.status, job.message, job.error = JobStatus.failed, JOB_MESSAGE, JOB_MESSAGE
    return ids


def _shown(text: str) -> re.Pattern:
    """``text`` as the page shows it: md_text puts invisible word joiners where a link or code could start."""
    return re.compile("\u2060?".join(re.escape(c) for c in text))


def _log_in(page, name: str, password: str) -> None:
    page.get_by_role("textbox", name="Username").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def _inert(page, where: str) -> None:
    page.wait_for_timeout(1500)  # late elements (fragments, plotly drawing) are in the DOM by now
    found = page.evaluate(PROBE)
    assert found == {"pointing": [], "rendered": [], "smile": False}, (where, found)


def test_injected_names_titles_tags_and_url_parameters_show_as_text_and_the_cookie_is_httponly(db_url, settings):
    from playwright.sync_api import expect, sync_playwright

    ids = _plant(db_url)
    expect.set_options(timeout=45_000)
    with dashboard_server(settings.data_dir) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            # The crafted link of the issue, opened before logging in: the form, then the page's warning.
            page.goto(f"{base}/session?session={quote(URL_PARAM)}")
            _log_in(page, "admin", ADMIN_PW)
            expect(page.get_by_text(_shown(f"Session {URL_PARAM} does not exist or is not visible to you."))).to_be_visible()
            _inert(page, "session page, crafted ?session=")

            # The login cookie: set by the server, HttpOnly, SameSite=Strict; no page script sees it.
            deadline = time.monotonic() + 20
            while not (cookie := [c for c in ctx.cookies() if c["name"] == "affectline_login"]) and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            assert cookie and cookie[0]["value"], ctx.cookies()
            assert cookie[0]["httpOnly"] is True and cookie[0]["sameSite"] == "Strict" and cookie[0]["path"] == "/"
            assert "affectline_login" not in page.evaluate("document.cookie")

            # A session whose title, group and students carry links, images, HTML, LaTeX and Streamlit codes.
            page.goto(f"{base}/session?session={ids.sessions['maths']}")
            expect(page.locator("h1").filter(has_text=_shown(TITLE))).to_be_visible()  # the title, as its characters
            expect(page.get_by_text(_shown(f"group {GROUP}"))).to_be_visible()
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            expect(page.locator(".js-plotly-plot svg text").filter(has_text="<a href='https://evil.example/p'>Ada</a>").first).to_be_attached()
            _inert(page, "session page")

            # A failed job's message and a title with HTML on the Sessions page.
            page.goto(f"{base}/sessions")
            expect(page.get_by_text(_shown(JOB_MESSAGE)).first).to_be_visible()
            _inert(page, "sessions page")

            # A child's name, a tag label and its note on the review page (the chart and the tag list).
            page.goto(f"{base}/review?session={ids.sessions['therapy']}")
            expect(page.get_by_role("heading", name="Child session review")).to_be_visible()
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            expect(page.locator(".js-plotly-plot svg text").filter(has_text=TAG).first).to_be_attached()
            _inert(page, "review page")

            for path, heading in (("people", "People"), ("reports", "Reports & exports"), ("admin", "Admin")):
                page.goto(f"{base}/{path}")
                expect(page.get_by_role("heading", name=heading)).to_be_visible()
                _inert(page, f"{path} page")
        finally:
            browser.close()


def _failures(url: str) -> list[AuditEntry]:
    with session_scope(url) as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.action.like("login%")).order_by(AuditEntry.id)))


def _wait_rows(url: str, n: int, timeout: float = 30.0) -> list[AuditEntry]:
    deadline = time.monotonic() + timeout
    while len(rows := _failures(url)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {n} login audit rows after {timeout:.0f} s")
        time.sleep(0.1)
    return rows


def _try_in_new_context(browser, base: str, name: str, password: str, forwarded: str | None) -> str:
    """One login try from a fresh browser context sending ``X-Forwarded-For: forwarded``; the form's answer."""
    ctx = browser.new_context(extra_http_headers={"X-Forwarded-For": forwarded} if forwarded else {})
    try:
        page = ctx.new_page()
        page.goto(base)
        _log_in(page, name, password)
        for _ in range(300):
            if page.get_by_text(shown_text("Unknown username or wrong password.")).count():
                return "wrong"
            if page.get_by_text(shown_text("Too many failed logins: wait")).count():
                return "wait"
            if page.get_by_text(shown_text("Too many failed logins: locked")).count():
                return "locked"
            if page.get_by_role("heading", name="Sessions").count():
                return "ok"
            page.wait_for_timeout(100)
        raise TimeoutError("the login form gave no answer in 30 s")
    finally:
        ctx.close()


def test_forged_x_forwarded_for_gives_no_extra_guesses_and_a_trusted_proxy_is_believed(db_url, settings):
    from playwright.sync_api import sync_playwright

    ids = seed(db_url)
    with session_scope(db_url) as s:
        access.set_password(s, ids.users["admin"], ADMIN_PW)
    limits = {"AFFECTLINE_LOGIN_CLIENT_MAX_FAILURES": "3", "AFFECTLINE_LOGIN_MAX_FAILURES": "10"}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            # 1. No trusted proxy: each try claims another address; all count against the socket's, 127.0.0.1.
            with dashboard_server(settings.data_dir, limits) as base:
                answers = []
                for i in range(4):
                    answers.append(_try_in_new_context(browser, base, "nobody", "guess", f"203.0.113.{i + 1}"))
                    time.sleep(1.1)  # a locked address checks one try a second: this test is about the lock itself
                # Forged addresses would each have had a budget of 3: all four "wrong". The real one is locked
                # after 3, and "nobody" failed 3 times there, so the 4th is refused unchecked.
                assert answers == ["wrong", "wrong", "wrong", "locked"]
                # The admin, who has not failed from this address, still logs in from it.
                assert _try_in_new_context(browser, base, "admin", ADMIN_PW, "203.0.113.99") == "ok"
                rows = _wait_rows(db_url, 5)
                assert [e.action for e in rows] == ["login_failed"] * 3 + ["login_refused", "login"]
                assert {e.detail["client"] for e in rows} == {"127.0.0.1"}  # the socket's, never a forged one
                assert all("203.0.113" not in e.actor for e in rows)

            # 2. The same peer configured as a trusted proxy: the right-most address it forwarded is the client.
            with dashboard_server(settings.data_dir, {**limits, "AFFECTLINE_TRUSTED_PROXIES": "127.0.0.1, ::1"}) as base:
                assert _try_in_new_context(browser, base, "nobody", "guess", "198.51.100.7, 203.0.113.50") == "wrong"
                assert _try_in_new_context(browser, base, "admin", ADMIN_PW, "203.0.113.50") == "ok"
                rows = _wait_rows(db_url, 7)[5:]
                assert [(e.action, e.detail["client"]) for e in rows] == [("login_failed", "203.0.113.50"),
                                                                          ("login", "203.0.113.50")]  # fmt: skip
                assert rows[0].detail["client_failures"] == 1  # its own budget, not 127.0.0.1's
        finally:
            browser.close()
