"""Each role's main job in the real dashboard, in headless Chromium (Debian's; never `playwright install`).

* teacher: signs in, opens the class session, finds the dip in the moments and who was in it, zooms to it;
* clinician: signs in, opens the child's session and tags a range by brushing it on the chart;
* admin: signs in, looks at users and the audit log, downloads the class's PDF report.

Every page visited is screenshotted into a folder the test prints (``$AFFECTLINE_ARTIFACTS`` or
/tmp/artifacts, then ``browser_roles/``), so a reviewer can see what each role saw.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dashboard.charts import axis_seconds
from storage import access, repo, tags
from storage.db import session_scope
from tests.big_session import add_class_session
from tests.browser import dashboard_server, shown_text
from tests.dashboard_factories import seed

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-component-update", "--disable-sync"]  # fmt: skip
ARTIFACTS = Path(os.environ.get("AFFECTLINE_ARTIFACTS", "/tmp/artifacts")) / "browser_roles"
PASSWORDS = {"teacher": "chalk and talk daily", "clinician": "listen first, then tag", "admin": "keys to every room"}
TIMEOUT_MS = 60_000


@pytest.fixture(autouse=True)
def _chromium() -> None:
    assert CHROMIUM, "Debian chromium is not installed: apt-get install -y chromium (.ci/run does this)"


@pytest.fixture(scope="module")
def shots():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    print(f"\nscreenshots: {ARTIFACTS}")
    return ARTIFACTS




@pytest.fixture()
def server(db_url, settings):
    """Seeded users with passwords, the seed's sessions, and a 20-minute 12-student class with a planted dip."""
    ids = seed(db_url)
    with session_scope(db_url) as s:
        for who, pw in PASSWORDS.items():
            access.set_password(s, ids.users[who], pw)
    big, _ = add_class_session(db_url, ids.groups["class-a"], minutes=20, n_persons=12, title="Planted class")
    with dashboard_server(settings.data_dir) as url:
        yield url, ids, big


@pytest.fixture()
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def sign_in(browser, base: str, who: str, path: str = ""):
    """A fresh browser context (no cookie), signed in as ``who``; lands on ``path`` (a deep link) after login."""
    from playwright.sync_api import expect

    ctx = browser.new_context(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{base}/{path}")
    page.get_by_role("textbox", name="Username").fill(who)
    page.get_by_role("textbox", name="Password").fill(PASSWORDS[who])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text(shown_text(f"{who} · {who}"))).to_be_visible()  # the sidebar names the user and role
    return page


def wait_drawn(page, n: int) -> None:
    """Until at least ``n`` plotly charts have their SVG drawn (a screenshot of the page if they never are)."""
    try:
        page.wait_for_function(
            """n => { const p = document.querySelectorAll('.js-plotly-plot');
                      return p.length >= n && [...p].every(el => el.querySelector('.main-svg')); }""",
            arg=n, polling=100, timeout=TIMEOUT_MS * 2,
        )  # fmt: skip
    except Exception:
        page.screenshot(path=str(ARTIFACTS / "FAILED_waiting_for_charts.png"), full_page=True)
        raise


def settle(page) -> None:
    """Until the script run is over and no placeholder (skeleton) is left on the page."""
    page.wait_for_timeout(300)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
                 && !document.querySelector('[data-testid="stSkeleton"]')""",
        polling=100, timeout=TIMEOUT_MS * 2,
    )  # fmt: skip


def snap(page, shots: Path, name: str) -> None:
    settle(page)
    page.wait_for_timeout(300)  # let the last frame paint
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert (shots / f"{name}.png").stat().st_size > 10_000


def clock_s(text: str) -> float:
    parts = [float(p) for p in text.strip().split(":")]
    return parts[0] * 60 + parts[1] if len(parts) == 2 else parts[0] * 3600 + parts[1] * 60 + parts[2]


def test_teacher_finds_the_dip_and_who(server, browser, shots):
    from playwright.sync_api import expect

    base, ids, big = server
    page = sign_in(browser, base, "teacher", f"session?session={big}")  # a deep link survives the login
    expect(page.get_by_role("heading", name="Planted class")).to_be_visible()
    wait_drawn(page, 1)
    snap(page, shots, "teacher_1_session")
    assert "therapy lesson" not in page.content()

    # The moments list names the dip (planted at 06:40-07:20 for students 01-08) and who was in it.
    dip = page.get_by_text(re.compile(r"Class engagement dipped for")).first
    expect(dip).to_be_visible()
    text = dip.inner_text()
    who = set(re.findall(r"Student \d\d", text))
    assert {f"Student {i:02d}" for i in range(1, 9)} <= who and "Student 12" not in who, text
    button = page.get_by_role("button", name=re.compile(r"^zoom_in\s*0[67]:\d\d-0[67]:\d\d$|^0[67]:\d\d-0[67]:\d\d$"))
    expect(button.first).to_be_visible()
    start = clock_s(re.search(r"(0[67]:\d\d)-", button.first.inner_text()).group(1))
    assert abs(start - 400) <= 20
    button.first.click()

    # One click zooms every chart to the dip (a minute either side) and draws the students involved.
    frm = page.get_by_role("textbox", name="From (mm:ss)")
    expect(frm).to_have_value(re.compile(r"0[56]:\d\d"))
    assert abs(clock_s(frm.input_value()) - (start - 60)) <= 5
    # The moment's students are the ones drawn under the heat map, each with their own row on the chart.
    chips = page.locator("[data-testid='stMultiSelectTagsContainer'] [data-tag]")
    deadline, drawn = time.monotonic() + TIMEOUT_MS / 1000, set()
    while time.monotonic() < deadline:  # the rerun replaces the default pick (first six by name) with the moment's
        drawn = set(chips.evaluate_all("els => els.map(e => e.getAttribute('aria-label'))"))
        if drawn == who:
            break
        page.wait_for_timeout(250)
    assert drawn == who, (sorted(drawn), sorted(who))
    settle(page)
    wait_drawn(page, 1)
    rows = "".join(page.locator(".js-plotly-plot .main-svg").all_text_contents())  # titles, ticks, annotations
    # Each involved student: a heat-map row label and their own small multiple; the others only the label.
    assert all(rows.count(name) >= 2 for name in who) and rows.count("Student 12") == 1, rows
    snap(page, shots, "teacher_2_dip_moments")
    page.evaluate("""() => { window.scrollTo(0, 0);
        document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"]')
                .forEach(el => el.scrollTo(0, 0)); }""")
    snap(page, shots, "teacher_3_dip_chart")

    # The refresh keeps the login and the page.
    page.reload()
    expect(page.get_by_role("heading", name="Planted class")).to_be_visible()
    snap(page, shots, "teacher_4_after_refresh")


def test_clinician_brushes_a_tag(server, browser, shots, db_url):
    from playwright.sync_api import expect

    base, ids, _ = server
    sid, (pid,) = ids.sessions["therapy"], ids.persons["therapy"]
    page = sign_in(browser, base, "clinician", f"review?session={sid}")
    expect(page.get_by_role("heading", name="Child session review")).to_be_visible()
    wait_drawn(page, 1)
    snap(page, shots, "clinician_1_review")
    assert "maths lesson" not in page.content()

    # Brush from 25% to 50% of the top row's width (plotly box selection, horizontal only).
    drag = page.locator(".js-plotly-plot .draglayer .xy .nsewdrag").first
    box = drag.bounding_box()
    x0, x1, y = box["x"] + 0.25 * box["width"], box["x"] + 0.5 * box["width"], box["y"] + 0.5 * box["height"]
    span = [axis_seconds(v) for v in page.evaluate(
        """() => { const xa = document.querySelector('.js-plotly-plot')._fullLayout.xaxis;
                   return [xa.r2l(xa.range[0]), xa.r2l(xa.range[1])]; }"""
    )]  # seconds at the row's left and right edges (the axis's ms, from dashboard.charts' origin)
    want = (span[0] + 0.25 * (span[1] - span[0]), span[0] + 0.5 * (span[1] - span[0]))
    page.mouse.move(x0, y)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, y, steps=5)
    page.mouse.move(x1, y, steps=5)
    page.mouse.up()

    # The brushed range fills the tag form (mm:ss); the clinician labels it and adds it.
    frm, to = page.get_by_role("textbox", name="From (mm:ss)"), page.get_by_role("textbox", name="To (mm:ss)")
    expect(frm).not_to_have_value("")  # empty until a brush or typing fills it (never a stale range)
    assert abs(clock_s(frm.input_value()) - want[0]) <= 1.5 and abs(clock_s(to.input_value()) - want[1]) <= 1.5
    page.get_by_label("Note").fill("laughed at the puppet")
    snap(page, shots, "clinician_2_brushed")
    page.get_by_role("button", name="Add tag").click()
    expect(page.get_by_text(re.compile(r"^Tagged \d\d:\u2060?\d\d-\d\d:\u2060?\d\d as "))).to_be_visible()
    wait_drawn(page, 1)
    snap(page, shots, "clinician_3_tagged")

    with session_scope(db_url) as s:
        (tag,) = tags.latest_tags(s, session_id=sid)
        assert tag.person_id == pid and tag.author == "clinician" and tag.note == "laughed at the puppet"
        assert abs(tag.t_start - want[0]) <= 1.5 and abs(tag.t_end - want[1]) <= 1.5
        t0, t1 = tag.t_start, tag.t_end
    # The tag is drawn on every row of the child's chart: shapes spanning exactly its range.
    shapes = page.evaluate(
        """() => (document.querySelector('.js-plotly-plot').layout.shapes || []).map(s => [s.x0, s.x1])"""
    )
    on_tag = [x for x in shapes if abs(axis_seconds(x[0]) - t0) < 0.6 and abs(axis_seconds(x[1]) - t1) < 0.6]
    assert len(on_tag) >= 3, shapes


def test_admin_downloads_a_report(server, browser, shots, db_url, tmp_path):
    from playwright.sync_api import expect

    base, ids, big = server
    page = sign_in(browser, base, "admin", "admin")
    expect(page.get_by_role("heading", name="Admin")).to_be_visible()
    snap(page, shots, "admin_1_users")
    page.get_by_role("tab", name="Audit log").click()
    expect(page.get_by_text(re.compile(r"^\d+ entr(y|ies)"))).to_be_visible()
    snap(page, shots, "admin_2_audit")

    page.goto(f"{base}/reports?session={big}")
    expect(page.get_by_role("heading", name="Reports & exports")).to_be_visible()
    page.get_by_role("button", name="Prepare PDF report").click()
    button = page.get_by_role("button", name=re.compile(r"Download affectline_class_report_session_\d+\.pdf"))
    expect(button).to_be_visible()
    snap(page, shots, "admin_3_report")
    with page.expect_download() as dl:
        button.click()
    saved = tmp_path / dl.value.suggested_filename
    dl.value.save_as(saved)
    assert saved.name == f"affectline_class_report_session_{big}.pdf"
    text = subprocess.run(["pdftotext", "-layout", str(saved), "-"], capture_output=True, text=True, check=True).stdout
    assert "Class session report: Planted class" in text and "class engagement dipped" in text
    with session_scope(db_url) as s:
        got = [(e.actor, e.target) for e in repo.audit_log(s) if e.action == "report"]
    assert got == [("admin", f"session:{big}")]
