"""Helpers shared by tests and benches (never import a ``tests.test_*`` module for them).

- real worker processes against a database and broker: ``fault_env``, ``Workers``, ``submit``,
  ``submit_many``, ``wait_job``, ``running_chunk``, ``bins_of``, ``assert_same_bins``, ``chunk_rows``
  (``tests/test_faults.py``, ``tests/test_worker.py``, ``tests/test_job_queues.py``, ``bench/scale.py``);
- what "chunked == single pass" means for the pipeline's output: ``same_persons``
  (``tests/test_chunk_merge.py``, ``tests/test_follow_landmarks.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from storage.db import session_scope
from storage.models import Job, JobChunk, JobStatus

ROOT = Path(__file__).resolve().parents[1]
CLIP = "two_people_head_turns_270p.mp4"


def fault_env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFECTLINE_") or k == "AFFECTLINE_MODEL_DIR"}
    env.update({
        "AFFECTLINE_DATA_DIR": str(tmp_path / "data"), "AFFECTLINE_ACADEMIC_MODEL": "cues",
        "AFFECTLINE_TORCH_THREADS": "1", "AFFECTLINE_CHUNK_SECONDS": "1", "AFFECTLINE_LEASE_SECONDS": "6",
        "AFFECTLINE_REQUEUE_AFTER_S": "15", **extra,
    })  # fmt: skip
    return env


class Workers:
    """Real Celery worker processes (solo pool, as `affectline worker` runs them)."""

    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.procs = env, logs, {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "--pool", "solo", "-n", f"{name}@%h",
               "-Q", "affectline.control,celery", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
        p = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=open(self.logs / f"{name}.log", "ab"),
                             stderr=subprocess.STDOUT)  # fmt: skip
        self.procs[name] = p
        return p

    def by_pid(self, pid: int) -> str | None:
        return next((n for n, p in self.procs.items() if p.pid == pid and p.poll() is None), None)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def log(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text()[-3000:]}" for f in sorted(self.logs.glob("*.log")))


# What both job-submitting scripts start with: the database and the group the jobs go to.
_SUBMIT_PRELUDE = (
    "import sys; from affectline.settings import get_settings; from services.actor import operator;"
    "from services.analyses import create_analysis, send_analysis; from services.db import scope; from storage import repo\n"
    "from storage.models import Job\n"
    "u = get_settings().resolved_database_url\n"
    "with scope(u) as s: g = repo.get_or_create_group(s, 'Year 5', 'classroom').id\n"
)


def submit(url: str, env: dict, video: Path, chunk_seconds: float | None = None) -> int:
    """A session and its job, enqueued by name as the CLI and dashboard do. ``chunk_seconds`` goes in
    the job's params (the planning worker's AFFECTLINE_CHUNK_SECONDS otherwise)."""
    code = (
        _SUBMIT_PRELUDE +
        "rid, jid = create_analysis(u, operator(None), sys.argv[1], 'classroom', g, float(sys.argv[3]))\n"
        "if sys.argv[2] != '-':\n"
        "    with scope(u) as s: j = s.get(Job, jid); j.params = {**j.params, 'chunk_seconds': float(sys.argv[2])}\n"
        "send_analysis(get_settings(), jid); print(jid)"
    )
    fps = env.get("AFFECTLINE_ANALYSIS_FPS", "2.0")
    args = [str(video), "-" if chunk_seconds is None else str(chunk_seconds), fps]
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.strip().splitlines()[-1])


def submit_many(env: dict, video: Path, n: int, chunk_seconds: float) -> list[int]:
    """``n`` jobs created, then enqueued, by one process as fast as it can (a class's uploads at once)."""
    code = (
        _SUBMIT_PRELUDE +
        "ids = []\n"
        "for _ in range(int(sys.argv[2])):\n"
        "    rid, jid = create_analysis(u, operator(None), sys.argv[1], 'classroom', g, float(sys.argv[4]))\n"
        "    with scope(u) as s: j = s.get(Job, jid); j.params = {**j.params, 'chunk_seconds': float(sys.argv[3])}\n"
        "    ids.append(jid)\n"
        "for jid in ids: send_analysis(get_settings(), jid)\n"
        "print(' '.join(map(str, ids)))"
    )
    args = [str(video), str(n), str(chunk_seconds), env.get("AFFECTLINE_ANALYSIS_FPS", "2.0")]
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return [int(x) for x in r.stdout.split()]


def wait_job(url: str, job_id: int, workers: Workers, timeout: float = 600) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with session_scope(url) as s:
                job = s.get(Job, job_id)
                if job.status not in (JobStatus.queued, JobStatus.running):
                    return job
        except Exception:  # the database is being restarted by the test
            pass
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not finish in {timeout} s\n{workers.log()}")


def running_chunk(url: str, job_id: int, timeout: float = 300) -> tuple[int, str]:
    """Wait until a chunk of the job is being analysed; (chunk id, lease owner)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope(url) as s:
            c = s.scalar(select(JobChunk).where(JobChunk.job_id == job_id, JobChunk.status == JobStatus.running,
                                                JobChunk.lease_owner.isnot(None)).limit(1))  # fmt: skip
            if c is not None:
                return c.id, c.lease_owner
        time.sleep(0.05)
    pytest.fail(f"no chunk of job {job_id} started in {timeout} s")


def bins_of(url: str, job_id: int) -> pd.DataFrame:
    from storage.repo import session_bins

    with session_scope(url) as s:
        sid = s.get(Job, job_id).session_id
        b = session_bins(s, sid)
    return b[["person_label", "t_start", "t_end", "face_visible", "engagement"]].sort_values(
        ["person_label", "t_start"], ignore_index=True
    )


def assert_same_bins(got: pd.DataFrame, ref: pd.DataFrame, what: str) -> None:
    assert len(ref) > 0
    assert not got.duplicated(["person_label", "t_start"]).any(), f"{what}: duplicate bins"
    assert got[["person_label", "t_start", "t_end"]].equals(ref[["person_label", "t_start", "t_end"]]), (
        f"{what}: bins differ from the uninterrupted run\n{got}\n{ref}"
    )
    assert (got["face_visible"].astype(bool) == ref["face_visible"].astype(bool)).all(), what
    assert np.allclose(got["engagement"].astype(float), ref["engagement"].astype(float), atol=1e-5, equal_nan=True), what


def chunk_rows(url: str, job_id: int) -> list[JobChunk]:
    with session_scope(url) as s:
        return list(s.scalars(select(JobChunk).where(JobChunk.job_id == job_id).order_by(JobChunk.idx)))



def _match_persons(a, b, share: float) -> dict[int, int]:
    """Person key in ``a`` -> key in ``b`` holding at least ``share`` of its samples (same face
    boxes at the same times), one to one."""
    from recognition.tracking.geometry import iou

    out = {}
    for pa in a.tracks:
        best, score = None, 0
        for pb in b.tracks:
            common, ia, ib = np.intersect1d(np.round(pa.times * 1000), np.round(pb.times * 1000), return_indices=True)
            n = int((np.diag(iou(pa.face_boxes[ia], pb.face_boxes[ib])) >= 0.5).sum()) if len(common) else 0
            if n > score:
                best, score = pb.key, n
        if best is not None and score >= share * len(pa.times):
            out[pa.key] = best
    return out if len(set(out.values())) == len(out) else {}


def same_persons(single, chunked) -> None:
    """What 'chunked == single pass' means for the pipeline's output (asserts).

    Each chunk starts a fresh tracker, so a weak face seen in one or two frames next to a
    boundary may land in a neighbour's track or be left out (measured on the crowd in 1 s
    chunks: 2 of 104 samples); the persons are the same, one to one, with their samples.
    """
    assert len(chunked.tracks) == len(single.tracks)
    m = _match_persons(single, chunked, share=0.8)
    assert sorted(m) == sorted(t.key for t in single.tracks), m
    moved, flipped, bins, compared = 0, 0, 0, 0
    for pa in single.tracks:
        pb = chunked.tracks[m[pa.key]]
        # Every bin once and in order; the same bins, bar at most one at an end of the track.
        assert pb.bins.t_start.is_unique and pb.bins.t_start.is_monotonic_increasing
        assert len(set(pa.bins.t_start) ^ set(pb.bins.t_start)) <= 1
        assert len(pb.times) == len(np.unique(pb.times))  # no sample twice
        moved += abs(len(pb.times) - len(pa.times))
        a = pa.bins.set_index("t_start")
        b = pb.bins.set_index("t_start")
        common = a.index.intersection(b.index)
        flipped += int((a.loc[common, "face_visible"] != b.loc[common, "face_visible"]).sum())
        bins += len(common)
        e = (a.loc[common, "engagement"] - b.loc[common, "engagement"]).abs().dropna()
        # Engagement is read against the person's baseline (pipeline.relative): where a chunk's own
        # tracker lands a face a little differently, the readability gate can judge a sample near its
        # size threshold otherwise, and with 3-5 readable seconds that moves the baseline (measured on
        # the crowd in 1 s chunks: per-person medians 0.00-0.074, 1 bin in 5 judged otherwise).
        if len(e):  # a weak face may have no scored bin; the total below says something was compared
            assert e.median() < 0.1, (pa.key, float(e.median()))
        compared += len(e)
    assert compared > 0, "no bin was scored in both runs: the engagement was never compared"
    assert moved <= 0.05 * sum(len(t.times) for t in single.tracks)
    assert flipped <= 0.05 * bins  # a bin that lost its one face-sample at a boundary


