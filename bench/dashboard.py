"""Dashboard at scale: the 90-minute, 30-student session vs the same class at 5 minutes, in one run.

    .venv/bin/python bench/dashboard.py [--minutes 90] [--students 30] [--term 40] [--term-minutes 45] [--keep DIR]

Builds both sessions through the storage API (``tests.big_session.add_class_session``: 162,000
person-bins for 90 x 30), then measures

1. server side: the data views the session page needs (read, summarise, reduce) and a full
   AppTest run of the page, cold (caches cleared) and warm;
2. in Debian's Chromium (Playwright, never ``playwright install``), against ``streamlit run``:
   the time from navigation to every chart of the page drawn, and the bytes the server sent
   over the websocket (the page's data; the static JS bundle is reported separately, it is the
   same for every session and the browser caches it). Cold = first open after the server starts.

3. the PDF class report of each session (``services.reports.session_report``), twice;
4. the PDF group report over a term (``--term`` lessons of ``--term-minutes``, the same students; built by
   ``tests.big_session.add_term``) against the same report over its first lesson alone, twice.

Prints each figure with its ratio to the 5-minute session (the baseline of this run) and the
issue's targets (<= 2 s, <= 5 MB for 90 minutes; <= 10 s for a PDF report). It also counts the script runs
each open takes and the session page's own run time (the server is started through ``TIMED_STREAMLIT``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This file is bench/dashboard.py: with bench/ first on the path, `import dashboard` would find it.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or '.').resolve() != ROOT / 'bench']

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
N_SMALL_MULTIPLES = 6  # the page draws the six lowest-ranked students by default, as rows of its one chart


def build(url: str, minutes: float, students: int) -> dict[str, int]:
    from storage import access, repo
    from storage.db import migrate, session_scope
    from storage.models import Role, SessionKind
    from tests.big_session import add_class_session

    migrate(url)
    with session_scope(url) as s:
        gid = repo.get_or_create_group(s, "year-9", SessionKind.classroom).id
        uid = access.create_user(s, "teacher", Role.teacher, None).id
        access.grant(s, uid, gid)
    t = time.perf_counter()
    small, _ = add_class_session(url, gid, minutes=5, n_persons=students, title="5-minute lesson", seed=1)
    big, _ = add_class_session(url, gid, minutes=minutes, n_persons=students, title=f"{minutes:g}-minute lesson", seed=2)
    print(f"built: {minutes:g} min x {students} students = {int(minutes * 60) * students:,} person-bins "
          f"(+ 5 min: {300 * students:,}) in {time.perf_counter() - t:.1f} s")  # fmt: skip
    return {"user": uid, "small": small, "big": big}


def server_side(url: str, ids: dict[str, int]) -> dict[str, dict[str, float]]:
    """Seconds for the page's data views and for a whole AppTest run of the page, cold and warm."""
    from streamlit.testing.v1 import AppTest

    from dashboard import auth, data

    viewer = data.viewer_for(url, ids["user"])
    g = viewer.group_ids
    out: dict[str, dict[str, float]] = {}
    for name in ("small", "big"):
        sid = ids[name]
        data.invalidate()
        row: dict[str, float] = {}
        t = time.perf_counter()
        bins = data.class_view_bins(url, g, sid)
        row["read bins"] = time.perf_counter() - t
        t = time.perf_counter()
        ov = data.class_overview(url, g, sid)
        row["summary+moments"] = time.perf_counter() - t
        t = time.perf_counter()
        data.class_curve_view(url, g, sid, ov.t0, ov.t1)
        data.heatmap_view(url, g, sid, "engagement", ov.t0, ov.t1, tuple(int(p) for p in ov.summary["person_id"]))
        for pid in ov.summary["person_id"].iloc[:N_SMALL_MULTIPLES]:
            data.student_view(url, g, sid, int(pid), ov.t0, ov.t1)
        row["reduce for screen"] = time.perf_counter() - t
        for label in ("page cold", "page warm"):
            if label == "page cold":
                data.invalidate()
            at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=300)
            at.session_state[auth.USER_KEY] = ids["user"]
            at.query_params["session"] = str(sid)
            at.run()
            t = time.perf_counter()
            at.switch_page("views/session.py").run()
            row[label] = time.perf_counter() - t
            assert not at.exception, [e.value for e in at.exception]
            row[f"{label} proto MB"] = sum(len(e.proto.SerializeToString()) for e in at.get("plotly_chart")) / 1e6
        row["bins"] = float(len(bins))
        out[name] = row
    return out


def report_side(url: str, ids: dict[str, int]) -> dict[str, dict[str, float]]:
    """Seconds to build the PDF class report (services.reports, as the dashboard and the CLI do), twice."""
    from services.actor import operator
    from services.reports import session_report

    out: dict[str, dict[str, float]] = {}
    for name in ("small", "big"):
        row: dict[str, float] = {}
        for label in ("PDF report", "PDF report again"):
            t, cpu = time.perf_counter(), time.process_time()
            rep = session_report(url, operator(), ids[name])
            row[label] = time.perf_counter() - t
            row[f"{label} CPU"] = time.process_time() - cpu  # this process only: telling on a shared machine
        row["PDF MB"] = len(rep.data) / 1e6
        out[name] = row
    return out


def term_side(url: str, n_sessions: int, minutes: float, students: int) -> dict[str, dict[str, float]]:
    """The group report (services.reports.group_report) over a term of ``n_sessions`` lessons vs over one of them."""
    from datetime import date

    from services.actor import operator
    from services.reports import group_report
    from storage import repo
    from storage.db import session_scope
    from storage.models import SessionKind
    from tests.big_session import add_term

    with session_scope(url) as s:
        gid = repo.get_or_create_group(s, "year-9 term", SessionKind.classroom).id
    t = time.perf_counter()
    add_term(url, gid, n_sessions=n_sessions, minutes=minutes, n_persons=students)
    print(f"built: a term of {n_sessions} lessons of {minutes:g} min x {students} students "
          f"({n_sessions * int(minutes * 60) * students:,} person-bins) in {time.perf_counter() - t:.1f} s")  # fmt: skip
    out: dict[str, dict[str, float]] = {"big": {}, "small": {}}
    first = date(2026, 9, 1)  # add_term's first lesson; one a day after it
    for name, until in (("big", None), ("small", first)):
        row = out[name]
        for label in ("group PDF", "group PDF again"):
            t, cpu = time.perf_counter(), time.process_time()
            rep = group_report(url, operator(), gid, since=first, until=until)
            row[label] = time.perf_counter() - t
            row[f"{label} CPU"] = time.process_time() - cpu
        row["group PDF pages"] = float(rep.pages)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `streamlit run` with every execution of the app script logged to $AFFECTLINE_BENCH_RUNLOG as "<page> <seconds>":
# how many script runs an open costs (a button's rerun and the page it switches to are two) and how long each.
TIMED_STREAMLIT = """
import os, sys, time
from streamlit.runtime.scriptrunner import script_runner as sr
from streamlit.web import cli
real = sr.exec_func_with_error_handling
def timed(func, ctx):
    t = time.perf_counter()
    try:
        return real(func, ctx)
    finally:
        page = ctx.pages_manager.get_pages().get(ctx.page_script_hash, {}).get("url_pathname", "?")
        with open(os.environ["AFFECTLINE_BENCH_RUNLOG"], "a") as f:
            f.write(f"{page or '?'} {time.perf_counter() - t:.4f}\\n")
sr.exec_func_with_error_handling = timed
sys.argv = ["streamlit", "run", *sys.argv[1:]]
cli.main()
"""


SESSION_PAGE = "session"  # the session page's url path (dashboard/app.py: views/session.py)


def _runs(log: Path, since: int) -> list[tuple[str, float]]:
    lines = log.read_text().splitlines()[since:]
    return [(a, float(b)) for a, b in (ln.rsplit(" ", 1) for ln in lines)]


def browser_side(data_dir: Path, ids: dict[str, int]) -> dict[str, dict[str, float]]:
    """Time to every chart drawn and websocket bytes, cold (fresh server) and warm, per session."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if not chromium:
        raise SystemExit("bench/dashboard.py: Debian chromium is not installed (apt-get install -y chromium)")
    port = _free_port()
    runlog = data_dir / "script_runs.log"
    runlog.write_text("")
    env = {**os.environ, "AFFECTLINE_DATA_DIR": str(data_dir), "AFFECTLINE_DASHBOARD_USER": "teacher",
           "PYTHONUNBUFFERED": "1", "AFFECTLINE_BENCH_RUNLOG": str(runlog)}  # fmt: skip
    env.pop("AFFECTLINE_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", TIMED_STREAMLIT, str(ROOT / "dashboard" / "app.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    out: dict[str, dict[str, float]] = {"small": {}, "big": {}}
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start: {proc.stdout.read().decode()[-2000:]}")
                time.sleep(0.3)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                context = browser.new_context(viewport={"width": 1500, "height": 1200})
                page = context.new_page()
                page.set_default_timeout(300_000)
                # Warm the browser's HTTP cache with the static bundle on the sessions list (not timed).
                static = {"bytes": 0}
                ws = {"bytes": 0}  # every frame the server sends, on whichever websocket the page has open

                def on_ws(sock) -> None:
                    sock.on("framereceived", lambda payload: ws.__setitem__("bytes", ws["bytes"] + len(payload)))

                page.on("websocket", on_ws)
                page.on("response", lambda r: static.__setitem__("bytes", static["bytes"] + int(r.headers.get("content-length", 0) or 0)))
                page.goto(base)
                page.get_by_role("heading", name="Sessions").wait_for()
                first_load = static["bytes"]  # the app's JS, CSS and fonts: fetched once, then browser-cached
                # The fixed cost of any page here: the sessions list (a table, no chart), opened again.
                t = time.perf_counter()
                page.goto(base)
                page.locator("[data-testid='stDataFrame']").first.wait_for()
                out["sessions_page_s"] = {"": time.perf_counter() - t}
                for name, label in (("big", "cold"), ("small", "cold"), ("big", "warm"), ("small", "warm"),
                                    ("big", "in-app"), ("small", "in-app")):
                    out[name].update(_open(page, base, ids[name], label, proc.pid, ws, runlog, in_app=label == "in-app"))
                out["static_mb"] = {"": first_load / 1e6}
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return out


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) the process has used: telling where the machine is shared."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _browser_cpu() -> float:
    """CPU seconds of the Chromium processes under this one (Playwright's node driver starts them)."""
    kids: dict[int, list[int]] = {}
    info: dict[int, tuple[str, float]] = {}
    tck = os.sysconf("SC_CLK_TCK")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        f = raw.rsplit(")", 1)[1].split()
        kids.setdefault(int(f[1]), []).append(int(d.name))
        info[int(d.name)] = (comm, (int(f[11]) + int(f[12])) / tck)
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        comm, cpu = info.get(pid, ("", 0.0))
        if "chrom" in comm.lower():
            total += cpu
        todo += kids.get(pid, [])
    return total


DRAWN = """n => { const p = document.querySelectorAll('.js-plotly-plot');
                  if (p.length < n) return false;
                  for (const el of p) { if (!el.querySelector('.main-svg')) return false; }
                  // the heat map and every student row (one stacked band trace of each) are drawn
                  return document.querySelector('.js-plotly-plot .heatmaplayer .hm') !== null
                         && document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 1 + 6 * 6; }"""


def _open(page, base: str, sid: int, label: str, server_pid: int, ws: dict, runlog: Path,
          in_app: bool = False) -> dict[str, float]:  # fmt: skip
    """Open the session page and wait until every chart has its SVG drawn (the heat map included).

    ``in_app``: from the sessions list with its "Open session" button, as a user does (the app is
    already loaded); otherwise a page load of the deep link (the whole Streamlit app boots again).
    Also: websocket bytes received, the server's and the browser's CPU seconds for it, and the script runs
    it took (count; the session page's own run time)."""
    if in_app:
        page.goto(base)
        page.get_by_role("button", name="Open session").wait_for()
        box = page.get_by_test_id("stSelectbox").filter(has_text="Session to open")
        box.click()
        page.get_by_role("option", name=re.compile(rf"#{sid}\)$")).click()
        page.wait_for_timeout(500)
    cpu, bcpu, ws0 = _cpu(server_pid), _browser_cpu(), ws["bytes"]
    runs0 = len(runlog.read_text().splitlines())
    t = time.perf_counter()
    if in_app:
        page.get_by_role("button", name="Open session").click()
    else:
        page.goto(f"{base}/session?session={sid}")
    page.wait_for_function(DRAWN, arg=1, polling=50)
    drawn = time.perf_counter() - t
    busy = _browser_cpu() - bcpu  # CPU, not the wall time spent waiting for a core on a shared machine
    page.wait_for_timeout(1500)  # let the last frames arrive before counting bytes
    heap = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : 0")
    runs = _runs(runlog, runs0)
    return {f"script runs {label}": float(len(runs)),
            f"session script {label} s": sum(t for p, t in runs if p == SESSION_PAGE), f"browser {label} s": drawn, f"browser CPU {label} s": busy,
            f"server CPU {label} s": _cpu(server_pid) - cpu, f"ws {label} MB": (ws["bytes"] - ws0) / 1e6,
            f"heap {label} MB": heap / 1e6}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=90.0)
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--keep", type=Path, help="build the database here and keep it")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--term", type=int, default=40, help="lessons in the group report's term (0: no group report)")
    ap.add_argument("--term-minutes", type=float, default=45.0)
    args = ap.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="affectline_bench_dash_"))
    data_dir = tmp / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["AFFECTLINE_DATA_DIR"] = str(data_dir)
    os.environ.pop("AFFECTLINE_DATABASE_URL", None)
    from affectline.settings import get_settings

    get_settings.cache_clear()
    url = get_settings().resolved_database_url
    ids = build(url, args.minutes, args.students)
    server = server_side(url, ids)
    pdf = report_side(url, ids)
    term = term_side(url, args.term, args.term_minutes, args.students) if args.term else {}
    browser = {} if args.no_browser else browser_side(data_dir, ids)
    big, small = f"{args.minutes:g} min", "5 min"
    print(f"\n{'measure':28s} {big:>10s} {small:>10s} {'ratio':>7s}")
    rows = {**{k: (server['big'][k], server['small'][k]) for k in server["big"] if k != "bins"}}
    rows.update({k: (pdf["big"][k], pdf["small"][k]) for k in pdf["big"]})
    if browser:
        rows.update({k: (browser["big"][k], browser["small"][k]) for k in browser["big"]})
    if term:  # its columns: the whole term vs one lesson of it
        rows.update({f"{k} (term vs 1)": (term["big"][k], term["small"][k]) for k in term["big"]})
    for k, (b, s) in rows.items():
        unit = "" if "MB" in k or k.startswith("script runs") or "pages" in k else " s"
        print(f"{k:28s} {b:9.3f}{unit:2s} {s:9.3f}{unit:2s} {b / s if s else float('nan'):6.1f}x")
    if browser:
        print(f"static bundle (once, browser-cached): {browser['static_mb']['']:.1f} MB; the sessions list (no chart) "
              f"takes {browser['sessions_page_s']['']:.2f} s to draw here: the fixed cost of a page on this machine")  # fmt: skip
        ok_t = browser["big"]["browser cold s"] <= 2.0
        ok_b = browser["big"]["ws cold MB"] <= 5.0
        print(f"targets for {big}: drawn <= 2 s: {'met' if ok_t else 'MISSED'} "
              f"(cold {browser['big']['browser cold s']:.2f} s, warm {browser['big']['browser warm s']:.2f} s); "
              f"<= 5 MB sent: {'met' if ok_b else 'MISSED'} ({browser['big']['ws cold MB']:.2f} MB)")  # fmt: skip
    slowest = max(pdf["big"]["PDF report"], pdf["big"]["PDF report again"])
    print(f"target for {big}: PDF class report <= 10 s: {'met' if slowest <= 10 else 'MISSED'} ({slowest:.2f} s wall, "
          f"{pdf['big']['PDF report CPU']:.2f} s CPU)")
    if term:
        worst = max(term["big"]["group PDF"], term["big"]["group PDF again"])
        print(f"target for a term of {args.term} lessons: group PDF report <= 10 s: {'met' if worst <= 10 else 'MISSED'} "
              f"({worst:.2f} s wall, {term['big']['group PDF CPU']:.2f} s CPU)")  # fmt: skip
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f} during the run")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
