"""Login and session-state glue.

Only the user id lives in ``st.session_state``; the user's role and grants are
re-read on every run, so a revoked grant or a deleted user takes effect at once.
``Settings.dashboard_user`` logs in as that user without a password (the
single-user local demo); the user is created as an admin if missing.
"""

from __future__ import annotations

import streamlit as st
from sqlalchemy import func, select

from affectline.settings import Settings
from dashboard import data
from storage import access, repo
from storage.models import Role, User

USER_KEY = "auth_user_id"
VIEWER_KEY = "auth_viewer"


def _auto_login(url: str, username: str) -> int:
    with data.scope(url) as s:
        user = access.get_user(s, username)
        if user is None:
            user = access.create_user(s, username, Role.admin)
            repo.audit(s, username, "create_user", f"user:{user.id}", username=username, role="admin",
                       reason="dashboard_user auto-login")  # fmt: skip
        return user.id


def current_viewer(url: str, settings: Settings) -> data.Viewer | None:
    """The logged-in viewer, or None when nobody is (after logout, or a deleted user)."""
    uid = st.session_state.get(USER_KEY)
    if uid is None and settings.dashboard_user and not st.session_state.get("auth_logged_out"):
        uid = st.session_state[USER_KEY] = _auto_login(url, settings.dashboard_user)
    viewer = data.viewer_for(url, uid) if uid is not None else None
    if viewer is None:
        st.session_state.pop(USER_KEY, None)
    st.session_state[VIEWER_KEY] = viewer
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


def _has_users(url: str) -> bool:
    with data.scope(url) as s:
        return bool(s.scalar(select(func.count(User.id))))


def login_page(url: str) -> None:
    """The login form; on a database with no users, a form that creates the first admin instead."""
    st.title("Affectline")
    if not _has_users(url):
        st.info("No accounts exist yet. Create the first administrator.")
        with st.form("bootstrap"):
            name = st.text_input("Username")
            pw = st.text_input("Password", type="password")
            pw2 = st.text_input("Repeat password", type="password")
            if st.form_submit_button("Create administrator"):
                if not name.strip() or not pw or pw != pw2:
                    st.error("Enter a username and the same password twice.")
                else:
                    with data.scope(url) as s:
                        user = access.create_user(s, name, Role.admin, pw)
                        repo.audit(s, user.username, "create_user", f"user:{user.id}", role="admin", reason="first admin")
                        st.session_state[USER_KEY] = user.id
                    st.rerun()
        return
    with st.form("login"):
        name = st.text_input("Username")
        pw = st.text_input("Password", type="password")
        if st.form_submit_button("Log in"):
            with data.scope(url) as s:
                user = access.authenticate(s, name, pw)
                uid = user.id if user else None
            if uid is None:
                st.error("Unknown username or wrong password.")
            else:
                st.session_state[USER_KEY] = uid
                st.session_state.pop("auth_logged_out", None)
                st.rerun()


def logout() -> None:
    for k in (USER_KEY, VIEWER_KEY):
        st.session_state.pop(k, None)
    st.session_state["auth_logged_out"] = True  # do not auto-login straight back in
