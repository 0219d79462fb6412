"""Leases, for every kind of job: who holds a row (``owner_id``), whether a holder of this machine died
(``owner_dead``), the heartbeat that renews a lease while the work runs, database writes that wait
through a restart (``with_db``), and the reaper that every worker runs: it sends again, by task name,
what a dead worker held or a broker lost (analyses' plans, chunks and links; clinicians' jobs).

The leases themselves are rows (``storage.jobs``); this module is the workers' side of them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

from affectline.settings import Settings, get_settings
from affectline.task_names import ANALYZE_TASK, CHUNK_TASK, CLINIC_TASKS, LINK_TASK
from storage import jobs
from storage.db import session_scope

log = logging.getLogger(__name__)
T = TypeVar("T")

_TOKEN = uuid.uuid4().hex[:8]  # a restarted container reuses host name and pid; this tells them apart


def owner_id() -> str:
    """This process as a lease owner: host, pid and a per-process token."""
    return f"{socket.gethostname()}:{os.getpid()}:{_TOKEN}"


def owner_dead(owner: str) -> bool:
    """True when ``owner`` is a process of this machine that no longer runs (or is a zombie).

    Other machines' owners are never known dead: their leases simply expire.
    """
    try:
        host, pid, _ = owner.rsplit(":", 2)
        pid_i = int(pid)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    if pid_i == os.getpid():
        return owner != owner_id()  # an earlier process that had our pid
    import psutil

    try:
        return psutil.Process(pid_i).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


DB_ERRORS = (OperationalError, DBAPIError)


def with_db(url: str, fn: Callable, deadline_s: float = 600.0, what: str = "database write") -> T:
    """Run ``fn(session)`` in a transaction, retrying while the database is unreachable (a restart).

    A chunk's result took minutes to compute: losing it because PostgreSQL restarted would be
    worse than waiting for it to come back."""
    t0, wait = time.monotonic(), 0.5
    while True:
        try:
            with session_scope(url) as s:
                return fn(s)
        except DB_ERRORS as e:
            if isinstance(e, DBAPIError) and not isinstance(e, OperationalError) and not e.connection_invalidated:
                raise
            if time.monotonic() - t0 > deadline_s:
                raise
            log.warning("%s failed (%s); retrying in %.1f s", what, str(e).splitlines()[0][:120], wait)
            time.sleep(wait)
            wait = min(wait * 2, 5.0)


class LeaseLost(RuntimeError):
    """Our lease on the chunk is gone (taken over, or the job stopped): stop and store nothing."""


class Heartbeat:
    """Renews a lease every third of its length from a thread, with the latest progress."""

    def __init__(self, renew: Callable[[float | None], bool], lease_s: float):
        self.renew, self.every = renew, max(lease_s / 3.0, 0.5)
        self.progress: float | None = None
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="affectline-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def beat(self) -> None:
        try:
            if not self.renew(self.progress):
                self.lost = True
        except DB_ERRORS as e:  # database away for a moment: keep working, the final write checks the lease
            log.warning("lease renewal failed: %s", str(e).splitlines()[0][:120])

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()
            if self.lost:
                return


# --- sending again ------------------------------------------------------------------------------


def send(app, r: jobs.Resend, settings: Settings) -> None:
    if r.kind == "chunk":
        app.send_task(CHUNK_TASK, args=[r.id], queue=r.queue or settings.chunk_queue)
    elif r.kind == "plan":
        app.send_task(ANALYZE_TASK, args=[r.id])
    elif r.kind == "link":
        app.send_task(LINK_TASK, args=[r.id])
    elif r.kind == "task":  # a clinicians' job (personalise, re-score), sent as its own task
        app.send_task(r.task, args=[r.id])


# --- the reaper ----------------------------------------------------------------------------------


class Reaper:
    """Every ``lease_seconds / 3`` seconds, re-send what dead workers held or brokers lost."""

    def __init__(self, app, settings: Settings | None = None):
        self.app, self.settings = app, settings or get_settings()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="affectline-reaper", daemon=True)

    def start(self) -> "Reaper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def once(self) -> list[jobs.Resend]:
        s_ = self.settings

        def find(s):
            return jobs.reap(s, ANALYZE_TASK, s_.lease_seconds, s_.requeue_after_s, dead=owner_dead,
                             default_queue=s_.chunk_queue)  # fmt: skip

        with session_scope(s_.resolved_database_url) as s:
            found = find(s)
            found += jobs.reap_one_phase(s, CLINIC_TASKS, s_.requeue_after_s, dead=owner_dead)
        for r in found:
            log.warning("reaper: sending %s %s again", r.kind, r.id)
            send(self.app, r, s_)
        return found

    def _run(self) -> None:
        every = max(self.settings.lease_seconds / 3.0, 0.5)
        while True:
            try:
                self.once()
            except Exception as e:  # database or broker away: try again next round
                log.warning("reaper: %s", str(e).splitlines()[0][:200])
            if self._stop.wait(every):
                return
