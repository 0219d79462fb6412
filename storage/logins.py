"""Password logins that resist guessing, and the dashboard's login sessions.

``attempt`` is the one way to log in with a password. Failures are counted twice: per
account name (a guesser aiming at one teacher) and per client address (a guesser trying
many names from one place), each in a ``login_throttle`` row:

- after ``throttle_after`` failures on an account, each further failure makes its next try
  wait ``throttle_base_s`` * 2^k seconds (1, 2, 4 ... s, at most ``throttle_max_s``): slow
  enough to stop scripted guessing, quick enough that a teacher who mistypes twice barely
  notices (an address is not throttled, only locked: a school's machines share one);
- at ``max_failures`` (account) or ``client_max_failures`` (address) the key is locked for
  ``lockout``; while waiting or locked, even the right password is refused, unchecked;
- failures older than ``window`` are forgotten; a successful login clears its account's
  count (not the address's: one's own account must not reset a guesser's budget).

Every failure and refusal is an audit row (``login_failed``, ``login_refused``), as is every
login. The account name is compared case-insensitively for counting, so ``Admin`` and
``admin`` share one budget; unknown names are counted too (and answer the same), so the
replies do not tell which names exist.

A successful login opens a ``LoginSession``: the browser keeps a random token (a cookie),
the database only its SHA-256. ``resume`` accepts it while the user is enabled and the
session was used within the idle time; ``close`` ends it (logout).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import access, audit
from storage.models import LoginSession, LoginThrottle, User

Outcome = Literal["ok", "wrong", "wait", "locked"]


@dataclass(frozen=True)
class Policy:
    max_failures: int = 5
    client_max_failures: int = 20  # a school's pupils and staff may share one address
    throttle_after: int = 3
    throttle_base_s: float = 1.0
    throttle_max_s: float = 60.0
    lockout: timedelta = timedelta(minutes=15)
    window: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class LoginResult:
    outcome: Outcome
    user_id: int | None = None
    token: str | None = None  # the new login session's token (outcome "ok")
    retry_after_s: float = 0.0  # "wait" and "locked": how long until the next try is looked at

    @property
    def message(self) -> str:
        """What the login form says (the same for an unknown name and a wrong password)."""
        if self.outcome == "ok":
            return "Logged in."
        if self.outcome == "wrong":
            return "Unknown username or wrong password."
        if self.outcome == "wait":
            return f"Too many failed logins: wait {max(1, round(self.retry_after_s))} s before trying again."
        minutes = max(1, round(self.retry_after_s / 60))
        return f"Too many failed logins: locked for {minutes} min. An administrator can see the attempts in the audit log."


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(t: datetime | None) -> datetime | None:
    # SQLite hands DateTime(timezone=True) back without its zone; every time here is UTC.
    return t if t is None or t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def _keys(username: str, client: str) -> list[tuple[str, str]]:
    return [("user", username.strip().lower()[:200]), ("client", (client or "unknown")[:200])]


def _row(s: Session, scope: str, key: str) -> LoginThrottle | None:
    return s.get(LoginThrottle, (scope, key))


def blocked_for(s: Session, username: str, client: str, policy: Policy = Policy(),
                now: datetime | None = None) -> tuple[Outcome, float]:  # fmt: skip
    """("ok", 0) when a try may be checked now, else ("wait" | "locked", seconds left)."""
    now = now or _now()
    worst: tuple[Outcome, float] = ("ok", 0.0)
    for scope, key in _keys(username, client):
        row = _row(s, scope, key)
        until = _aware(row.locked_until) if row is not None else None
        if until is not None and until > now:
            left = (until - now).total_seconds()
            kind: Outcome = "locked" if row.failures >= _limit(scope, policy) else "wait"
            if left > worst[1]:
                worst = (kind, left)
    return worst


def _limit(scope: str, policy: Policy) -> int:
    return policy.max_failures if scope == "user" else policy.client_max_failures


def _record_failure(s: Session, scope: str, key: str, policy: Policy, now: datetime) -> LoginThrottle:
    row = _row(s, scope, key)
    if row is None:
        try:
            with s.begin_nested():  # two failures at once for a new key: one inserts, the other counts on it
                row = LoginThrottle(scope=scope, key=key, failures=0)
                s.add(row)
        except IntegrityError:
            row = _row(s, scope, key)
    last = _aware(row.last_failure_at)
    if last is not None and now - last > policy.window:
        row.failures = 0  # an old run of failures is forgotten
    row.failures += 1
    row.last_failure_at = now
    limit = _limit(scope, policy)
    if row.failures >= limit:
        row.locked_until = now + policy.lockout
    elif scope == "user" and row.failures >= policy.throttle_after:
        wait = min(policy.throttle_base_s * 2 ** (row.failures - policy.throttle_after), policy.throttle_max_s)
        row.locked_until = now + timedelta(seconds=wait)
    s.flush()
    return row


def attempt(s: Session, username: str, password: str, client: str, *, policy: Policy = Policy(),
            now: datetime | None = None) -> LoginResult:  # fmt: skip
    """Check a login; count, lock out and audit as described in the module docstring.

    Runs inside the caller's transaction: commit it whatever the outcome (the failure count
    and its audit row are the point)."""
    now = now or _now()
    name = (username or "").strip()
    client = client or "unknown"
    known = access.get_user(s, name) if name else None
    target = f"user:{known.id}" if known is not None else f"login:{name[:150]}"
    actor = f"{name[:60] or '(no name)'} from {client}"
    kind, left = blocked_for(s, name, client, policy, now)
    if kind != "ok":
        audit.write(s, actor, "login_refused", target, client=client, reason=kind, retry_after_s=round(left, 1))
        return LoginResult(kind, retry_after_s=left)
    user = access.authenticate(s, name, password)
    if user is None:
        rows = [_record_failure(s, scope, key, policy, now) for scope, key in _keys(name, client)]
        disabled = known is not None and known.disabled
        audit.write(s, actor, "login_failed", target, client=client, account_failures=rows[0].failures,
                    client_failures=rows[1].failures, locked=any(r.failures >= _limit(r.scope, policy) for r in rows),
                    **({"disabled": True} if disabled else {}))  # fmt: skip
        return LoginResult("wrong")
    s.execute(delete(LoginThrottle).where(LoginThrottle.scope == "user", LoginThrottle.key == _keys(name, client)[0][1]))
    token = open_session(s, user.id, client, now=now)
    audit.write(s, user.username, "login", f"user:{user.id}", client=client)
    return LoginResult("ok", user_id=user.id, token=token)


def unlock(s: Session, username: str) -> int:
    """Forget an account's failed logins and lockout (an administrator's decision); returns rows cleared."""
    key = _keys(username, "")[0][1]
    return s.execute(delete(LoginThrottle).where(LoginThrottle.scope == "user", LoginThrottle.key == key)).rowcount or 0


# --- login sessions ---------------------------------------------------------------------------


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(s: Session, user_id: int, client: str = "", *, now: datetime | None = None) -> str:
    """A new login session for ``user_id``; returns its token (kept by the browser only)."""
    now = now or _now()
    token = secrets.token_urlsafe(32)
    s.add(LoginSession(token_hash=_digest(token), user_id=user_id, client=(client or "")[:100], created_at=now,
                       last_seen_at=now))  # fmt: skip
    s.flush()
    return token


def resume(s: Session, token: str | None, idle: timedelta, *, now: datetime | None = None,
           touch_every: timedelta = timedelta(seconds=15)) -> int | None:  # fmt: skip
    """The user id of a live login session, else None (unknown token, idle too long, user
    disabled or gone; an expired session is removed). Marks the session as used."""
    if not token:
        return None
    now = now or _now()
    row = s.scalar(select(LoginSession).where(LoginSession.token_hash == _digest(token)))
    if row is None:
        return None
    user = s.get(User, row.user_id)
    if user is None or user.disabled or now - _aware(row.last_seen_at) > idle:
        s.delete(row)
        s.flush()
        return None
    if now - _aware(row.last_seen_at) >= touch_every:
        row.last_seen_at = now  # not on every rerun: a write per click is not needed to measure idleness
    return row.user_id


def close(s: Session, token: str | None) -> None:
    """End a login session (logout); unknown tokens are ignored."""
    if token:
        s.execute(delete(LoginSession).where(LoginSession.token_hash == _digest(token)))


def purge_idle(s: Session, idle: timedelta, *, now: datetime | None = None) -> int:
    """Delete sessions idle for longer than ``idle``; returns how many."""
    cutoff = (now or _now()) - idle
    return s.execute(delete(LoginSession).where(LoginSession.last_seen_at < cutoff)).rowcount or 0
