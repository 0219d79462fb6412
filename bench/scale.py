"""Scaling and fault figures for chunked analysis on real worker processes.

    .venv/bin/python bench/scale.py                       # 10-minute lesson, Redis + PostgreSQL
    .venv/bin/python bench/scale.py --minutes 1 --broker sqlite

1. One lesson (real 270p footage looped to ``--minutes``) on 1 worker, then on 2 workers
   (one torch thread each): wall time from submit to done, and the ratio, in one run.
2. 20 short jobs (the 2.7 s classroom clip, one chunk each) on the 2 workers: jobs per minute
   and p95 latency from submit to done.
3. A worker SIGKILLed mid-chunk, and one frozen (SIGSTOP: a machine gone from the network), with
   the default lease (``AFFECTLINE_LEASE_SECONDS``, 30 s): seconds until another worker runs
   the chunk again, and whether the job's bins equal an uninterrupted run's (duplicate/missing).

Workers are warmed up (models loaded) before anything is timed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.paths import MEDIA  # noqa: E402
from tests.support import Workers, bins_of, fault_env, running_chunk, submit, submit_many, wait_job  # noqa: E402


def looped_video(src: Path, minutes: float, out: Path) -> Path:
    """``src`` played over and over for ``minutes`` (keyframe every 2 s, so chunks seek cheaply)."""
    import av

    with av.open(str(src)) as c:
        st = c.streams.video[0]
        rate = st.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(st)]
    n = int(round(minutes * 60 * float(rate)))
    with av.open(str(out), "w") as c:
        vs = c.add_stream("mpeg4", rate=rate)
        vs.height, vs.width = frames[0].shape[:2]
        vs.pix_fmt, vs.bit_rate, vs.gop_size = "yuv420p", 800_000, int(2 * float(rate))
        for k in range(n):
            for p in vs.encode(av.VideoFrame.from_ndarray(frames[k % len(frames)], format="rgb24")):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    return out


def timed_job(url: str, env: dict, video: Path, w: Workers, chunk_seconds: float) -> float:
    t0 = time.monotonic()
    jid = submit(url, env, video, chunk_seconds)
    job = wait_job(url, jid, w, timeout=7200)
    if job.status.value != "done":
        raise SystemExit(f"job {jid} {job.status.value}: {job.error}")
    return time.monotonic() - t0


def chunk_rerun_after(url: str, env: dict, video: Path, w: Workers, sig: int, ref) -> tuple[float, bool, str]:
    """Kill (or freeze) the worker holding a chunk; seconds until the chunk runs on another worker."""
    from storage.db import session_scope
    from storage.models import JobChunk

    jid = submit(url, env, video, 1.0)
    cid, owner = running_chunk(url, jid)
    pid = int(owner.rsplit(":", 2)[1])
    victim = w.by_pid(pid)
    t_kill = time.monotonic()
    w.procs[victim].send_signal(sig)
    if sig == signal.SIGKILL:
        w.procs[victim].wait()
    rerun = None
    while rerun is None and time.monotonic() - t_kill < 600:
        with session_scope(url) as s:
            c = s.get(JobChunk, cid)
            if c.lease_owner not in (None, owner) or c.attempts >= 2:
                rerun = time.monotonic() - t_kill
        time.sleep(0.05)
    job = wait_job(url, jid, w, timeout=900)
    if sig == signal.SIGSTOP:
        w.procs[victim].send_signal(signal.SIGCONT)
    got = bins_of(url, jid)
    same = (job.status.value == "done" and not got.duplicated(["person_label", "t_start"]).any()
            and got[["person_label", "t_start"]].equals(ref[["person_label", "t_start"]]))  # fmt: skip
    return (rerun if rerun is not None else float("nan")), same, victim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the looped lesson")
    ap.add_argument("--chunk-seconds", type=float, default=None, help="default: 60, or minutes*6 when shorter (10 chunks)")
    ap.add_argument("--fps", type=float, default=2.0, help="analysis frames per second")
    ap.add_argument("--broker", choices=["redis", "sqlite"], default="redis")
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--parts", default="lesson,jobs,faults", help="comma-separated: lesson, jobs, faults")
    a = ap.parse_args()
    chunk_s = a.chunk_seconds or min(60.0, max(a.minutes * 6.0, 2.0))
    tmp = Path(tempfile.mkdtemp(prefix="affectline-scale-"))
    lesson = looped_video(MEDIA / "classroom_4students_270p.mp4", a.minutes, tmp / "lesson.mp4")
    short = MEDIA / "classroom_4students_270p.mp4"
    print(f"lesson: {a.minutes:g} min of looped 270p footage, chunks of {chunk_s:g} s, {a.fps:g} fps; broker {a.broker}")

    from contextlib import ExitStack

    from storage.db import migrate

    with ExitStack() as stack:
        extra = {"AFFECTLINE_LEASE_SECONDS": "30", "AFFECTLINE_REQUEUE_AFTER_S": "300"}
        if a.broker == "redis":
            from tests.services import postgres_server, redis_server

            broker = stack.enter_context(redis_server())
            url = stack.enter_context(postgres_server())
            extra |= {"AFFECTLINE_BROKER_URL": broker, "AFFECTLINE_DATABASE_URL": url}
        else:
            url = f"sqlite:///{tmp / 'data' / 'affectline.db'}"
        env = fault_env(tmp, **extra)
        env["AFFECTLINE_ANALYSIS_FPS"] = str(a.fps)
        migrate(url)
        w = Workers(env, tmp / "logs")
        stack.callback(w.stop_all)
        # 1 worker, then 2 workers on the same lesson; a 3-chunk job first so every worker has loaded its models.
        parts = set(a.parts.split(","))
        w.start("w0")
        timed_job(url, env, short, w, 1.0)
        if "lesson" in parts:
            t1 = timed_job(url, env, lesson, w, chunk_s)
            print(f"1 worker : {t1:7.1f} s")
        w.start("w1")
        timed_job(url, env, short, w, 1.0)
        if "lesson" in parts:
            t2 = timed_job(url, env, lesson, w, chunk_s)
            print(f"2 workers: {t2:7.1f} s   speed-up {t1 / t2:.2f}x (target >= 1.8x)")

        # Many short jobs at once (created and enqueued together, as a class's uploads would be).
        if "jobs" in parts:
            t0 = time.monotonic()
            lat = []
            for jid in submit_many(env, short, a.jobs, 60.0):
                job = wait_job(url, jid, w, timeout=3600)
                assert job.status.value == "done", job.error
                lat.append((job.finished_at - job.created_at).total_seconds())  # created -> done, one clock
            total = time.monotonic() - t0
            print(f"{a.jobs} short jobs on 2 workers: {a.jobs / total * 60:.1f} jobs/min, "
                  f"p95 latency {np.percentile(lat, 95):.1f} s (median {np.median(lat):.1f} s)")  # fmt: skip

        if "faults" not in parts:
            return
        ref_job = submit(url, env, short, 1.0)
        wait_job(url, ref_job, w)
        ref = bins_of(url, ref_job)
        for sig, what in ((signal.SIGKILL, "SIGKILL"), (signal.SIGSTOP, "SIGSTOP (machine gone)")):
            dt, same, victim = chunk_rerun_after(url, env, short, w, sig, ref)
            print(f"{what:>22}: chunk running again on another worker after {dt:5.1f} s; "
                  f"bins == uninterrupted run (no duplicate/missing): {same}")  # fmt: skip
            if sig == signal.SIGKILL:
                w.start(f"{victim}-new")
                timed_job(url, env, short, w, 1.0)


if __name__ == "__main__":
    main()
