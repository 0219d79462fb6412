"""``affectline users``: dashboard accounts, roles, grants; every change audited.

Attached to the main CLI lazily by ``cli.main``. The first administrator can only be made
here (``users add NAME --role admin``): the dashboard never offers it to a visitor. The
audit trail names the operator's OS account and their ``affectline --as NAME`` claim.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ROLES = ("teacher", "clinician", "admin")


@contextmanager
def _db() -> Iterator[Session]:
    """One transaction; lookup and validation errors become one-line CLI errors (nothing stored)."""
    from cli.common import database_url
    from storage.db import session_scope

    try:
        with session_scope(database_url()) as s:
            yield s
    except (LookupError, ValueError) as e:
        raise click.ClickException(str(e.args[0]) if e.args else str(e)) from None


def _audit(s, action: str, target: str, **detail) -> None:
    from cli.common import actor_name
    from storage.audit import write

    write(s, actor_name(), action, target, **detail)


def _user(s, username: str):
    from storage.access import get_user, list_users

    u = get_user(s, username)
    if u is None:
        names = ", ".join(x.username for x in list_users(s)) or "none yet"
        raise LookupError(f"no user {username!r}; users: {names}")
    return u


def _group(s, name: str):
    from sqlalchemy import select

    from storage.models import Group

    g = s.scalar(select(Group).where(Group.name == name))
    if g is None:
        names = ", ".join(s.scalars(select(Group.name).order_by(Group.name))) or "none yet"
        raise LookupError(f"no group {name!r}; groups: {names}")
    return g


def _password(ctx, param, value):
    from storage.access import check_password

    try:
        return check_password(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


password_option = click.option(
    "--password", prompt=True, hide_input=True, confirmation_prompt=True, callback=_password,
    help="The dashboard password (asked for when not given; at least 12 characters).",
)  # fmt: skip


@click.group()
def users() -> None:
    """Dashboard users, roles and the classes or caseloads they may see."""


@users.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), required=True)
@password_option
def users_add(username: str, role: str, password: str) -> None:
    """Create USERNAME with ROLE and a password (audited)."""
    from storage.access import create_user

    with _db() as s:
        u = create_user(s, username, role, password)
        _audit(s, "create_user", f"user:{u.id}", username=u.username, role=role)
        name = u.username
    click.echo(f"user {name} ({role}) created", err=True)


@users.command("passwd")
@click.argument("username")
@password_option
def users_passwd(username: str, password: str) -> None:
    """Set USERNAME's password; their open dashboard logins end (audited)."""
    from storage.access import set_password

    with _db() as s:
        u = _user(s, username)
        set_password(s, u.id, password)
        _audit(s, "set_password", f"user:{u.id}", username=u.username)
    click.echo(f"password of {username} changed", err=True)


@users.command("role")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
def users_role(username: str, role: str) -> None:
    """Change USERNAME's role (audited); grants that stop taking effect are named."""
    from sqlalchemy import select

    from storage.access import ROLE_KIND, set_role
    from storage.models import Group, Role, UserGroup

    with _db() as s:
        u = _user(s, username)
        old = u.role.value
        set_role(s, u.id, role)
        _audit(s, "set_role", f"user:{u.id}", username=u.username, role=role, previous=old)
        granted = s.scalars(select(Group).join(UserGroup, UserGroup.group_id == Group.id).where(UserGroup.user_id == u.id))
        stale = [g.name for g in granted if ROLE_KIND.get(Role(role)) is not g.kind]
    click.echo(f"{username} is now {role}", err=True)
    if stale:
        click.echo(f"warning: these grants no longer take effect: {', '.join(stale)}", err=True)


@users.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """USERNAME can no longer log in; open dashboard logins end (audited). The account stays."""
    from storage.access import set_disabled

    with _db() as s:
        u = _user(s, username)
        set_disabled(s, u.id, True)
        _audit(s, "disable_user", f"user:{u.id}", username=u.username)
    click.echo(f"{username} disabled", err=True)


@users.command("enable")
@click.argument("username")
def users_enable(username: str) -> None:
    """Let a disabled USERNAME log in again (audited)."""
    from storage.access import set_disabled

    with _db() as s:
        u = _user(s, username)
        set_disabled(s, u.id, False)
        _audit(s, "enable_user", f"user:{u.id}", username=u.username)
    click.echo(f"{username} enabled", err=True)


@users.command("unlock")
@click.argument("username")
def users_unlock(username: str) -> None:
    """Clear everything that refuses USERNAME's login (audited): its failed-login count and lock, and its
    failures at every client address, so no locked address refuses it either. Says what it cleared."""
    from dataclasses import asdict

    from affectline.settings import get_settings
    from storage.logins import Policy, unlock

    with _db() as s:
        u = _user(s, username)
        done = unlock(s, u.username, policy=Policy.from_settings(get_settings()))
        _audit(s, "unlock_user", f"user:{u.id}", username=u.username, **asdict(done))
    click.echo(done.sentence(u.username), err=True)


@users.command("grant")
@click.argument("username")
@click.argument("group")
def users_grant(username: str, group: str) -> None:
    """Let USERNAME see GROUP (a class for a teacher, a caseload for a clinician); audited."""
    from storage.access import grant

    with _db() as s:
        u, g = _user(s, username), _group(s, group)
        grant(s, u.id, g.id)  # refuses a grant that would have no effect
        _audit(s, "grant", f"user:{u.id}", username=u.username, group_id=g.id, group=g.name)
    click.echo(f"{username} may now see {group}", err=True)


@users.command("revoke")
@click.argument("username")
@click.argument("group")
def users_revoke(username: str, group: str) -> None:
    """Take GROUP away from USERNAME (audited)."""
    from storage.access import revoke
    from storage.models import UserGroup

    with _db() as s:
        u, g = _user(s, username), _group(s, group)
        if s.get(UserGroup, (u.id, g.id)) is None:
            raise LookupError(f"{username} has no grant of {group!r}")
        revoke(s, u.id, g.id)
        _audit(s, "revoke", f"user:{u.id}", username=u.username, group_id=g.id, group=g.name)
    click.echo(f"{username} no longer sees {group}", err=True)


@users.command("list")
def users_list() -> None:
    """One line per user: name, role, state, granted groups."""
    from sqlalchemy import select

    from storage.access import granted_group_ids, list_users
    from storage.models import Group

    with _db() as s:
        names = dict(s.execute(select(Group.id, Group.name)).all())
        for u in list_users(s):
            state = "disabled" if u.disabled else ("no password" if not u.password_hash else "active")
            groups = ", ".join(names.get(g, str(g)) for g in granted_group_ids(s, u.id)) or "-"
            click.echo(f"{u.username}\t{u.role.value}\t{state}\tgroups: {groups}")
