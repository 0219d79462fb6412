"""Who is acting: a logged-in dashboard user, or the operator at the command line."""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from sqlalchemy.orm import Session

from storage import access
from storage.models import Role, User

GroupIds = tuple[int, ...] | None  # hashable form of visible_group_ids; None = every group


@dataclass(frozen=True)
class Actor:
    """The acting user as the services need them: a plain value, safe to keep in session state.

    ``claim`` is a name the operator said they act for (``affectline --as NAME``): recorded in
    the audit trail as a claim beside the operating-system user, never trusted as identity.
    ``author``: a tag's ``--author`` other than the default, recorded beside them too.
    """

    id: int | None
    username: str
    role: Role
    group_ids: GroupIds
    claim: str | None = None
    author: str | None = None

    def can(self, action: str) -> bool:
        return access.can(self, action)  # type: ignore[arg-type]  # only .role is read

    def sees(self, group_id: int | None) -> bool:
        return self.group_ids is None or group_id in self.group_ids

    @property
    def audit_name(self) -> str:
        """The actor as written in the audit log."""
        name = f"{self.username} (as {self.claim})" if self.claim else self.username
        return f"{name} (author {self.author})" if self.author else name

    @property
    def tag_author(self) -> str:
        """The name a tag (or tag version) shows as its author: ``author``, the claim, else the user."""
        return self.author or self.claim or self.username.removeprefix("os:")


def actor_for_user(s: Session, user_id: int) -> Actor | None:
    """Re-read the user and their grants (never cached: a revoked grant takes effect at once)."""
    user = s.get(User, user_id)
    if user is None or user.disabled:  # a disabled user acts nowhere, from their next request on
        return None
    ids = access.visible_group_ids(s, user)
    return Actor(user.id, user.username, Role(user.role), None if ids is None else tuple(ids))


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return "unknown"


def operator(claim: str | None = None) -> Actor:
    """The person at the command line: whoever can run the CLI can open the database, so they
    act with every permission, and the audit trail records their operating-system account."""
    return Actor(None, f"os:{os_user()}", Role.admin, None, claim=claim or None)


def require(actor: Actor, action: str) -> None:
    if not actor.can(action):
        raise PermissionError(f"{actor.username} ({actor.role.value}) may not {action.replace('_', ' ')}")
