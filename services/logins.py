"""Dashboard logins: password attempts (throttled, ``storage.logins``), resumed login sessions, logout,
and the loopback auto-login of ``AFFECTLINE_DASHBOARD_USER``. Every attempt is audited by storage."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from affectline.settings import Settings
from services.db import scope
from storage import access, audit, logins
from storage.models import Role, User

Policy = logins.Policy


def policy(settings: Settings) -> Policy:
    return Policy.from_settings(settings)


def idle(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.session_idle_minutes)


def auto_login(url: str, username: str) -> int:
    """The user id of ``username``, created as an administrator (audited) the first time."""
    with scope(url) as s:
        user = access.get_user(s, username)
        if user is None:
            user = access.create_user(s, username, Role.admin)
            audit.write(s, username, "create_user", f"user:{user.id}", username=username, role="admin",
                        reason="dashboard_user auto-login on a loopback address")  # fmt: skip
        return user.id


def attempt(url: str, settings: Settings, username: str, password: str, client: str):
    """A password login (``storage.logins.attempt``); a success also purges idle logins never resumed."""
    with scope(url) as s:
        result = logins.attempt(s, username, password, client, policy=policy(settings))
        if result.outcome == "ok":
            logins.purge_idle(s, idle(settings))  # logins never resumed (browser closed) go here
        return result


def resume(url: str, token: str | None, idle_for: timedelta) -> int | None:
    """The user id of a live login token (None when it ended: idle, logged out, password changed, disabled)."""
    with scope(url) as s:
        return logins.resume(s, token, idle_for)


def close(url: str, token: str | None) -> None:
    with scope(url) as s:
        logins.close(s, token)


def has_users(url: str) -> bool:
    with scope(url) as s:
        return bool(s.scalar(select(func.count(User.id))))
