"""The review copy over HTTP from the real dashboard server: exact bytes for ranges, refusals by URL,
and a <video> element in headless Chromium that plays it and seeks (issue 19)."""

from __future__ import annotations

import http.client
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from storage import access, logins, review
from storage.db import session_scope
from storage.models import Recording
from tests.browser import dashboard_server, shown_text
from tests.dashboard_factories import seed
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_review_copy import make_video, read_code, write_chunked

PASSWORD = "chalk and talk"


def give_copy(url: str, data_dir: Path, sid: int, source: Path) -> Path:
    """A review copy of ``source`` for session ``sid``, stored as an analysis stores it."""
    from pipeline.video import VideoSource

    out = review.copy_path(data_dir, sid)
    out.parent.mkdir(parents=True, exist_ok=True)
    src = VideoSource(source)
    write_chunked(src, out, [(0.0, src.info.duration / 2), (src.info.duration / 2, src.info.duration)])
    with session_scope(url) as s:
        s.get(Recording, sid).review_path = review.relative(data_dir, out)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Seeded database (class-a: teacher; class-b: teacher-b; child-x: clinician), copies for every
    session (both classes allowed), a running dashboard, and a login token per user."""
    import os

    from affectline.settings import Settings, get_settings
    from storage.db import migrate

    root = tmp_path_factory.mktemp("review_http")
    data = root / "data"
    old = os.environ.get("AFFECTLINE_DATA_DIR")
    os.environ["AFFECTLINE_DATA_DIR"] = str(data)
    get_settings.cache_clear()
    try:
        settings = Settings()
        url = settings.resolved_database_url
        migrate(url)
        ids = seed(url)
        source = make_video(root / "src.mp4", n=1000, audio="aac")  # 40 s as the seeded sessions, frame k shows k
        with session_scope(url) as s:
            for u in ("teacher", "clinician"):
                access.set_password(s, ids.users[u], PASSWORD)
            tb = access.create_user(s, "teacher-b", "teacher", PASSWORD)
            access.grant(s, tb.id, ids.groups["class-b"])
            for g in ("class-a", "class-b"):
                review.set_group_setting(s, ids.groups[g], True, "head")
        copies = {k: give_copy(url, data, sid, source) for k, sid in ids.sessions.items()}
        tokens = {}
        with session_scope(url) as s:
            for u in ("teacher", "teacher-b", "clinician"):
                tokens[u] = logins.attempt(s, u, PASSWORD, "127.0.0.1").token
        with dashboard_server(data) as base:
            yield {"base": base, "url": url, "ids": ids, "copies": copies, "tokens": tokens, "data": data}
    finally:
        if old is None:
            os.environ.pop("AFFECTLINE_DATA_DIR", None)
        else:
            os.environ["AFFECTLINE_DATA_DIR"] = old
        get_settings.cache_clear()


def fetch(base: str, path: str, token: str | None = None, headers: dict | None = None, method: str = "GET"):
    u = urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    h = dict(headers or {})
    if token:
        h["Cookie"] = f"affectline_login={token}"
    c.request(method, path, headers=h)
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def test_ranges_return_the_exact_bytes(world):
    sid = world["ids"].sessions["maths"]
    data = world["copies"]["maths"].read_bytes()
    tok = world["tokens"]["teacher"]
    status, h, body = fetch(world["base"], f"/review/{sid}.mp4", tok)
    assert status == 200 and body == data and h["content-type"] == "video/mp4"
    assert h["accept-ranges"] == "bytes" and "private" in h["cache-control"]
    n = len(data)
    for rng, lo, hi in (("bytes=0-0", 0, 0), ("bytes=100-4195", 100, 4195), (f"bytes={n - 1000}-", n - 1000, n - 1),
                        ("bytes=-777", n - 777, n - 1), (f"bytes=5000-{n + 10_000}", 5000, n - 1)):  # fmt: skip
        status, h, body = fetch(world["base"], f"/review/{sid}.mp4", tok, {"Range": rng})
        assert status == 206, rng
        assert body == data[lo : hi + 1], rng
        assert h["content-range"] == f"bytes {lo}-{hi}/{n}", rng
    status, h, _ = fetch(world["base"], f"/review/{sid}.mp4", tok, {"Range": f"bytes={n + 5}-"})
    assert status == 416
    status, h, body = fetch(world["base"], f"/review/{sid}.mp4", tok, method="HEAD")
    assert status == 200 and int(h["content-length"]) == n and body == b""


def test_refused_without_a_login_and_to_other_groups_by_url(world):
    ids, base, tok = world["ids"], world["base"], world["tokens"]
    maths, history, therapy = (ids.sessions[k] for k in ("maths", "history", "therapy"))
    # No login, a made-up token, a closed login: 403 and no video bytes.
    for t in (None, "not-a-token"):
        status, _, body = fetch(base, f"/review/{maths}.mp4", t, {"Range": "bytes=0-"})
        assert status == 403 and b"ftyp" not in body
    # Another group's teacher, a teacher on a therapy session, a session that does not exist:
    # the same 404 (nothing says which exist).
    for who, sid in (("teacher", history), ("teacher", therapy), ("teacher-b", maths), ("clinician", maths)):
        status, _, body = fetch(base, f"/review/{sid}.mp4", tok[who], {"Range": "bytes=0-"})
        assert status == 404 and body == f"session {sid} has no review copy you may watch".encode(), (who, sid)
    status, _, body = fetch(base, "/review/99999.mp4", tok["teacher"])
    assert status == 404 and body == b"session 99999 has no review copy you may watch"
    # Each may watch their own.
    for who, sid in (("teacher-b", history), ("clinician", therapy)):
        assert fetch(base, f"/review/{sid}.mp4", tok[who], {"Range": "bytes=0-99"})[0] == 206
    # The school turns video review off for class-b: its copy is no longer served.
    with session_scope(world["url"]) as s:
        review.set_group_setting(s, ids.groups["class-b"], False, "head")
    try:
        assert fetch(base, f"/review/{history}.mp4", tok["teacher-b"])[0] == 404
    finally:
        with session_scope(world["url"]) as s:
            review.set_group_setting(s, ids.groups["class-b"], True, "head")
    # A login that ends (logout) ends the access.
    with session_scope(world["url"]) as s:
        t2 = logins.attempt(s, "teacher", PASSWORD, "127.0.0.1").token
    assert fetch(base, f"/review/{maths}.mp4", t2, {"Range": "bytes=0-9"})[0] == 206
    with session_scope(world["url"]) as s:
        logins.close(s, t2)
    assert fetch(base, f"/review/{maths}.mp4", t2, {"Range": "bytes=0-9"})[0] == 403


def test_a_video_element_plays_the_copy_and_seeks_in_chromium(world):
    """Logged in through the page's own form, a <video> on the copy's URL plays, seeks to 6.4 s and
    shows source frame 160 there (frame k carries k in stripes)."""
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM
    sid = world["ids"].sessions["maths"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.goto(world["base"])
            page.get_by_role("textbox", name="Username").fill("teacher")
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Sessions")).to_be_visible()
            # The login cookie is HttpOnly (the page's scripts cannot read it): wait for the browser to hold it.
            deadline = time.monotonic() + 30
            while not any(c["name"] == "affectline_login" and c["value"] for c in page.context.cookies()):
                assert time.monotonic() < deadline, "no login cookie"
                page.wait_for_timeout(200)
            assert page.evaluate("document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.64001e, mp4a.40.2\"')")
            got = page.evaluate(
                """async (src) => {
                    const v = document.createElement('video');
                    v.muted = true; v.preload = 'auto'; v.src = src; document.body.appendChild(v);
                    const once = (el, ev) => new Promise((ok, bad) => {
                        el.addEventListener(ev, ok, {once: true});
                        el.addEventListener('error', () => bad(new Error('video error ' + (el.error && el.error.code))), {once: true});
                    });
                    await once(v, 'loadedmetadata');
                    await v.play();
                    await new Promise(r => setTimeout(r, 300));
                    const played = v.currentTime;
                    v.pause();
                    const seeked = once(v, 'seeked');
                    v.currentTime = 6.4;
                    await seeked;
                    while (v.readyState < 2) await new Promise(r => setTimeout(r, 20));
                    const c = document.createElement('canvas'); c.width = v.videoWidth; c.height = v.videoHeight;
                    const g = c.getContext('2d'); g.drawImage(v, 0, 0);
                    const row = Array.from(g.getImageData(0, c.height / 2, c.width, 1).data);
                    return {duration: v.duration, played, time: v.currentTime, ready: v.readyState,
                            w: v.videoWidth, h: v.videoHeight, row};
                }""",
                f"/review/{sid}.mp4",
            )
        finally:
            browser.close()
    assert got["played"] > 0 and got["duration"] == pytest.approx(39.92, abs=0.1)
    assert got["time"] == pytest.approx(6.4, abs=1e-3) and got["ready"] >= 2
    assert (got["w"], got["h"]) == (320, 240)
    import numpy as np

    grey = np.asarray(got["row"], float).reshape(-1, 4)[:, :3].mean(axis=1)[None, :]
    assert read_code(np.repeat(grey, 3, axis=0)) == 160  # the frame at 6.4 s is source frame 160


def test_the_session_page_player_seeks_on_a_click_and_its_cursor_follows(world):
    """The review player component on the session page: a click at 3/4 of its timeline plays the video
    from 0:30, the cursor moves with playback, and a pause is reported back to the page."""
    from playwright.sync_api import expect, sync_playwright

    sid = world["ids"].sessions["maths"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=CHROMIUM_ARGS + ["--autoplay-policy=no-user-gesture-required"])  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            page.set_default_timeout(30_000)
            expect.set_options(timeout=30_000)
            page.goto(f"{world['base']}/session?session={sid}")
            page.get_by_role("textbox", name="Username").fill("teacher")
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Video")).to_be_visible()
            frame = page.frame_locator("iframe[title*='affectline_review_player']")
            video, chart = frame.locator("video"), frame.locator("#chart")
            expect(video).to_have_attribute("src", f"/review/{sid}.mp4")
            video.evaluate("v => new Promise(ok => v.readyState >= 1 ? ok() : v.addEventListener('loadedmetadata', ok))")
            assert (float(chart.get_attribute("data-t0")), float(chart.get_attribute("data-t1"))) == (0.0, 40.0)
            box = chart.bounding_box()
            chart.click(position={"x": box["width"] * 0.75, "y": box["height"] / 2})
            t = video.evaluate("v => new Promise(ok => { const f = () => v.readyState >= 2 && !v.seeking ? "
                               "ok(v.currentTime) : setTimeout(f, 20); f(); })")  # fmt: skip
            assert 29.9 <= t <= 30.6, t  # 3/4 of 0:00-0:40 (a pixel is 0.03 s), playing on from there
            cursor = frame.locator("#chart .cursor")
            first = float(cursor.get_attribute("data-t"))
            page.wait_for_timeout(700)
            later = float(cursor.get_attribute("data-t"))
            assert later > first >= 29.9  # the cursor follows playback
            x = float(cursor.get_attribute("x1"))
            assert abs(x - box["width"] * later / 40) < 2
            video.evaluate("v => v.pause()")
            expect(page.get_by_text(shown_text("Paused at 00:3"))).to_be_visible()  # the value came back to the page
        finally:
            browser.close()
