"""Warm the dashboard at server start, in the background: the first open after a restart is a cache hit.

Streamlit's caches live in the server process and start empty, so the first user after a restart paid
for the imports of plotly and our views, reading the session's bins and building its chart (4.85 s for
the 90-minute class, against 1.67 s for later opens). ``start`` runs a daemon thread in the server
process (``dashboard.serve``) that makes the session page's own cached calls (``viewcache.warm_session``)
for the newest ``Settings.dashboard_warm_sessions`` (session, viewer groups) pairs.

Privacy: every cached view is keyed by the viewer's visible group ids and checks visibility itself.
The warm-up computes each session only under the group sets of real, enabled users who may see it
(one key per distinct set), so an entry it leaves is served only to a viewer with that same set,
exactly as if one of those users had opened the page first. Nothing is computed under any other key.

The server does not wait for it: the health check answers at once, and a user who opens a session
being warmed waits on Streamlit's per-entry compute lock instead of computing it twice.
"""

from __future__ import annotations

import logging
import threading
import time

from services.actor import GroupIds

log = logging.getLogger("affectline.dashboard.warmup")

DONE = "dashboard warm-up done"  # the line it logs when finished (bench/dashboard.py waits for it)


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def targets(url: str, limit: int, dashboard_user: str | None = None) -> list[tuple[GroupIds, int]]:
    """(viewer group ids, session id) to warm: newest sessions first, each under every distinct group set of
    an enabled user who may view it, at most ``limit`` pairs."""
    from services.session_views import warm_targets

    return warm_targets(url, limit, dashboard_user)


def warm(url: str, limit: int, dashboard_user: str | None = None) -> tuple[int, float]:
    """Warm the imports and the first views of ``targets``; (views warmed, seconds). Never raises:
    a session that fails here is logged in one line and left for its first viewer."""
    t = time.perf_counter()
    import plotly.graph_objects  # noqa: F401  (the first chart's imports)

    from dashboard import charts, plot, viewcache  # noqa: F401

    done = 0
    try:
        pairs = targets(url, limit, dashboard_user)
    except Exception as e:  # e.g. the database is not reachable yet: the pages will say so
        log.warning("dashboard warm-up skipped: %s", _first_line(e))
        pairs = []
    for gids, sid in pairs:
        try:
            fig = viewcache.warm_session(url, gids, sid)
        except Exception as e:
            log.warning("dashboard warm-up: session %s not warmed: %s", sid, _first_line(e))
            continue
        if fig is not None:
            if not done:
                plot.figure_json(fig)  # the charts' serialiser: its first call imports the JSON engine
            done += 1
    return done, time.perf_counter() - t


def _wait_for_runtime(timeout: float = 120.0) -> bool:
    # Caches made before Streamlit's Runtime exists would use a stand-in storage manager.
    from streamlit import runtime

    end = time.monotonic() + timeout
    while not runtime.exists():
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def _run(url: str, limit: int, dashboard_user: str | None) -> None:
    if not _wait_for_runtime():
        log.warning("dashboard warm-up skipped: the Streamlit runtime did not start")
        return
    # Cached calls outside a script run: Streamlit warns once per call that there is no script context.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
    n, secs = warm(url, limit, dashboard_user)
    log.info("%s: %d session view(s) in %.2f s", DONE, n, secs)


def start(url: str, limit: int, dashboard_user: str | None = None) -> threading.Thread | None:
    """Start the warm-up thread (None when ``limit`` is 0). A daemon: it never holds the server up."""
    if limit <= 0:
        return None
    t = threading.Thread(target=_run, args=(url, limit, dashboard_user), name="affectline-warmup", daemon=True)
    t.start()
    return t
