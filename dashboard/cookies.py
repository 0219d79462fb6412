"""The login cookie, set by the server so that it is ``HttpOnly`` (no script on the page can read it).

A Streamlit script runs over the page's WebSocket and cannot answer with HTTP headers, and a cookie
that a page script writes cannot be ``HttpOnly``. So ``dashboard/serve.py`` adds one small HTTP route
to Streamlit's server (``install``), and a login (or logout) goes like this:

1. the script run that logged in ``issue``\\ s a ticket: a random single-use nonce, valid ``TICKET_S``,
   that stands for "set the cookie to this token" (or "clear it");
2. the page receives a one-line script that POSTs the nonce to ``ROUTE`` (the token itself is never in
   the page);
3. the route exchanges the nonce for the token and answers with ``Set-Cookie: affectline_login=...;
   HttpOnly; SameSite=Strict; Path=/`` (``Secure`` over HTTPS).

Tickets live in this process's memory: the server and the scripts share it (serve.py runs both).
Without ``install`` (a bare ``streamlit run dashboard/app.py``) no cookie is set: a login then lasts
as long as its browser tab's connection.
"""

from __future__ import annotations

import json
import secrets
import threading
import time

COOKIE = "affectline_login"
ROUTE = "_affectline/login-cookie"
TICKET_S = 120.0

_lock = threading.Lock()
_tickets: dict[str, tuple[str | None, float]] = {}  # nonce -> (token, or None to clear; expiry, monotonic)
_used: dict[str, float] = {}  # nonce -> expiry of the record that it was used
installed = False


def _prune(now: float) -> None:
    for d in (_tickets, _used):
        for k in [k for k, v in d.items() if (v[1] if isinstance(v, tuple) else v) < now]:
            del d[k]


def issue(token: str | None) -> str:
    """A nonce that, POSTed to ``ROUTE`` once within ``TICKET_S``, sets the cookie to ``token`` (None: clears it)."""
    nonce = secrets.token_urlsafe(24)
    now = time.monotonic()
    with _lock:
        _prune(now)
        _tickets[nonce] = (token, now + TICKET_S)
    return nonce


def used(nonce: str | None) -> bool:
    """Whether the browser has exchanged ``nonce`` (so its cookie is set, or cleared)."""
    with _lock:
        return nonce is not None and nonce in _used


def take(nonce: str) -> tuple[bool, str | None]:
    """(True, token) for a live unused nonce (now used up), else (False, None)."""
    now = time.monotonic()
    with _lock:
        _prune(now)
        got = _tickets.pop(nonce, None)
        if got is None:
            return False, None
        _used[nonce] = now + TICKET_S
        return True, got[0]


def set_cookie_header(token: str | None, secure: bool) -> str:
    """The ``Set-Cookie`` value: a session cookie (gone when the browser closes), never sent by other sites'
    pages (SameSite=Strict), unreadable by scripts (HttpOnly)."""
    value = f"{COOKIE}={token}" if token else f"{COOKIE}=; Max-Age=0"
    return f"{value}; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")


def url_path(base_url: str | None) -> str:
    base = (base_url or "").strip("/")
    return f"/{base}/{ROUTE}" if base else f"/{ROUTE}"


def page_script(nonce: str, base_url: str | None) -> str:
    """The script the page runs: hand the nonce to the route (same origin, so the answer's cookie is kept)."""
    return (f"<script>fetch({json.dumps(url_path(base_url))}, {{method: 'POST', credentials: 'same-origin', "
            f"cache: 'no-store', body: {json.dumps(nonce)}}});</script>")  # fmt: skip


async def _endpoint(request):
    from starlette.responses import Response

    body = (await request.body())[:200].decode("ascii", "replace").strip()
    ok, token = take(body)
    if not ok:
        return Response("unknown or expired ticket\n", status_code=403, media_type="text/plain")
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.headers.append("set-cookie", set_cookie_header(token, secure=request.url.scheme == "https"))
    return response


def install() -> None:
    """Add ``ROUTE`` to the routes of the Streamlit server this process is about to start (before its own,
    which end in a catch-all for the page's files). Call before ``streamlit run`` starts."""
    global installed
    from starlette.routing import Route
    from streamlit import config
    from streamlit.web.server.starlette import starlette_app

    make = starlette_app.create_streamlit_routes
    if getattr(make, "_affectline_cookie", False):
        installed = True
        return

    def create_streamlit_routes(runtime):
        route = Route(url_path(config.get_option("server.baseUrlPath")), _endpoint, methods=["POST"])
        return [route, *make(runtime)]

    create_streamlit_routes._affectline_cookie = True  # type: ignore[attr-defined]
    starlette_app.create_streamlit_routes = create_streamlit_routes
    installed = True
