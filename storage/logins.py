"""Password logins that resist guessing, and the dashboard's login sessions.

``attempt`` is the one way to log in with a password. Each failure is counted three times, each in a
``login_throttle`` row (scope, key):

- ``user`` (the account name, from anywhere): after ``throttle_after`` failures each further failure
  makes the account's next try wait ``throttle_base_s`` * 2^k seconds (1, 2, 4 ... s, at most
  ``throttle_max_s``); at ``max_failures`` the account is locked for ``lockout``. This stops guessing
  one account from many addresses.
- ``pair`` (address and account name): how often this name failed from this address.
- ``client`` (the address): at ``client_max_failures`` failures, whatever the names, the address is
  locked for ``lockout``. A locked address does not lock out accounts that have not failed from it: a
  name with fewer than ``pair_max_failures`` failures from the address is still checked, but only one
  such check per ``locked_check_interval_s`` per address (a guesser spraying names there is slowed to that
  rate; a teacher behind the same school address at worst waits that long), and a name that reached
  ``pair_max_failures`` from the address is refused there until the lock ends.

While waiting or locked, even the right password is refused, unchecked. Failures older than ``window``
are forgotten; a successful login clears its account's count and its (address, account) count, never
the address's (one's own account must not reset a guesser's budget). ``unlock`` clears everything that
refuses one account: its account row and its rows at every address.

Every failure and refusal is an audit row (``login_failed``, ``login_refused``), as is every login, with
the client address (``affectline.netaddr``: the socket's peer unless a trusted proxy forwarded it). The
account name is compared case-insensitively for counting, so ``Admin`` and ``admin`` share one budget;
unknown names are counted too and answered the same, so the replies do not tell which names exist.

A successful login opens a ``LoginSession``: the browser keeps a random token (a cookie),
the database only its SHA-256. ``resume`` accepts it while the user is enabled and the
session was used within the idle time; ``close`` ends it (logout).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
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
    pair_max_failures: int = 3  # at a locked address: a name failed this often from it is refused there
    locked_check_interval_s: float = 1.0  # at a locked address: one checked try per this long

    @classmethod
    def from_settings(cls, settings) -> Policy:
        """The policy ``affectline.settings.Settings`` asks for (the lockout is also the counting window)."""
        lock = timedelta(minutes=settings.login_lockout_minutes)
        return cls(max_failures=settings.login_max_failures, client_max_failures=settings.login_client_max_failures,
                   lockout=lock, window=lock)  # fmt: skip


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


def _name(username: str) -> str:
    return (username or "").strip().lower()[:150]


def _addr(client: str) -> str:
    return (client or "unknown")[:48]


def _keys(username: str, client: str) -> dict[str, str]:
    """scope -> key. A pair key is "address name": an address has no space, so it splits at the first one."""
    name, addr = _name(username), _addr(client)
    return {"user": name, "pair": f"{addr} {name}", "client": addr}


def _row(s: Session, scope: str, key: str) -> LoginThrottle | None:
    return s.get(LoginThrottle, (scope, key))


def _live(row: LoginThrottle | None, policy: Policy, now: datetime) -> int:
    """The row's failures, or 0 when its last one is older than the window."""
    if row is None:
        return 0
    last = _aware(row.last_failure_at)
    return row.failures if last is not None and now - last <= policy.window else 0


def _locked_left(row: LoginThrottle | None, now: datetime) -> float:
    until = _aware(row.locked_until) if row is not None else None
    return (until - now).total_seconds() if until is not None and until > now else 0.0


def blocked_for(s: Session, username: str, client: str, policy: Policy = Policy(),
                now: datetime | None = None) -> tuple[Outcome, float]:  # fmt: skip
    """("ok", 0) when a try may be checked now, else ("wait" | "locked", seconds left)."""
    now = now or _now()
    keys = _keys(username, client)
    account = _row(s, "user", keys["user"])
    if (left := _locked_left(account, now)) > 0:
        return ("locked" if account.failures >= policy.max_failures else "wait"), left
    address = _row(s, "client", keys["client"])
    if (left := _locked_left(address, now)) > 0:  # the address is locked: only names that have not failed here
        if _live(_row(s, "pair", keys["pair"]), policy, now) >= policy.pair_max_failures:
            return "locked", left
        last = _aware(_row(s, "check", keys["client"]).last_failure_at) if _row(s, "check", keys["client"]) else None
        if last is not None and (gap := (now - last).total_seconds()) < policy.locked_check_interval_s:
            return "wait", policy.locked_check_interval_s - gap
    return "ok", 0.0


def _bump(s: Session, scope: str, key: str, policy: Policy, now: datetime, count: bool = True) -> LoginThrottle:
    row = _row(s, scope, key)
    if row is None:
        try:
            with s.begin_nested():  # two failures at once for a new key: one inserts, the other counts on it
                row = LoginThrottle(scope=scope, key=key, failures=0)
                s.add(row)
        except IntegrityError:
            row = _row(s, scope, key)
    if count:
        row.failures = _live(row, policy, now) + 1  # an old run of failures is forgotten
    row.last_failure_at = now
    return row


def _record_failure(s: Session, username: str, client: str, policy: Policy, now: datetime) -> dict[str, LoginThrottle]:
    keys = _keys(username, client)
    rows = {scope: _bump(s, scope, key, policy, now) for scope, key in keys.items()}
    account, address = rows["user"], rows["client"]
    if account.failures >= policy.max_failures:
        account.locked_until = now + policy.lockout
    elif account.failures >= policy.throttle_after:
        wait = min(policy.throttle_base_s * 2 ** (account.failures - policy.throttle_after), policy.throttle_max_s)
        account.locked_until = now + timedelta(seconds=wait)
    if address.failures >= policy.client_max_failures and _locked_left(address, now) <= 0:
        address.locked_until = now + policy.lockout  # from the failure that reached the limit, not extended
    s.flush()
    return rows


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
    keys = _keys(name, client)
    if _locked_left(_row(s, "client", keys["client"]), now) > 0:
        _bump(s, "check", keys["client"], policy, now, count=False)  # the locked address's one check per interval
    user = access.authenticate(s, name, password)
    if user is None:
        rows = _record_failure(s, name, client, policy, now)
        disabled = known is not None and known.disabled
        audit.write(s, actor, "login_failed", target, client=client, account_failures=rows["user"].failures,
                    address_account_failures=rows["pair"].failures, client_failures=rows["client"].failures,
                    locked=rows["user"].failures >= policy.max_failures
                    or rows["client"].failures >= policy.client_max_failures,
                    **({"disabled": True} if disabled else {}))  # fmt: skip
        return LoginResult("wrong")
    s.execute(delete(LoginThrottle).where(LoginThrottle.scope.in_(("user", "pair")),
                                          LoginThrottle.key.in_((keys["user"], keys["pair"]))))  # fmt: skip
    token = open_session(s, user.id, client, now=now)
    audit.write(s, user.username, "login", f"user:{user.id}", client=client)
    return LoginResult("ok", user_id=user.id, token=token)


@dataclass(frozen=True)
class Unlocked:
    """What ``unlock`` cleared for one account."""

    account_failures: int = 0  # the account's own count (0: it had none)
    account_locked: bool = False  # it was locked or waiting
    addresses: tuple[str, ...] = field(default_factory=tuple)  # addresses where it had failed (now cleared)
    refused_at: tuple[str, ...] = field(default_factory=tuple)  # of those, locked addresses that refused it

    @property
    def anything(self) -> bool:
        return bool(self.account_failures or self.account_locked or self.addresses)

    def sentence(self, username: str) -> str:
        if not self.anything:
            return f"{username}: nothing to clear (no failed logins, no lock)"
        parts = []
        if self.account_failures or self.account_locked:
            parts.append(f"the account's {self.account_failures} failed login(s)"
                         + (" and its lock" if self.account_locked else ""))  # fmt: skip
        if self.addresses:
            parts.append(f"its failures from {len(self.addresses)} address(es) ({', '.join(self.addresses)})")
        if self.refused_at:
            parts.append(f"so the locked address(es) {', '.join(self.refused_at)} no longer refuse it")
        return f"{username} unlocked: cleared " + "; ".join(parts)


def unlock(s: Session, username: str, *, policy: Policy = Policy(), now: datetime | None = None) -> Unlocked:
    """Clear everything that refuses ``username`` (an administrator's decision): the account's failures and
    lock, and its failures at every address, so no address lock refuses it either. Other accounts' counts
    and the addresses' own counts stay (a guesser's budget is not reset)."""
    now = now or _now()
    name = _name(username)
    account = _row(s, "user", name)
    pairs = list(s.scalars(select(LoginThrottle).where(LoginThrottle.scope == "pair",
                                                       LoginThrottle.key.endswith(f" {name}", autoescape=True))))  # fmt: skip
    pairs = [p for p in pairs if p.key.split(" ", 1)[1] == name]
    addresses = tuple(sorted(p.key.split(" ", 1)[0] for p in pairs))
    refused = tuple(a for a in addresses if _locked_left(_row(s, "client", a), now) > 0
                    and _live(next(p for p in pairs if p.key.split(" ", 1)[0] == a), policy, now) >= policy.pair_max_failures)  # fmt: skip
    out = Unlocked(account_failures=_live(account, policy, now) if account else 0,
                   account_locked=_locked_left(account, now) > 0, addresses=addresses, refused_at=refused)  # fmt: skip
    if account is not None:
        s.delete(account)
    for p in pairs:
        s.delete(p)
    s.flush()
    return out


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
