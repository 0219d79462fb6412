"""Waiting through a database or broker outage, and telling it from a fault that waiting cannot fix.

PostgreSQL restarted, Redis restarted, a SQLite file locked by another writer: the same call
works again in seconds or minutes, so the CLI says once that it waits, retries with backoff for
``Settings.outage_wait_s``, and says when the service is back. A full disk (or a read-only
one) does not clear by itself: that is reported at once, in one line, as what it is.
"""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")
_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
_DISK_WORDS = ("disk is full", "no space left", "quota exceeded", "readonly database", "read-only file system")
_DOWN_WORDS = ("connection refused", "connection failed", "could not connect", "server closed the connection",
               "terminating connection", "the database system is", "connection reset", "timeout", "timed out",
               "database is locked", "network", "connection to server", "broken pipe", "no route to host",
               "ssl syscall", "connection not open", "name or service not known", "temporary failure")  # fmt: skip


class Unreachable(RuntimeError):
    """``what`` stayed unreachable for as long as we wait (``reason``: the last error, one line)."""

    def __init__(self, what: str, reason: str, waited_s: float) -> None:
        super().__init__(f"the {what} is still unreachable after {waited_s:.0f} s ({reason})")
        self.what, self.reason, self.waited_s = what, reason, waited_s


def chain(e: BaseException) -> Iterator[BaseException]:
    """``e`` and the exceptions it was raised from, outermost first."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def reason(e: BaseException) -> str:
    """The root cause in one line: the innermost error's first non-empty line, without SQL or parameters."""
    for cause in reversed(list(chain(e))):
        for line in str(cause).splitlines():
            line = line.strip()
            if line and not line.startswith(("[SQL", "[parameters", "(Background on")):
                return line.removeprefix("(sqlite3.OperationalError) ")
    return type(e).__name__


def disk_full(e: BaseException) -> bool:
    """A full or read-only disk under a database or broker file: waiting will not clear it."""
    for cause in chain(e):
        if isinstance(cause, OSError) and cause.errno in _DISK:
            return True
        if any(w in str(cause).lower() for w in _DISK_WORDS):
            return True
    return False


def unreachable(e: BaseException) -> bool:
    """The database or broker could not be reached or dropped the connection (worth waiting for)."""
    if disk_full(e):
        return False
    for cause in chain(e):
        if isinstance(cause, (ConnectionError, TimeoutError)):
            return True
        if getattr(cause, "connection_invalidated", False):
            return True
        mod = type(cause).__module__ or ""
        if mod.startswith(("redis", "kombu", "amqp")) and "connection" in type(cause).__name__.lower():
            return True
        if any(w in str(cause).lower() for w in _DOWN_WORDS):
            return True
    return False


def retrying(fn: Callable[[], T], what: str, wait_s: float, say: Callable[[str], None],
             first_delay: float = 1.0, max_delay: float = 15.0) -> T:  # fmt: skip
    """``fn()``, called again while ``what`` is unreachable: ``say`` once that we wait and once that it is
    back; after ``wait_s`` seconds of failures, ``Unreachable``. Any other error is raised at once."""
    started: float | None = None
    delay = first_delay
    while True:
        try:
            out = fn()
        except Exception as e:
            if not unreachable(e):
                raise
            now = time.monotonic()
            if started is None:
                started = now
                say(f"the {what} is unreachable ({reason(e)}); retrying for up to {wait_s / 60:g} min")
            if now - started >= wait_s:
                raise Unreachable(what, reason(e), now - started) from None
            time.sleep(min(delay, max(0.0, started + wait_s - now)))
            delay = min(2 * delay, max_delay)
            continue
        if started is not None:
            say(f"the {what} is back after {time.monotonic() - started:.0f} s")
        return out


FULL_BELOW = 1 << 20  # bytes free under which SQLite cannot even start a journal


def full_disks(database_url: str, broker_url: str) -> list[str]:
    """The SQLite files (database, embedded broker) whose disk is (nearly) full: a worker stores nothing there."""
    out = []
    for url in (database_url, broker_url):
        path = url.removeprefix("sqla+")
        if not path.startswith("sqlite:///") or path == "sqlite:///":
            continue
        folder = Path(path.removeprefix("sqlite:///")).parent
        try:
            if shutil.disk_usage(folder).free < FULL_BELOW:
                out.append(str(folder))
        except OSError:
            continue
    return list(dict.fromkeys(out))
