"""Login, logout, session expiry and the login cookie.

A password login goes through ``services.logins.attempt`` (throttled, locked out after
repeated failures, audited). A successful one opens a server-side login session; the
browser keeps its random token in a cookie (``COOKIE``: no password, and the database keeps
only the token's SHA-256), so a refresh, a new tab or a deep link opened later finds the
login again while it is live. A login ends after ``Settings.session_idle_minutes`` without
use, at logout, and when an administrator disables the user or changes their password.

Only the user id lives in ``st.session_state``; role and grants are re-read on every run,
so a revoked grant or a disabled user takes effect at once.

``Settings.dashboard_user`` logs in as that user without a password: the single-user local
demo (``make demo``). It is refused unless the server listens on a loopback address only,
where nobody else can reach the page. There is no way to create the first administrator
from the login page: that is done at the server, with ``affectline users add NAME --role admin``.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta

import streamlit as st

from affectline import netaddr
from affectline.settings import Settings
from dashboard import cookies, data
from dashboard.safe import md_text
from services import logins

USER_KEY = "auth_user_id"
VIEWER_KEY = "auth_viewer"
TOKEN_KEY = "auth_token"
SEEN_KEY = "auth_last_seen"
COOKIE = cookies.COOKIE
COOKIE_NONCE_KEY = "auth_cookie_nonce"
COOKIE_FOR_KEY = "auth_cookie_for"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


# --- where the server listens and who is asking ------------------------------------------------


def listen_address() -> str:
    """The address Streamlit listens on ("" = every interface, its default)."""
    return str(st.get_option("server.address") or "")


def is_loopback(address: str) -> bool:
    return address in LOOPBACK or address.startswith("127.")


def client_address(settings: Settings | None = None) -> str:
    """The browser's address for the login throttle and the audit: the connection's peer, unless that is a
    trusted proxy (``Settings.trusted_proxies``), then the address it forwarded (``affectline.netaddr``)."""
    try:
        ip = st.context.ip_address  # the peer of the WebSocket; None for loopback
        forwarded = list(st.context.headers.get_all("X-Forwarded-For"))
    except Exception:  # no client context (AppTest)
        ip, forwarded = None, []
    peer = ip if isinstance(ip, str) and ip else "127.0.0.1"
    if forwarded and os.environ.get("FORWARDED_ALLOW_IPS") != "":
        # Not started by dashboard/serve.py: uvicorn itself believes X-Forwarded-For from loopback peers, so
        # the "peer" may be whatever the browser wrote. Every such request shares one budget.
        return "unverified-forwarded"
    proxies = netaddr.parse_proxies(settings.trusted_proxies) if settings is not None else ()
    return netaddr.client_address(peer, forwarded, proxies)


def _cookie() -> str | None:
    try:
        value = st.context.cookies.get(COOKIE)
    except Exception:
        return None
    return value if isinstance(value, str) and value else None  # AppTest hands back a stand-in object


def policy(settings: Settings) -> logins.Policy:
    return logins.policy(settings)


def _idle(settings: Settings) -> timedelta:
    return logins.idle(settings)


# --- the viewer of this run ----------------------------------------------------------------------


def _auto_login(url: str, username: str) -> int:
    return logins.auto_login(url, username)


def _forget(state) -> None:
    for k in (USER_KEY, VIEWER_KEY, TOKEN_KEY, SEEN_KEY):
        state.pop(k, None)


def current_viewer(url: str, settings: Settings) -> data.Viewer | None:
    """The logged-in viewer, or None when nobody is (logged out, expired, disabled, deleted)."""
    state = st.session_state
    if settings.dashboard_user:
        address = listen_address()
        if not is_loopback(address):
            st.error(f"AFFECTLINE_DASHBOARD_USER (log in without a password) is refused: this dashboard listens on "
                     f"{address or 'every interface'}, not only on 127.0.0.1. Unset it, or start the dashboard with "
                     f"`affectline dashboard --address 127.0.0.1`.")  # fmt: skip
            st.stop()
        if state.get(USER_KEY) is None and not state.get("auth_logged_out"):
            state[USER_KEY] = _auto_login(url, settings.dashboard_user)
    uid = state.get(USER_KEY)
    now = time.time()
    idle = _idle(settings)
    if uid is not None and not settings.dashboard_user:
        last, token = state.get(SEEN_KEY), state.get(TOKEN_KEY)
        idle_out = last is not None and now - last > idle.total_seconds()
        live = not idle_out
        if live and token is not None:
            live = logins.resume(url, token, idle) == uid  # closed elsewhere: password changed, user disabled
        if not live:
            if token is not None:
                logins.close(url, token)
            _forget(state)
            state["auth_expired"] = "idle" if idle_out else "closed"
            uid = None
    elif uid is None and not state.get("auth_logged_out") and (token := _cookie()):
        uid = logins.resume(url, token, idle)  # a refresh, a new tab, a deep link: the browser's login cookie
        if uid is not None:
            state[USER_KEY], state[TOKEN_KEY] = uid, token
    viewer = data.viewer_for(url, uid) if uid is not None else None
    if viewer is None:
        _forget(state)
    else:
        state[SEEN_KEY] = now
    state[VIEWER_KEY] = viewer
    return viewer


def require_viewer() -> data.Viewer:
    """The viewer the entry script found; stops the page if there is none (pages call this first)."""
    viewer = st.session_state.get(VIEWER_KEY)
    if viewer is None:
        st.warning("Please log in.")
        st.stop()
    return viewer


def require(viewer: data.Viewer, action: str) -> None:
    """Stop the page with a plain message when the viewer's role does not allow ``action``."""
    if not viewer.can(action):
        st.error(f"Your role ({viewer.role.value}) does not allow this page.")
        st.stop()


# --- the login cookie ----------------------------------------------------------------------------


def sync_cookie() -> None:
    """Keep the browser's login cookie equal to this session's login (set it, or clear it), through the
    server's HttpOnly route (``dashboard.cookies``): each run until the browser has used its ticket."""
    if not cookies.installed:
        return  # a bare `streamlit run`: no route, so no cookie; the login lasts as long as the tab's connection
    state = st.session_state
    token = state.get(TOKEN_KEY)
    if token is not None:
        if _cookie() == token:
            return  # the browser sent it when it connected
        want = f"set:{hashlib.sha256(token.encode()).hexdigest()}"
    elif _cookie() is not None or state.get("auth_clear_cookie"):
        want = "clear"
    else:
        return
    if state.get(COOKIE_FOR_KEY) == want and cookies.used(state.get(COOKIE_NONCE_KEY)):
        return  # done
    nonce = cookies.issue(token)
    state[COOKIE_NONCE_KEY], state[COOKIE_FOR_KEY] = nonce, want
    st.html(cookies.page_script(nonce, st.get_option("server.baseUrlPath")), unsafe_allow_javascript=True)


# --- pages ---------------------------------------------------------------------------------------


def _has_users(url: str) -> bool:
    return logins.has_users(url)


def login_page(url: str, settings: Settings) -> None:
    """The login form. On a database with no users, how to create the first administrator."""
    st.title("Affectline")
    ended = st.session_state.pop("auth_expired", None)
    if ended == "idle":
        st.info(f"Your login ended after {settings.session_idle_minutes:g} minutes without use. Please log in again.")
    elif ended:
        st.info("Your login was ended (password changed or account disabled). Please log in again.")
    if not _has_users(url):
        st.info("No accounts exist yet. An administrator creates the first one at the server, then logs in here:")
        st.code("affectline users add NAME --role admin", language="bash")
        return
    with st.form("login"):
        name = st.text_input("Username")
        pw = st.text_input("Password", type="password")
        if st.form_submit_button("Log in"):
            result = logins.attempt(url, settings, name, pw, client_address(settings))
            if result.outcome != "ok":
                st.error(md_text(result.message))
            else:
                state = st.session_state
                state[USER_KEY], state[TOKEN_KEY], state[SEEN_KEY] = result.user_id, result.token, time.time()
                state.pop("auth_logged_out", None)
                state.pop("auth_clear_cookie", None)
                st.rerun()  # same URL: a deep link opened before the login now shows its page


def logout(url: str | None = None) -> None:
    token = st.session_state.get(TOKEN_KEY)
    if token is not None and url is not None:
        logins.close(url, token)
    _forget(st.session_state)
    st.session_state["auth_logged_out"] = True  # do not auto-login (or resume the cookie) straight back in
    st.session_state["auth_clear_cookie"] = True
