"""Tagging while watching, in headless Chromium on the real dashboard: a clinician codes 20 events of a
45-minute therapy session with the keyboard alone (no mouse drag), and every stored tag's range is the
one pressed, within one frame of the review copy; then undo, a refused duplicate range, and a tag
clicked open in the editor with its own range.

The 45-minute review copy is synthetic and cheap: 640x360 at 5 fps, H.264 ultrafast (about 10 s to
make, 7 MB), written once and kept in ~/.cache/affectline/test-media (``long_copy``). The test drives
``video.currentTime`` between key presses and reads the tags back through ``storage.tags``.
"""

from __future__ import annotations

import os
import shutil
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from storage import access, review
from storage.db import session_scope
from storage.models import Recording, SessionKind
from storage.tags import latest_tags
from tests.browser import dashboard_server
from tests.dashboard_factories import add_analysed_session, seed
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

PASSWORD = "listen and watch"
FPS = 5
MINUTES = 45
ARTIFACTS = Path(os.environ.get("AFFECTLINE_ARTIFACTS", "/tmp/artifacts")) / "review_coding"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "affectline" / "test-media"


def long_copy(minutes: int = MINUTES, fps: int = FPS, size=(640, 360)) -> Path:
    """A ``minutes``-long review copy (H.264, faststart, a keyframe every 2 s), made once and cached."""
    import av

    w, h = size
    path = CACHE / f"review_{minutes}min_{h}p_{fps}fps.mp4"
    if path.is_file():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.mp4")
    with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        v.options = {"preset": "ultrafast", "g": str(2 * fps), "bf": "0", "crf": "35"}
        img = np.full((h * 3 // 2, w), 128, np.uint8)
        for k in range(minutes * 60 * fps):
            img[: h // 8, :] = 16 + (k % 200)  # a band that changes: every frame is a frame of its own
            f = av.VideoFrame.from_ndarray(img, format="yuv420p")
            f.pts, f.time_base = k, Fraction(1, fps)
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
    tmp.replace(path)
    return path


def script(rng: np.random.Generator):
    """20 events over 45 minutes, 4-15 s long, as (label, key, kind, start, end); some state events overlap
    (a second key pressed while the first behaviour goes on), four are point events."""
    states = [("anxious", "a"), ("avoidance", "v"), ("stimming", "s"), ("engaged", "e"), ("distressed", "d"), ("calm", "c")]
    points = [("vocal outburst", "o"), ("self-injury", "i")]
    starts = np.sort(rng.uniform(20, MINUTES * 60 - 40, 20))
    out = []
    for i, t in enumerate(starts):
        t = round(float(t) + rng.uniform(0, 1) / FPS, 3)  # not on a frame boundary: the time is what was pressed
        if i % 5 == 4:
            label, key = points[i % 2]
            out.append((label, key, "point", t, None))
        else:
            label, key = states[i % len(states)]
            out.append((label, key, "state", t, round(t + float(rng.uniform(4, 15)), 3)))
    return out


def presses(events):
    """The key presses in time order: (time, key). Overlapping state events interleave."""
    out = []
    for label, key, kind, a, b in events:
        out.append((a, key))
        if kind == "state":
            out.append((b, key))
    return sorted(out)


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    from affectline.settings import Settings, get_settings
    from storage.db import migrate

    root = tmp_path_factory.mktemp("coding")
    data = root / "data"
    old = os.environ.get("AFFECTLINE_DATA_DIR")
    os.environ["AFFECTLINE_DATA_DIR"] = str(data)
    get_settings.cache_clear()
    try:
        url = Settings().resolved_database_url
        migrate(url)
        ids = seed(url)
        sid, pids = add_analysed_session(url, ids.groups["child-x"], SessionKind.therapy, "long session", 1,
                                         n_bins=MINUTES * 60, seed=7, labels=("Child Y",))  # fmt: skip
        copy = review.copy_path(data, sid)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(long_copy(), copy)
        with session_scope(url) as s:
            access.set_password(s, ids.users["clinician"], PASSWORD)
            s.get(Recording, sid).review_path = review.relative(data, copy)
            s.get(Recording, sid).duration = MINUTES * 60.0
        with dashboard_server(data) as base:
            yield {"base": base, "url": url, "sid": sid, "pid": pids[0]}
    finally:
        if old is None:
            os.environ.pop("AFFECTLINE_DATA_DIR", None)
        else:
            os.environ["AFFECTLINE_DATA_DIR"] = old
        get_settings.cache_clear()


def stored(url: str, sid: int, pid: int):
    with session_scope(url) as s:
        return [(t.label, t.t_start, t.t_end, t.uid) for t in latest_tags(s, session_id=sid, person_id=pid)]


def wait_tags(url, sid, pid, n, timeout=90.0):
    deadline = time.monotonic() + timeout
    while True:
        got = stored(url, sid, pid)
        if len(got) == n or time.monotonic() > deadline:
            return got
        time.sleep(0.25)


SEEK = """(v, t) => new Promise(ok => {
    const done = () => { const f = () => v.readyState >= 1 && !v.seeking ? ok(v.currentTime) : setTimeout(f, 10); f(); };
    v.addEventListener('seeked', done, {once: true});
    v.currentTime = t;
})"""


def test_a_clinician_codes_20_events_of_a_45_minute_session_by_keyboard(clinic):
    from playwright.sync_api import expect, sync_playwright

    url, sid, pid = clinic["url"], clinic["sid"], clinic["pid"]
    events = script(np.random.default_rng(19))
    frame_s = 1.0 / FPS
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 3000})
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)
            page.goto(f"{clinic['base']}/review?session={sid}")
            page.get_by_role("textbox", name="Username").fill("clinician")
            page.get_by_role("textbox", name="Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Video")).to_be_visible()
            frame = page.frame_locator("iframe[title*='affectline_review_player']")
            video = frame.locator("video")
            expect(video).to_have_attribute("src", f"/review/{sid}.mp4")
            duration = video.evaluate("v => new Promise(ok => v.readyState >= 1 ? ok(v.duration) : "
                                      "v.addEventListener('loadedmetadata', () => ok(v.duration)))")  # fmt: skip
            assert duration == pytest.approx(MINUTES * 60, abs=1)
            expect(frame.locator("#labels button")).to_have_count(8)  # the therapy default: behaviours, calm first
            expect(frame.locator("#labels button").first).to_contain_text("calm")
            frame.locator("#player").focus()  # keyboard focus in the player; no mouse on the chart at all
            for t, key in presses(events):
                video.evaluate(SEEK, t)
                page.keyboard.press(key)
            got = wait_tags(url, sid, pid, 20)
            assert len(got) == 20, got
            for label, _, kind, a, b in events:
                end = a + frame_s if kind == "point" else b
                match = [g for g in got if g[0] == label and abs(g[1] - a) <= frame_s and abs(g[2] - end) <= frame_s]
                assert len(match) == 1, (label, a, end, got)
            worst = max(min(abs(g[1] - a) + abs(g[2] - (a + frame_s if k == "point" else b)) for g in got if g[0] == lab)
                        for lab, _, k, a, b in events)  # fmt: skip
            assert worst <= 0.002  # in fact exact to the millisecond the player rounds to

            # Every tag is drawn, in its label's lane, with a hover text in mm:ss (never NaN).
            tags = frame.locator("#lanes .tag[data-uid]")
            expect(tags).to_have_count(20)
            titles = [tags.nth(i).locator("title").text_content() for i in range(20)]
            assert all("NaN" not in x and ":" in x for x in titles), titles

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.locator("iframe[title*='affectline_review_player']").screenshot(path=str(ARTIFACTS / "coded_20.png"))

            # Frame and second steps at the copy's rate, and the speed, by key.
            now = "v => new Promise(ok => { const f = () => !v.seeking ? ok(v.currentTime) : setTimeout(f, 10); f(); })"
            video.evaluate(SEEK, 100.0)
            page.keyboard.press(".")
            assert video.evaluate(now) == pytest.approx(100.0 + frame_s, abs=1e-6)
            page.keyboard.press(",")
            page.keyboard.press(",")
            assert video.evaluate(now) == pytest.approx(100.0 - frame_s, abs=1e-6)
            page.keyboard.press("ArrowRight")
            assert video.evaluate(now) == pytest.approx(101.0 - frame_s, abs=1e-6)
            page.keyboard.press("]")
            assert video.evaluate("v => v.playbackRate") == 1.5
            page.keyboard.press("[")
            page.keyboard.press("[")
            assert video.evaluate("v => v.playbackRate") == 0.75
            assert frame.locator("#speed").input_value() == "0.75"

            # Undo: a mistaken point event, then Backspace: stored, then gone (a new version, deleted).
            video.evaluate(SEEK, 100.0)
            page.keyboard.press("o")
            assert len(wait_tags(url, sid, pid, 21)) == 21
            page.keyboard.press("Backspace")
            assert len(wait_tags(url, sid, pid, 20)) == 20
            # A state event started by mistake: undo drops the start, nothing is stored.
            page.keyboard.press("a")
            expect(frame.locator("#labels button.open")).to_have_count(1)
            page.keyboard.press("Control+z")
            expect(frame.locator("#labels button.open")).to_have_count(0)

            # The same range as an existing tag: refused, with a message; nothing stored.
            label, key, kind, a, b = next(e for e in events if e[2] == "state")
            video.evaluate(SEEK, a)
            page.keyboard.press("c" if key != "c" else "a")
            video.evaluate(SEEK, b)
            page.keyboard.press("c" if key != "c" else "a")
            expect(frame.locator("#notice.error")).to_contain_text("already tagged")
            assert len(stored(url, sid, pid)) == 20

            # A click on a tag opens it in the editor with its own range (not the last one coded).
            first = tags.first
            t0, t1 = float(first.get_attribute("data-t0")), float(first.get_attribute("data-t1"))
            first.click()
            expect(frame.locator("#editor")).to_be_visible()
            frm, to = frame.locator("#ed-from").input_value(), frame.locator("#ed-to").input_value()
            def mm(x: float) -> str:  # the editor's mm:ss.sss
                ms = round(x * 1000)
                return f"{ms // 60000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"

            assert (frm, to) == (mm(t0), mm(t1))
            page.locator("iframe[title*='affectline_review_player']").screenshot(path=str(ARTIFACTS / "editor.png"))
            frame.locator("#ed-to").fill(mm(t1 + 2.5))
            frame.locator("#ed-save").click()
            deadline = time.monotonic() + 60
            while not any(abs(g[2] - (t1 + 2.5)) < 1e-3 for g in stored(url, sid, pid)):
                assert time.monotonic() < deadline, stored(url, sid, pid)
                time.sleep(0.25)
            assert len(stored(url, sid, pid)) == 20

            # Delete from the editor asks first; the second click deletes (a new, deleted version).
            tags.first.click()
            frame.locator("#ed-delete").click()
            expect(frame.locator("#ed-delete")).to_contain_text("?")
            assert len(stored(url, sid, pid)) == 20
            frame.locator("#ed-delete").click()
            assert len(wait_tags(url, sid, pid, 19)) == 19
        finally:
            browser.close()
    assert CHROMIUM
