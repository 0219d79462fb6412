"""The real dashboard in headless Chromium: `streamlit run` on localhost, log in, charts render, export.

Uses Debian's chromium (never `playwright install`); CI installs it with apt.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from dashboard import plot
from storage import access, repo
from storage.db import session_scope
from tests.browser import dashboard_server, shown_text
from tests.dashboard_factories import seed

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
SCREENSHOT = Path("/tmp/affectline_dashboard_session.png")
# Counts plotly.js draws (Plotly.react / newPlot) from the moment the bundle defines window.Plotly.
COUNT_DRAWS = """(() => { let P; window.__plotly_draws = 0;
  Object.defineProperty(window, 'Plotly', { configurable: true, get: () => P, set: (v) => {
    for (const f of ['react', 'newPlot']) { const g = v[f]; v[f] = function (...a) { window.__plotly_draws++; return g.apply(this, a); }; }
    P = v; } }); })()"""


@pytest.fixture(autouse=True)
def _chromium() -> None:
    # .ci/run installs it; a missing browser is a broken set-up, not a reason to skip.
    assert CHROMIUM, "Debian chromium is not installed: apt-get install -y chromium (.ci/run does this)"




@pytest.fixture()
def server(db_url, settings):
    ids = seed(db_url)
    with session_scope(db_url) as s:
        access.set_password(s, ids.users["teacher"], "chalk and talk")
    with dashboard_server(settings.data_dir) as url:
        yield url, ids


def test_teacher_logs_in_sees_charts_and_exports(server, db_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    base, ids = server
    expect.set_options(timeout=30_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2300}, accept_downloads=True)
            page.set_default_timeout(30_000)
            page.add_init_script(COUNT_DRAWS)
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            # A deep link as the server's very first request still goes through the login.
            page.goto(f"{base}/admin")
            expect(page.get_by_role("button", name="Log in")).to_be_visible()
            assert page.locator("[data-testid='stSidebarNav']").count() == 0
            page.goto(base)
            page.get_by_role("textbox", name="Username").fill("teacher")
            page.get_by_role("textbox", name="Password").fill("chalk and talk")
            page.get_by_role("button", name="Log in").click()

            # Sessions: only the teacher's class, state in words.
            expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
            expect(page.get_by_text(shown_text("teacher · teacher"))).to_be_visible()
            grid = page.locator("[data-testid='stDataFrame']").first
            expect(grid).to_be_visible()
            page.get_by_role("button", name="Open session").click()

            # Session view: the engagement chart and one chart per person, drawn by plotly in the browser.
            expect(page.get_by_role("heading", name="maths lesson")).to_be_visible()
            plots = page.locator(".js-plotly-plot")
            expect(plots).to_have_count(1)  # class curve, heat map and each person on one x axis
            expect(plots.first.locator(".main-svg").first).to_be_visible()
            expect(page.get_by_text(shown_text("cues@0123456789ab: interpretable cue model, not a trained classifier"))).to_be_visible()
            expect(page.locator(".gtitle", has_text="Class engagement")).to_have_count(1)
            for name in ("Ada", "Ben", "Unknown 3"):  # a row per person, titled on its y axis
                expect(page.locator(".js-plotly-plot .infolayer text", has_text=name)).to_have_count(1)
            # class curve + 3 students x (5 stacked academic bands + engagement), and the students x time heat map
            assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 1 + 3 * 6
            expect(page.locator(".js-plotly-plot .heatmaplayer .hm").first).to_be_attached()
            # drawn once, by the dashboard's own plotly bundle (dashboard/plot.py), fetched once
            assert page.evaluate("window.__plotly_draws") == 1
            assert [u for u in requested if "plotly" in u.lower()] == [base + plot.BUNDLE_URL]
            assert "therapy lesson" not in page.content() and "history lesson" not in page.content()
            page.screenshot(path=str(SCREENSHOT), full_page=True)

            # Export: prepare (audited), then download the file the browser receives.
            page.get_by_role("button", name="Prepare export").click()
            button = page.get_by_role("button", name="Download affectline_session")
            expect(button).to_be_visible()
            with page.expect_download() as dl:
                button.click()
            saved = tmp_path / dl.value.suggested_filename
            dl.value.save_as(saved)
        finally:
            browser.close()
    df = pd.read_csv(saved)
    assert tuple(df.columns) == repo.EXPORT_COLUMNS and len(df) == 120
    with session_scope(db_url) as s:
        exports = [(e.actor, e.target, e.detail["rows"]) for e in repo.audit_log(s) if e.action == "export"]
    assert exports == [("teacher", f"session:{ids.sessions['maths']}", 120)]
    assert SCREENSHOT.stat().st_size > 20_000
