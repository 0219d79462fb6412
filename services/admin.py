"""Administration: users, roles, disabling, group grants and the audit log (admin only, audited).

A grant is refused unless it takes effect (``storage.access.grant_problem``): a teacher sees
only classroom groups and a clinician only therapy groups, and an admin sees every group
already, so any other grant would be reported as done and change nothing. A role change can
leave old grants without effect: the grants table says so, and ``set_role`` names them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from affectline import csvsafe
from services.actor import Actor, require
from services.db import scope
from services.exports import Export, FileSink, audited_delivery, deliver
from storage import access, audit, logins, repo
from storage.logins import Policy, Unlocked
from storage.models import AuditEntry, Group, Role, SessionKind, User, UserGroup

USER_COLUMNS = ["id", "username", "role", "can_log_in", "disabled", "groups"]
GRANT_COLUMNS = ["user_id", "username", "role", "group_id", "group", "kind", "in_effect"]
AUDIT_COLUMNS = list(audit.COLUMNS)


def users(url: str, actor: Actor) -> pd.DataFrame:
    """Every user: role, whether they can log in (a password, not disabled), disabled, granted groups."""
    require(actor, "manage_users")
    with scope(url) as s:
        names = dict(s.execute(select(Group.id, Group.name)).all())
        grants: dict[int, list[str]] = {}
        for uid, gid in s.execute(select(UserGroup.user_id, UserGroup.group_id)):
            grants.setdefault(uid, []).append(names.get(gid, str(gid)))
        rows = [{"id": u.id, "username": u.username, "role": Role(u.role).value,
                 "can_log_in": u.password_hash is not None and not u.disabled, "disabled": bool(u.disabled),
                 "groups": ", ".join(sorted(grants.get(u.id, [])))} for u in access.list_users(s)]  # fmt: skip
        return pd.DataFrame(rows, columns=USER_COLUMNS)


def create_user(url: str, actor: Actor, username: str, role: Role | str, password: str | None) -> int:
    require(actor, "manage_users")
    with scope(url) as s:
        user = access.create_user(s, username, role, password or None)
        repo.audit(s, actor.audit_name, "create_user", f"user:{user.id}", username=user.username, role=Role(role).value)
        return user.id


def _user(s: Session, user_id: int) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise LookupError(f"user {user_id} does not exist")
    return user


def set_role(url: str, actor: Actor, user_id: int, role: Role | str) -> list[str]:
    """Change a role; returns the names of granted groups that no longer take effect under it."""
    require(actor, "manage_users")
    role = Role(role)
    if user_id == actor.id and role is not Role.admin:
        raise ValueError("you cannot remove your own admin role (ask another admin)")
    with scope(url) as s:
        user = _user(s, user_id)
        old = Role(user.role)
        access.set_role(s, user_id, role)
        repo.audit(s, actor.audit_name, "set_role", f"user:{user_id}", username=user.username, role=role.value,
                   previous=old.value)  # fmt: skip
        return [g.name for g in _granted(s, user_id) if not _takes_effect(role, SessionKind(g.kind))]


def set_password(url: str, actor: Actor, user_id: int, password: str | None) -> None:
    require(actor, "manage_users")
    with scope(url) as s:
        user = _user(s, user_id)
        access.set_password(s, user_id, password or None)
        repo.audit(s, actor.audit_name, "set_password", f"user:{user_id}", username=user.username, removed=not password)


def set_disabled(url: str, actor: Actor, user_id: int, disabled: bool) -> None:
    """Disable (no login; an open dashboard session ends on its next run) or re-enable a user."""
    require(actor, "manage_users")
    if user_id == actor.id and disabled:
        raise ValueError("you cannot disable your own account (ask another admin)")
    with scope(url) as s:
        user = _user(s, user_id)
        access.set_disabled(s, user_id, disabled)
        repo.audit(s, actor.audit_name, "disable_user" if disabled else "enable_user", f"user:{user_id}",
                   username=user.username)  # fmt: skip


# --- grants ---------------------------------------------------------------------------------


def _takes_effect(role: Role, kind: SessionKind) -> bool:
    return access.grant_problem(role, kind) is None


def _granted(s: Session, user_id: int) -> list[Group]:
    q = select(Group).join(UserGroup, UserGroup.group_id == Group.id).where(UserGroup.user_id == user_id)
    return list(s.scalars(q.order_by(Group.name)))


grant_problem = access.grant_problem  # why a grant would change nothing (None: it takes effect)


def grants(url: str, actor: Actor) -> pd.DataFrame:
    """One row per grant, with whether it takes effect under the user's current role."""
    require(actor, "manage_users")
    with scope(url) as s:
        q = (
            select(User.id, User.username, User.role, Group.id, Group.name, Group.kind)
            .join(UserGroup, UserGroup.user_id == User.id)
            .join(Group, Group.id == UserGroup.group_id)
            .order_by(User.username, Group.name)
        )
        rows = [{"user_id": uid, "username": un, "role": Role(r).value, "group_id": gid, "group": gn,
                 "kind": SessionKind(k).value, "in_effect": _takes_effect(Role(r), SessionKind(k))}
                for uid, un, r, gid, gn, k in s.execute(q)]  # fmt: skip
        return pd.DataFrame(rows, columns=GRANT_COLUMNS)


def grant(url: str, actor: Actor, user_id: int, group_id: int) -> None:
    """Let a user see a group; refused (ValueError) where the grant would have no effect."""
    require(actor, "manage_users")
    with scope(url) as s:
        user, group = _user(s, user_id), s.get(Group, group_id)
        if group is None:
            raise LookupError(f"group {group_id} does not exist")
        access.grant(s, user_id, group_id)  # refuses (ValueError) a grant that would have no effect
        repo.audit(s, actor.audit_name, "grant", f"user:{user_id}", username=user.username, group_id=group_id,
                   group=group.name)  # fmt: skip


def revoke(url: str, actor: Actor, user_id: int, group_id: int) -> None:
    require(actor, "manage_users")
    with scope(url) as s:
        user, group = _user(s, user_id), s.get(Group, group_id)
        if group is None or s.get(UserGroup, (user_id, group_id)) is None:
            raise LookupError(f"{user.username} has no grant of group {group_id}")
        access.revoke(s, user_id, group_id)
        repo.audit(s, actor.audit_name, "revoke", f"user:{user_id}", username=user.username, group_id=group_id,
                   group=group.name)  # fmt: skip


def revoke_impact(url: str, actor: Actor, user_id: int, group_id: int) -> str:
    """What revoking a grant takes away, in one sentence (asked before ``revoke``)."""
    from sqlalchemy import func

    from storage.models import Recording

    require(actor, "manage_users")
    with scope(url) as s:
        user, group = _user(s, user_id), s.get(Group, group_id)
        if group is None or s.get(UserGroup, (user_id, group_id)) is None:
            raise LookupError(f"{user.username} has no grant of group {group_id}")
        n = int(s.scalar(select(func.count()).select_from(Recording).where(Recording.group_id == group_id)) or 0)
        return (f"{user.username} will no longer see group {group.name} or its {n} session{'s' if n != 1 else ''} "
                "(nothing is deleted; a new grant gives them back).")  # fmt: skip


# --- audit log (storage.audit: filtered reads, each row with its target's name when written) ------

AuditFilter = audit.Filter


def audit_log(url: str, actor: Actor, f: AuditFilter = AuditFilter()) -> pd.DataFrame:
    """Audit entries matching ``f``, newest first: target id and the target's name (``storage.audit.COLUMNS``)."""
    require(actor, "view_audit")
    with scope(url) as s:
        return audit.frame(s, f)


def audit_actions(url: str, actor: Actor) -> list[str]:
    """The distinct actions recorded so far (for the filter's choices)."""
    require(actor, "view_audit")
    with scope(url) as s:
        return list(s.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action)))


def export_audit(url: str, actor: Actor, f: AuditFilter = AuditFilter()) -> bytes:
    """The filtered log as spreadsheet-safe CSV (detail as JSON); the export itself is audited."""
    return _export_audit(url, actor, f, None)[0]


def export_audit_file(url: str, actor: Actor, f: AuditFilter, path: str | Path) -> int:
    """The same export written to ``path`` inside its audit row's transaction (no row if it cannot be
    written; ``services.exports.FileSink``); returns the rows exported."""
    return _export_audit(url, actor, f, FileSink(path))[1]


def _export_audit(url: str, actor: Actor, f: AuditFilter, sink: FileSink | None) -> tuple[bytes, int]:
    require(actor, "view_audit")
    with audited_delivery(url, sink) as s:
        df = audit.frame(s, f)
        data = csvsafe.frame_to_csv(audit.export_rows(df)).encode()
        filt = {k: str(v) for k, v in vars(f).items() if v not in (None, "") and k != "limit"}
        extra = {"file": str(sink.path)} if sink is not None else {}
        repo.audit(s, actor.audit_name, "export_audit", "audit_log", rows=len(df), filter=filt, **extra)
        deliver(Export(data, "affectline_audit.csv", "text/csv", len(df), tuple(df.columns)), sink)
    return data, len(df)


# --- by name, as the command line names users and groups ------------------------------------------

check_password = access.check_password  # refuses empty or short passwords (one line)


def user_id(url: str, actor: Actor, username: str) -> int:
    """The id of user ``username``; the error lists the users there are."""
    require(actor, "manage_users")
    with scope(url) as s:
        u = access.get_user(s, username)
        if u is None:
            names = ", ".join(x.username for x in access.list_users(s)) or "none yet"
            raise LookupError(f"no user {username!r}; users: {names}")
        return u.id


def group_id(url: str, actor: Actor, name: str) -> int:
    """The id of group ``name``; the error lists the groups there are."""
    require(actor, "manage_users")
    with scope(url) as s:
        g = s.scalar(select(Group).where(Group.name == name))
        if g is None:
            names = ", ".join(s.scalars(select(Group.name).order_by(Group.name))) or "none yet"
            raise LookupError(f"no group {name!r}; groups: {names}")
        return g.id


def unlock(url: str, actor: Actor, user_id: int, policy: Policy | None = None) -> Unlocked:
    """Clear everything that refuses a user's login (audited): its failed-login count and lock, and its
    failures at every client address (``storage.logins.unlock``); returns what was cleared."""
    from dataclasses import asdict

    require(actor, "manage_users")
    with scope(url) as s:
        user = _user(s, user_id)
        done = logins.unlock(s, user.username, policy=policy or logins.Policy())
        repo.audit(s, actor.audit_name, "unlock_user", f"user:{user_id}", username=user.username, **asdict(done))
        return done
