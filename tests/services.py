"""Throw-away Redis and PostgreSQL servers on loopback for the multi-worker tests.

Each test session starts its own instances on free ports in a temporary folder, so
the tests never touch a developer's databases; `.ci/run` installs the binaries.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class Server(str):
    """A running server's URL (a str, so ``with redis_server() as url`` reads as before) that the
    fault tests can also stop, start and restart on the same port and data."""

    def __new__(cls, url: str, start, stop):
        obj = super().__new__(cls, url)
        obj._start, obj._stop = start, stop
        return obj

    def stop(self) -> None:
        self._stop()

    def start(self) -> None:
        self._start()

    def restart(self, down_s: float = 0.0) -> None:
        self._stop()
        time.sleep(down_s)
        self._start()


def _wait_closed(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)


@contextmanager
def redis_server() -> Iterator[Server]:
    """Redis with an append-only file fsynced on every write, as in docker/compose.yml: queued
    messages survive ``restart()``."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server; .ci/run does this)")
    port = free_port()
    proc: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as d:

        def start() -> None:
            proc[:] = [subprocess.Popen(
                [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", d, "--save", "", "--appendonly", "yes",
                 "--appendfsync", "always"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )]  # fmt: skip
            _wait_port(port)

        def stop() -> None:
            for p in proc:
                p.terminate()
                p.wait(timeout=10)
            proc.clear()
            _wait_closed(port)

        start()
        try:
            yield Server(f"redis://127.0.0.1:{port}/0", start, stop)
        finally:
            stop()


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or ([shutil.which(name)] if shutil.which(name) else [])
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install -y postgresql; .ci/run does this)")
    return found[-1]


@contextmanager
def postgres_server() -> Iterator[Server]:
    """A PostgreSQL cluster owned by the postgres user (initdb refuses to run as root)."""
    port = free_port()
    d = tempfile.mkdtemp(prefix="affectline-pg-")
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(d, "postgres", "postgres")
    data = os.path.join(d, "data")

    def start() -> None:
        subprocess.run(
            [*as_pg, _pg_bin("pg_ctl"), "-D", data, "-w", "-l", os.path.join(d, "log"),
             "-o", f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
            check=True, capture_output=True,
        )  # fmt: skip

    def stop() -> None:
        subprocess.run([*as_pg, _pg_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"], capture_output=True)

    try:
        subprocess.run([*as_pg, _pg_bin("initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True)  # fmt: skip
        start()
        subprocess.run([*as_pg, _pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "affectline"],
                       check=True, capture_output=True)  # fmt: skip
        yield Server(f"postgresql+psycopg://postgres@127.0.0.1:{port}/affectline", start, stop)
    finally:
        subprocess.run([*as_pg, _pg_bin("pg_ctl"), "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
