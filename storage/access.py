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
    manage_people       x        x         x     name and enrol persons of visible groups
    merge_people                           x     merge / split persons (rewrites whose timeline is whose)
    delete_person                          x     delete a person and their timelines (audited)
    delete_session                         x     delete a session (audited)
    manage_users                           x     create users, set roles and passwords, grant groups
    view_audit                             x     read the audit log
    manage_privacy                         x     consent records, consent-required groups, retention (audited)

Passwords are hashed with argon2id (``argon2-cffi``, its RFC 9106 low-memory profile). Hashes
of the earlier ``pbkdf2_sha256$<iterations>$<salt hex>$<hash hex>`` form still verify and are
replaced by an argon2id hash at the next successful login (``authenticate``). A password
must have at least ``MIN_PASSWORD_LENGTH`` characters; a user with no password hash, or a
disabled user, cannot log in. Throttling and lockout of repeated failures: ``storage.logins``.
"""

from __future__ import annotations

from affectline import kinds

import hashlib
import hmac
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.labels import clean_label
from storage.models import Group, LoginSession, Recording, Role, SessionKind, User, UserGroup, utcnow

MIN_PASSWORD_LENGTH = 12  # NIST SP 800-63B: length, not composition rules, makes a password hard to guess
MAX_PASSWORD_LENGTH = 1024  # hashing a megabyte per guess would be a cheap denial of service
_LEGACY = "pbkdf2_sha256"
_HASHER = PasswordHasher()  # argon2id; parameters live in each hash, so they can be raised later

ACTIONS = (
    "view_sessions",
    "upload",
    "export",
    "review",
    "tag",
    "manage_people",
    "merge_people",
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
    "merge_people": frozenset({Role.admin}),
    "delete_person": frozenset({Role.admin}),
    "delete_session": frozenset({Role.admin}),
    "manage_users": frozenset({Role.admin}),
    "view_audit": frozenset({Role.admin}),
    "manage_privacy": frozenset({Role.admin}),
}
assert set(PERMISSIONS) == set(ACTIONS)

# The one kind of group each non-admin role works with.
ROLE_KIND = kinds.ROLE_KIND


# --- passwords ---------------------------------------------------------------------------


def check_password(password: str | None) -> str:
    """``password`` if acceptable, else ``ValueError`` saying why (never echoes the password)."""
    if not password:
        raise ValueError("the password must not be empty")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password is {len(password)} characters long; at least {MIN_PASSWORD_LENGTH} are needed")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")
    return password


def hash_password(password: str) -> str:
    """An argon2id hash (salted, ``$argon2id$v=19$m=...`` form) of an acceptable password."""
    return _HASHER.hash(check_password(password))


def legacy_pbkdf2_hash(password: str, iterations: int = 240_000, salt: bytes | None = None) -> str:
    """A hash in the pre-argon2 form (what older databases hold); kept to test their upgrade."""
    import secrets

    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{_LEGACY}${iterations}${salt.hex()}${digest.hex()}"


def verify_password(stored: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored`` (argon2id, or a legacy PBKDF2 hash)."""
    if not stored or not password or len(password) > MAX_PASSWORD_LENGTH:
        return False
    if stored.startswith(_LEGACY + "$"):
        try:
            _, iters, salt_hex, hash_hex = stored.split("$")
            digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt_hex), int(iters))
        except ValueError:  # malformed stored hash: never matches
            return False
        return hmac.compare_digest(digest.hex(), hash_hex)
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """Whether a hash that just verified should be replaced (legacy form, or weaker parameters)."""
    return stored.startswith(_LEGACY + "$") or _HASHER.check_needs_rehash(stored)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Checked when the username is unknown (or has no password), so that costs as long as a wrong password."""
    return _HASHER.hash("not a password of anyone here")


# --- users -------------------------------------------------------------------------------


def create_user(s: Session, username: str, role: Role | str, password: str | None = None) -> User:
    """Add a user; without a password they cannot log in (until ``set_password``)."""
    username = clean_label(username, "username", max_len=100)
    if get_user(s, username) is not None:
        raise ValueError(f"user {username!r} already exists")
    try:
        role = Role(role)
    except ValueError:
        raise ValueError(f"role {role!r} is not one of {[r.value for r in Role]}") from None
    user = User(username=username, role=role, password_hash=None if password is None else hash_password(password),
                disabled=False)  # fmt: skip
    s.add(user)
    s.flush()
    return user


def get_user(s: Session, username: str) -> User | None:
    return s.scalar(select(User).where(User.username == username.strip()))


def list_users(s: Session) -> list[User]:
    return list(s.scalars(select(User).order_by(User.username)))


def set_password(s: Session, user_id: int, password: str | None) -> None:
    """Set or (with ``None``) remove a user's password; their open dashboard logins end."""
    user = _user(s, user_id)
    user.password_hash = None if password is None else hash_password(password)
    end_logins(s, user_id)


def set_role(s: Session, user_id: int, role: Role | str) -> None:
    _user(s, user_id).role = Role(role)


def set_disabled(s: Session, user_id: int, disabled: bool) -> None:
    """Disable (cannot log in; open dashboard logins end) or re-enable a user. Kept, not deleted:
    the audit trail names them."""
    user = _user(s, user_id)
    user.disabled = bool(disabled)
    if disabled:
        end_logins(s, user_id)
    s.flush()


def end_logins(s: Session, user_id: int) -> None:
    """Close every dashboard login of a user (``storage.logins`` sessions)."""
    s.execute(delete(LoginSession).where(LoginSession.user_id == user_id))


def authenticate(s: Session, username: str, password: str) -> User | None:
    """The user when the name and password match and the user is enabled, else None (no hint
    which was wrong). A legacy or outdated hash is replaced by a fresh argon2id one. Counting
    and locking out failures is ``storage.logins.attempt``'s job, not this function's."""
    user = get_user(s, username) if username else None
    if user is None or not user.password_hash:
        verify_password(_dummy_hash(), password)  # same cost as a real check
        return None
    if not verify_password(user.password_hash, password):
        return None
    if user.disabled:
        return None
    if needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)  # the password was fine when set; do not re-check its length
    user.last_login_at = utcnow()
    s.flush()
    return user


def _user(s: Session, user_id: int) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise LookupError(f"user {user_id} does not exist")
    return user


# --- grants and visibility ---------------------------------------------------------------


def grant_problem(role: Role | str, kind: SessionKind | str) -> str | None:
    """Why granting a ``kind`` group to a ``role`` would change nothing, or None when it takes effect."""
    role, kind = Role(role), SessionKind(kind)
    if role is Role.admin:
        return "an administrator already sees every group"
    if ROLE_KIND[role] is not kind:
        return f"a {role.value} sees only {ROLE_KIND[role].value} groups, not {kind.value} ones"
    return None


def grant(s: Session, user_id: int, group_id: int) -> None:
    """Give a user access to a group (idempotent). Refused (``ValueError``) where it would have
    no effect: a therapy group to a teacher, a class to a clinician, anything to an admin."""
    user = _user(s, user_id)
    group = s.get(Group, group_id)
    if group is None:
        raise LookupError(f"group {group_id} does not exist")
    if why := grant_problem(user.role, group.kind):
        raise ValueError(f"not granted: {why} ({group.name} to {user.username})")
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
