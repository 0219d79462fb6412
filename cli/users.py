"""``affectline users``: dashboard accounts, roles, grants; every change audited.

Attached to the main CLI lazily by ``cli.main``. The first administrator can only be made
here (``users add NAME --role admin``): the dashboard never offers it to a visitor. The
audit trail names the operator's OS account and their ``affectline --as NAME`` claim.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

ROLES = ("teacher", "clinician", "admin")


@contextmanager
def _errors() -> Iterator[None]:
    """Lookup and validation errors become one-line CLI errors (nothing stored)."""
    try:
        yield
    except (LookupError, ValueError) as e:
        raise click.ClickException(str(e.args[0]) if e.args else str(e)) from None


def _ctx():
    """(database url, the acting operator) for ``services.admin``."""
    from cli.common import acting, database_url

    return database_url(), acting()


def _password(ctx, param, value):
    from services.admin import check_password

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
    from services import admin

    url, me = _ctx()
    with _errors():
        uid = admin.create_user(url, me, username, role, password)
        name = admin.users(url, me).set_index("id").loc[uid, "username"]
    click.echo(f"user {name} ({role}) created", err=True)


@users.command("passwd")
@click.argument("username")
@password_option
def users_passwd(username: str, password: str) -> None:
    """Set USERNAME's password; their open dashboard logins end (audited)."""
    from services import admin

    url, me = _ctx()
    with _errors():
        admin.set_password(url, me, admin.user_id(url, me, username), password)
    click.echo(f"password of {username} changed", err=True)


@users.command("role")
@click.argument("username")
@click.argument("role", type=click.Choice(ROLES))
def users_role(username: str, role: str) -> None:
    """Change USERNAME's role (audited); grants that stop taking effect are named."""
    from services import admin

    url, me = _ctx()
    with _errors():  # services.admin: the one rule of which grants take effect (storage.access.grant_problem)
        stale = admin.set_role(url, me, admin.user_id(url, me, username), role)
    click.echo(f"{username} is now {role}", err=True)
    if stale:
        click.echo(f"warning: these grants no longer take effect: {', '.join(stale)}", err=True)


@users.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """USERNAME can no longer log in; open dashboard logins end (audited). The account stays."""
    from services import admin

    url, me = _ctx()
    with _errors():
        admin.set_disabled(url, me, admin.user_id(url, me, username), True)
    click.echo(f"{username} disabled", err=True)


@users.command("enable")
@click.argument("username")
def users_enable(username: str) -> None:
    """Let a disabled USERNAME log in again (audited)."""
    from services import admin

    url, me = _ctx()
    with _errors():
        admin.set_disabled(url, me, admin.user_id(url, me, username), False)
    click.echo(f"{username} enabled", err=True)


@users.command("unlock")
@click.argument("username")
def users_unlock(username: str) -> None:
    """Clear everything that refuses USERNAME's login (audited): its failed-login count and lock, and its
    failures at every client address, so no locked address refuses it either. Says what it cleared."""
    from affectline.settings import get_settings
    from services import admin, logins

    url, me = _ctx()
    with _errors():
        done = admin.unlock(url, me, admin.user_id(url, me, username), policy=logins.policy(get_settings()))
    click.echo(done.sentence(username), err=True)


@users.command("grant")
@click.argument("username")
@click.argument("group")
def users_grant(username: str, group: str) -> None:
    """Let USERNAME see GROUP (a class for a teacher, a caseload for a clinician); audited."""
    from services import admin

    url, me = _ctx()
    with _errors():  # refuses a grant that would have no effect
        admin.grant(url, me, admin.user_id(url, me, username), admin.group_id(url, me, group))
    click.echo(f"{username} may now see {group}", err=True)


@users.command("revoke")
@click.argument("username")
@click.argument("group")
def users_revoke(username: str, group: str) -> None:
    """Take GROUP away from USERNAME (audited)."""
    from services import admin

    url, me = _ctx()
    with _errors():
        try:
            admin.revoke(url, me, admin.user_id(url, me, username), admin.group_id(url, me, group))
        except LookupError as e:
            if "has no grant" in str(e):
                raise LookupError(f"{username} has no grant of {group!r}") from None
            raise
    click.echo(f"{username} no longer sees {group}", err=True)


@users.command("list")
def users_list() -> None:
    """One line per user: name, role, state, granted groups."""
    from services import admin

    url, me = _ctx()
    with _errors():
        table = admin.users(url, me)
    for u in table.itertuples(index=False):
        state = "disabled" if u.disabled else ("active" if u.can_log_in else "no password")
        click.echo(f"{u.username}\t{u.role}\t{state}\tgroups: {u.groups or '-'}")
