"""Users, passwords, group grants and the permission table.

Access is decided in two steps:

1. ``can(user, action)``: may this role do this kind of thing at all? (table below)
2. ``visible_group_ids(s, user)``: on which groups? Every dashboard query is
   filtered by it. A teacher sees only the *classroom* groups granted to them, a
   clinician only the *therapy* groups granted to them (a grant of the wrong kind
   gives nothing), an admin everything (``None``).

Permission table (``PERMISSIONS``)::

    action           teacher  clinician  admin   what it allows
    view_sessions       x        x         x     list and open sessions of visible groups
    upload              x        x         x     upload a video and start an analysis
    export              x        x         x     download a session's timelines (audited)
    review                       x         x     therapy review page: personal labels, tags
    tag                          x         x     add or delete clinician tags
    manage_people       x        x         x     rename / enrol / merge / split persons of visible groups
    delete_person       x        x         x     delete a person of a visible group and their timelines (audited)
    delete_session                         x     delete a session (audited)
    manage_users                           x     create users, set roles and passwords, grant groups
    view_audit                             x     read the audit log
    manage_privacy                         x     consent records, consent-required groups, retention (audited)

Passwords are stored as ``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>``;
a user with no password hash cannot log in with a password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import Group, Recording, Role, SessionKind, User, UserGroup

PBKDF2_ITERATIONS = 240_000
_ALGO = "pbkdf2_sha256"

ACTIONS = (
    "view_sessions",
    "upload",
    "export",
    "review",
    "tag",
    "manage_people",
    "delete_person",
    "delete_session",
    "manage_users",
    "view_audit",
    "manage_privacy",
)

_ALL = frozenset(Role)
PERMISSIONS: dict[str, frozenset[Role]] = {
    "view_sessions": _ALL,
    "upload": _ALL,
    "export": _ALL,
    "review": frozenset({Role.clinician, Role.admin}),
    "tag": frozenset({Role.clinician, Role.admin}),
    "manage_people": _ALL,
    "delete_person": _ALL,
    "delete_session": frozenset({Role.admin}),
    "manage_users": frozenset({Role.admin}),
    "view_audit": frozenset({Role.admin}),
    "manage_privacy": frozenset({Role.admin}),
}
assert set(PERMISSIONS) == set(ACTIONS)

# The one kind of group each non-admin role works with.
ROLE_KIND: dict[Role, SessionKind] = {Role.teacher: SessionKind.classroom, Role.clinician: SessionKind.therapy}


# --- passwords ---------------------------------------------------------------------------


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """A salted PBKDF2-SHA256 hash in ``algo$iterations$salt$hash`` form."""
    if not password:
        raise ValueError("password must not be empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{_ALGO}${iterations}${salt.hex()}${digest.hex()}"


def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored``; compares in constant time."""
    if not stored or not password:
        return False
    try:
        algo, iters, salt_hex, hash_hex = stored.split("$")
        if algo != _ALGO:
            return False
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt_hex), int(iters))
    except ValueError:  # malformed stored hash: never matches
        return False
    return hmac.compare_digest(digest.hex(), hash_hex)


# A fixed hash checked when the username is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = f"{_ALGO}${PBKDF2_ITERATIONS}${'00' * 16}${'00' * 32}"


# --- users -------------------------------------------------------------------------------


def create_user(s: Session, username: str, role: Role | str, password: str | None = None) -> User:
    """Add a user; without a password they cannot log in (until ``set_password``)."""
    username = username.strip()
    if not username:
        raise ValueError("username must not be empty")
    if s.scalar(select(User).where(User.username == username)) is not None:
        raise ValueError(f"user {username!r} already exists")
    try:
        role = Role(role)
    except ValueError:
        raise ValueError(f"role {role!r} is not one of {[r.value for r in Role]}") from None
    user = User(username=username, role=role, password_hash=hash_password(password) if password else None)
    s.add(user)
    s.flush()
    return user


def get_user(s: Session, username: str) -> User | None:
    return s.scalar(select(User).where(User.username == username))


def list_users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.username)))


def set_password(s: Session, user_id: int, password: str | None) -> None:
    """Set or (with ``None``) remove a user's password."""
    user = _user(s, user_id)
    user.password_hash = hash_password(password) if password else None


def set_role(s: Session, user_id: int, role: Role | str) -> None:
    _user(s, user_id).role = Role(role)


def authenticate(s: Session, username: str, password: str) -> User | None:
    """The user when the name and password match, else None (no hint which was wrong)."""
    user = get_user(s, username.strip())
    if user is None:
        verify_password(_DUMMY_HASH, password)  # same cost as a real check
        return None
    return user if verify_password(user.password_hash, password) else None


def _user(s: Session, user_id: int) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise LookupError(f"user {user_id} does not exist")
    return user


# --- grants and visibility ---------------------------------------------------------------


def grant(s: Session, user_id: int, group_id: int) -> None:
    """Give a user access to a group (idempotent)."""
    _user(s, user_id)
    if s.get(Group, group_id) is None:
        raise LookupError(f"group {group_id} does not exist")
    if s.get(UserGroup, (user_id, group_id)) is None:
        s.add(UserGroup(user_id=user_id, group_id=group_id))
        s.flush()


def revoke(s: Session, user_id: int, group_id: int) -> None:
    s.execute(delete(UserGroup).where(UserGroup.user_id == user_id, UserGroup.group_id == group_id))


def granted_group_ids(s: Session, user_id: int) -> list[int]:
    """Groups granted to a user, whatever their kind."""
    return list(s.scalars(select(UserGroup.group_id).where(UserGroup.user_id == user_id).order_by(UserGroup.group_id)))


def visible_group_ids(s: Session, user: User) -> list[int] | None:
    """The groups whose sessions and persons ``user`` may see; ``None`` means all (admin)."""
    role = Role(user.role)
    if role is Role.admin:
        return None
    q = (
        select(Group.id)
        .join(UserGroup, UserGroup.group_id == Group.id)
        .where(UserGroup.user_id == user.id, Group.kind == ROLE_KIND[role])
        .order_by(Group.id)
    )
    return list(s.scalars(q))


def can(user: User, action: str) -> bool:
    """Whether ``user``'s role allows ``action`` (see the table in this module's docstring)."""
    if action not in PERMISSIONS:
        raise KeyError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    return Role(user.role) in PERMISSIONS[action]


def can_see_session(s: Session, user: User, session_id: int) -> bool:
    """Whether the session exists and belongs to a group ``user`` may see."""
    rec = s.get(Recording, session_id)
    if rec is None:
        return False
    groups = visible_group_ids(s, user)
    return groups is None or rec.group_id in groups
