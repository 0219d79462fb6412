"""A real dashboard server for the browser tests: Streamlit on a free loopback port, stopped after."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]


def shown_text(text: str) -> re.Pattern:
    """A pattern for ``text`` as the page shows it: user text goes through ``dashboard.safe.md_text``,
    which puts an invisible word joiner (U+2060) after ':' and '@' so Streamlit cannot make links or
    shortcodes of it after parsing."""
    return re.compile("\u2060?".join(map(re.escape, text)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}: {proc.stdout.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer on port {port} within {timeout:.0f} s")


@contextmanager
def dashboard_server(data_dir: Path, env: dict[str, str] | None = None, address: str = "127.0.0.1") -> Iterator[str]:
    """``affectline``'s Streamlit app (its launcher, warm-up included) on ``address`` over ``data_dir``; yields its URL.

    ``AFFECTLINE_DASHBOARD_USER`` is dropped unless ``env`` sets it (tests log in for real)."""
    port = free_port()
    full = {k: v for k, v in os.environ.items() if k != "AFFECTLINE_DASHBOARD_USER"}
    full.update({"AFFECTLINE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **(env or {})})
    proc = subprocess.Popen(
        # dashboard/serve.py, as `affectline dashboard` runs it: `streamlit run dashboard/app.py` plus the warm-up
        [sys.executable, str(ROOT / "dashboard" / "serve.py"), "--server.headless", "true",
         "--server.address", address, "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_healthy(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
