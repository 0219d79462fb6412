"""``GET /review/{session_id}.mp4``: a session's review copy, to whoever may see the session, with ranges.

A route of the dashboard's own server (Streamlit's Starlette app, ``dashboard/asgi.py``): the browser
sends the dashboard's login cookie with the ``<video>`` request (same origin, SameSite=Strict), the
login is resumed as the page resumes it and the rights are the page's (``services.review``).
Answers: 200 / 206 Partial Content for ``Range`` requests (Starlette's ``FileResponse``: single and
multiple ranges, ``If-Range``, 416 outside the file), 403 without a live login, 404 for anything the
viewer may not watch, the same for a missing session and another group's (a URL guessed or shared
tells nothing). ``Cache-Control: private, no-cache``: never kept by a shared cache.
"""

from __future__ import annotations

from datetime import timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import Route

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _loopback(host: str | None) -> bool:
    return bool(host) and (host in LOOPBACK or host.startswith("127."))


def _demo_user(request: Request, settings) -> str | None:
    """The password-less demo user, only where the page itself would allow it (``dashboard.auth``)."""
    if not settings.dashboard_user:
        return None
    import streamlit as st

    listen = str(st.get_option("server.address") or "")
    client = request.client.host if request.client else None
    return settings.dashboard_user if _loopback(listen) and _loopback(client) else None


def _find(request: Request, session_id: int):
    from affectline.settings import get_settings
    from dashboard.auth import COOKIE
    from services.review import review_file, viewer_for_token

    settings = get_settings()
    url = settings.resolved_database_url
    actor = viewer_for_token(url, request.cookies.get(COOKIE), timedelta(minutes=settings.session_idle_minutes),
                             _demo_user(request, settings))  # fmt: skip
    return review_file(url, settings.data_dir, actor, session_id)


async def review_video(request: Request) -> Response:
    from services.review import NotLoggedIn

    session_id = int(request.path_params["session_id"])
    try:
        path = await run_in_threadpool(_find, request, session_id)  # database work off the event loop
    except NotLoggedIn as e:
        return PlainTextResponse(str(e), status_code=403, headers={"Cache-Control": "no-store"})
    except LookupError as e:
        return PlainTextResponse(str(e), status_code=404, headers={"Cache-Control": "no-store"})
    return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, no-cache"})


def review_url(session_id: int) -> str:
    """The address pages give a ``<video>`` element (relative: same origin, so the login cookie goes with it)."""
    return f"/review/{int(session_id)}.mp4"


ROUTES = [Route("/review/{session_id:int}.mp4", review_video, methods=["GET", "HEAD"])]
