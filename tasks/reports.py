"""The scheduled group reports; ``tasks.app`` calls ``register(app)``, and the beat schedule in
``affectline.queue`` sends it after each period when ``Settings.group_reports_every`` is set.

The reports are drawn by ``services.group_reports`` (fpdf + matplotlib), which the worker's layer
does not import: the task runs ``affectline report scheduled`` in a child process, as cron would.
That keeps the PDF stack out of the analysis workers' memory, and a failed run fails only the
child. Idempotent: a report already written for the period is left alone (see that module).
"""

from __future__ import annotations

import logging
import subprocess
import sys

from celery import Celery

from affectline.task_names import REPORTS_TASK

log = logging.getLogger(__name__)
TIMEOUT_S = 3600  # a month of 40 groups draws in minutes; an hour means something hangs


def run_scheduled_reports(every: str, today: str | None = None) -> list[str]:
    """Write the period's reports (``affectline report scheduled --every EVERY``); returns the files written.
    Raises ``RuntimeError`` with the command's last error line when it fails."""
    cmd = [sys.executable, "-m", "cli.main", "report", "scheduled", "--every", every]
    if today:
        cmd += ["--today", today]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"scheduled reports ({every}) ran over {TIMEOUT_S} s and were stopped") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"scheduled reports ({every}) failed: {last}")
    written = [line.removeprefix("wrote ") for line in done.stdout.splitlines() if line.startswith("wrote ")]
    if written:
        log.info("scheduled reports (%s): %d written", every, len(written))
    return written


def register(app: Celery) -> dict[str, object]:
    """Define the reports task on ``app`` under its contract name; returns it by name."""

    @app.task(name=REPORTS_TASK)
    def group_reports(every: str) -> int:
        return len(run_scheduled_reports(every))

    return {REPORTS_TASK: group_reports}
