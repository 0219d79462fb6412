"""Who is acting: a logged-in dashboard user, or the operator at the command line."""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

from sqlalchemy.orm import Session

from affectline.lines import one_line
from storage import access
from storage.labels import clean_label
from storage.models import AuditEntry, Role, User

# Every column that records who acted (audit_log.actor, tags' authors, consent's recorded_by) is 100
# characters on both databases; PostgreSQL refuses longer text, SQLite would keep 100 kB.
ACTOR_MAX = AuditEntry.__table__.c.actor.type.length
CLAIM_MAX = 50  # leaves room for "os:" + a 32-character login + " (as ...)"

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
    """The login name: $LOGNAME/$USER as ``getpass`` reads them, unless that is not one line of
    plain text (an environment variable can hold anything); then the passwd entry's name."""
    try:
        name = getpass.getuser()
        return clean_label(name, "user", max_len=32) if name == name.strip() else _passwd_name()
    except Exception:  # no passwd entry (some containers), or a name that could fake an audit line
        return _passwd_name()


def _passwd_name() -> str:
    try:
        import pwd

        return clean_label(pwd.getpwuid(os.getuid()).pw_name, "user", max_len=32)
    except Exception:
        return "unknown"


def check_claim(claim: str) -> str:
    """An ``--as`` claim as it will be recorded, or ``ValueError`` saying what is wrong with it: one
    line of printable text (no control characters, bidirectional overrides or undecodable bytes), at
    most ``CLAIM_MAX`` characters, and short enough that the audit trail's actor column keeps it whole."""
    for i, ch in enumerate(claim):
        if 0xD800 <= ord(ch) <= 0xDFFF:  # bytes that were not UTF-8 (Python's surrogateescape)
            raise ValueError(f"--as claim '{one_line(claim[:60])}' is not valid UTF-8 text (position {i + 1})")
    text = clean_label(claim, "--as claim", max_len=CLAIM_MAX)
    name = Actor(None, f"os:{os_user()}", Role.admin, None, claim=text).audit_name
    if len(name) > ACTOR_MAX:
        raise ValueError(f"--as claim {text!r} makes the audit name {len(name)} characters long; at most {ACTOR_MAX}")
    return text


def operator(claim: str | None = None) -> Actor:
    """The person at the command line: whoever can run the CLI can open the database, so they
    act with every permission, and the audit trail records their operating-system account.
    ``claim`` is checked (``check_claim``): a forged line or an over-long name never reaches a table."""
    return Actor(None, f"os:{os_user()}", Role.admin, None, claim=check_claim(claim) if claim else None)


def require(actor: Actor, action: str) -> None:
    if not actor.can(action):
        raise PermissionError(f"{actor.username} ({actor.role.value}) may not {action.replace('_', ' ')}")
