"""The waiting CLI through outages and full disks, with real processes (issue 20, item 5).

``affectline analyze`` follows its job in the database and sends it through the broker. A
PostgreSQL stopped for 20 s mid-analysis, a Redis down at enqueue: the CLI says it waits, says
when the service is back, and ends with the timeline of an uninterrupted run; an outage longer
than ``AFFECTLINE_OUTAGE_WAIT_S``: one line saying the job goes on and how to follow it. A full
disk under the embedded broker at enqueue: one line, and the job is failed with the same words.
A local worker that dies for good: the job's state in the CLI's line is the one ``jobs list`` shows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.db import migrate, session_scope
from storage.models import Job, JobChunk, JobStatus
from tests.test_faults import CLIP, Workers, assert_same_bins, bins_of, fault_env, running_chunk, submit, wait_job

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[1]


class Cli:
    """``affectline ARGS`` running in the background; its stderr read as it is written."""

    def __init__(self, env: dict, logs: Path, *args: str):
        logs.mkdir(parents=True, exist_ok=True)
        n = len(list(logs.glob("cli-*.err")))
        self.out_path, self.err_path = logs / f"cli-{n}.out", logs / f"cli-{n}.err"
        self.p = subprocess.Popen([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT,
                                  stdout=open(self.out_path, "w"), stderr=open(self.err_path, "w"))  # fmt: skip

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    def job_id(self, timeout: float = 120) -> int:
        return int(self.wait_for(r"session \d+ \(job (\d+)\)", timeout).group(1))

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.err)
            if m:
                return m
            if self.p.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"no {pattern!r} from the CLI (exit {self.p.poll()}):\n{self.err[-3000:]}")

    def finish(self, timeout: float = 600) -> int:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            pytest.fail(f"the CLI did not end in {timeout} s:\n{self.err[-3000:]}")

    def last_line(self) -> str:
        return self.err.rstrip("\n").rsplit("\n", 1)[-1]


def no_traceback(cli: Cli) -> None:
    assert "Traceback" not in cli.err and "Traceback" not in cli.out, cli.err[-3000:]


def jobs_list_state(env: dict, job_id: int) -> str:
    r = subprocess.run([sys.executable, "-m", "cli.main", "jobs", "list"], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith(f"{job_id}\t"))
    return row.split("\t")[2]


@pytest.mark.services
def test_cli_waits_through_postgres_and_redis_outages(tmp_path: Path, media_dir: Path):
    from tests.services import postgres_server, redis_server

    video = str(media_dir / CLIP)
    with redis_server() as broker, postgres_server() as db:
        env = fault_env(tmp_path, AFFECTLINE_BROKER_URL=broker, AFFECTLINE_DATABASE_URL=db)
        migrate(db)
        w = Workers(env, tmp_path / "logs")
        try:
            w.start("a")
            w.start("b")
            ref_job = submit(db, env, media_dir / CLIP)
            assert wait_job(db, ref_job, w).status == JobStatus.done, w.log()
            ref = bins_of(db, ref_job)
            analyze = ("analyze", video, "--fps", env.get("AFFECTLINE_ANALYSIS_FPS", "2"), "--no-worker")

            # PostgreSQL stopped for 20 s mid-analysis: the CLI waits, says so, and ends with the right timeline.
            cli = Cli(env, tmp_path / "cli", *analyze)
            job = cli.job_id()
            running_chunk(db, job)
            db.stop()
            cli.wait_for(r"the database is unreachable \(.*\); retrying for up to 10 min", 30)
            time.sleep(20)
            db.start()
            assert cli.finish() == 0, cli.err[-3000:]
            no_traceback(cli)
            assert re.search(r"the database is back after \d+ s", cli.err), cli.err[-2000:]
            assert cli.out.strip().splitlines()[-1].isdigit()
            assert_same_bins(bins_of(db, job), ref, "CLI through a 20 s PostgreSQL outage")

            # Longer than AFFECTLINE_OUTAGE_WAIT_S: one line (exit 75) saying the job goes on and how to follow it.
            cli = Cli({**env, "AFFECTLINE_OUTAGE_WAIT_S": "3"}, tmp_path / "cli", *analyze)
            job = cli.job_id()
            running_chunk(db, job)
            db.stop()
            try:
                assert cli.finish(timeout=120) == 75, cli.err[-3000:]
            finally:
                db.start()
            no_traceback(cli)
            last = cli.last_line()
            assert last.startswith("Error: stopped waiting: the database is still unreachable after"), last
            assert f"job {job} goes on in the workers" in last and "'affectline jobs list'" in last
            assert wait_job(db, job, w).status == JobStatus.done, w.log()  # it did go on
            assert jobs_list_state(env, job) == "done"
            assert_same_bins(bins_of(db, job), ref, "after the CLI stopped waiting")

            # Redis down when the job is sent: the CLI waits for the broker, then follows the job to its end.
            broker.stop()
            try:
                cli = Cli(env, tmp_path / "cli", *analyze)
                job = cli.job_id()
                cli.wait_for(r"the broker is unreachable \(.*\); retrying", 120)
            finally:
                broker.start()
            assert cli.finish() == 0, cli.err[-3000:]
            no_traceback(cli)
            assert re.search(r"the broker is back after \d+ s", cli.err), cli.err[-2000:]
            assert_same_bins(bins_of(db, job), ref, "CLI through a Redis outage at enqueue")
        finally:
            w.stop_all()


@contextmanager
def small_disk(where: Path, size: str):
    """A tmpfs of ``size``: a real file system that fills up (mounting needs root, as in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    where.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture()
def tiny_disk(tmp_path: Path):
    with small_disk(tmp_path / "tiny", "1m") as mnt:
        yield mnt


def fill(mnt: Path) -> None:
    with open(mnt / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    assert os.statvfs(mnt).f_bavail == 0


def test_a_full_disk_under_the_broker_at_enqueue_fails_the_job_in_one_line(tmp_path: Path, tiny_disk: Path,
                                                                           media_dir: Path):  # fmt: skip
    broker = f"sqla+sqlite:///{tiny_disk / 'broker.db'}"
    env = fault_env(tmp_path, AFFECTLINE_BROKER_URL=broker)
    url = f"sqlite:///{tmp_path / 'data' / 'affectline.db'}"
    migrate(url)
    # The broker's tables exist (as after any earlier run); then the disk fills up.
    code = "from affectline.queue import make_celery\nwith make_celery().connection_for_write() as c: c.default_channel"
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=120)
    assert (tiny_disk / "broker.db").exists()
    fill(tiny_disk)

    cli = Cli(env, tmp_path / "cli", "analyze", str(media_dir / CLIP), "--fps", "2")
    job = cli.job_id()
    assert cli.finish(timeout=300) == 1, cli.err[-3000:]
    no_traceback(cli)
    last = cli.last_line()
    assert last.startswith("Error: session") and "the analysis could not be queued: database or disk is full" in last
    assert f"job {job} is failed" in last and f"affectline jobs retry {job}" in last
    with session_scope(url) as s:
        row = s.get(Job, job)
        assert row.status == JobStatus.failed and row.error == "could not queue the analysis: database or disk is full"
    assert jobs_list_state(env, job) == "failed"


def test_a_local_worker_dead_for_good_is_reported_in_the_state_jobs_list_shows(tmp_path: Path, media_dir: Path):
    """The embedded broker's local worker killed three times mid-chunk (as the OOM killer or a full disk
    would): the CLI's line names the job's state as ``jobs list`` does, and what to run next."""
    env = fault_env(tmp_path)
    url = f"sqlite:///{tmp_path / 'data' / 'affectline.db'}"
    migrate(url)
    cli = Cli(env, tmp_path / "cli", "analyze", str(media_dir / CLIP), "--fps", "2")
    job = cli.job_id()
    killed: set[str] = set()
    for _ in range(3):  # the CLI replaces its worker twice
        deadline = time.monotonic() + 240
        while True:
            with session_scope(url) as s:
                owner = s.scalar(select(JobChunk.lease_owner).where(
                    JobChunk.job_id == job, JobChunk.status == JobStatus.running, JobChunk.lease_owner.isnot(None),
                    JobChunk.lease_owner.notin_(killed) if killed else True).limit(1))  # fmt: skip
            if owner is not None:
                break
            assert time.monotonic() < deadline and cli.p.poll() is None, cli.err[-3000:]
            time.sleep(0.1)
        killed.add(owner)
        os.kill(int(owner.rsplit(":", 2)[1]), signal.SIGKILL)
    assert cli.finish(timeout=120) == 1, cli.err[-3000:]
    no_traceback(cli)
    last = cli.last_line()
    m = re.search(rf"the local worker exited with code -9 \(3 times\) \(see .*worker\.log\); job {job} is "
                  r"(queued|running(?: \(stale: no heartbeat for \d+ s\))?): (.*)$", last)  # fmt: skip
    assert m, last
    said, listed = m.group(1), jobs_list_state(env, job)
    assert listed.split(" ")[0] == said.split(" ")[0]  # the same status ...
    assert "stale" not in said or "stale" in listed  # ... and stale stays stale (a running one may become it)
    assert "stays queued" not in last and "affectline" in m.group(2)
    with session_scope(url) as s:
        assert s.get(Job, job).status.value == listed.split(" ")[0]


def test_a_full_disk_mid_analysis_ends_in_one_line_that_agrees_with_jobs_list(tmp_path: Path, media_dir: Path):
    """The data folder (database, embedded broker) fills up while a chunk is analysed: the worker cannot
    renew or store; the CLI says the job is stale and why, stops after AFFECTLINE_OUTAGE_WAIT_S with the
    state ``jobs list`` shows, and once space is freed ``jobs retry`` finishes the job."""
    with small_disk(tmp_path / "disk", "16m") as disk:
        env = fault_env(tmp_path, AFFECTLINE_DATA_DIR=str(disk / "data"), AFFECTLINE_OUTAGE_WAIT_S="20")
        url = f"sqlite:///{disk / 'data' / 'affectline.db'}"
        migrate(url)
        cli = Cli(env, tmp_path / "cli", "analyze", str(media_dir / CLIP), "--fps", "2")
        job = cli.job_id()
        deadline = time.monotonic() + 240
        while True:
            with session_scope(url) as s:
                if s.scalar(select(JobChunk.id).where(JobChunk.job_id == job, JobChunk.status == JobStatus.running)
                            .limit(1)) is not None:  # fmt: skip
                    break
            assert time.monotonic() < deadline and cli.p.poll() is None, cli.err[-3000:]
            time.sleep(0.1)
        fill(disk)
        assert cli.finish(timeout=300) == 75, cli.err[-3000:]
        no_traceback(cli)
        last = cli.last_line()
        m = re.search(rf"^Error: stopped waiting: job {job} is (running \(stale: no heartbeat for \d+ s\)); the disk "
                      rf"under {re.escape(str(disk / 'data'))} is full: .*'affectline jobs retry {job}'", last)  # fmt: skip
        assert m, last
        assert "stays queued" not in cli.err
        assert jobs_list_state(env, job).startswith("running (stale: no heartbeat for")

        (disk / "filler").unlink()  # space again: the retried job ends as an uninterrupted run would
        r = subprocess.run([sys.executable, "-m", "cli.main", "jobs", "retry", str(job)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        w = Workers(env, tmp_path / "logs")
        try:
            w.start("a")
            assert wait_job(url, job, w).status == JobStatus.done, w.log()
        finally:
            w.stop_all()
        assert jobs_list_state(env, job) == "done"
