"""Retention figures: deleting expired sessions against inserting them, on SQLite and PostgreSQL.

    .venv/bin/python bench/retention.py [--backends sqlite,postgresql] [--year 40] [--students 30] [--minutes 90]

1. One expired 90-minute session of 30 students: 1 s bins, so 30 x 5,400 = 162,000 person-bins,
   30 tracks (4 fps samples: times, face and context boxes, embedding), 30 feature series
   (5,400 x 66 floats) and its job. Inserted through ``storage.repo.replace_analysis`` as an
   analysis stores it (the baseline), then deleted by ``storage.retention.run`` as the beat
   task and ``affectline retention run`` do (one transaction per session, audit rows, counts).
2. A year of the same group's sessions: ``--year`` copies of that session (default 40, weekly
   over a school year). Inserted by the database itself (INSERT ... SELECT from the first
   session, one transaction per session: the fastest insert there is, so the ratio is a
   conservative one), then all expired and deleted in one retention run.

Printed per database: person-bins and all rows removed, seconds, rows per second, and the
delete / insert ratio of the same run. PostgreSQL is a throw-away cluster (tests/services.py,
fsync off, as in the tests); SQLite a file in a temporary folder (WAL).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import and_, literal, select, update  # noqa: E402

from affectline.queue import ANALYZE_TASK  # noqa: E402

from affectline.features import FEATURE_NAMES  # noqa: E402
from storage import consent, repo, retention  # noqa: E402
from storage.db import get_engine, migrate, session_scope  # noqa: E402
from storage.models import Base, Person, Recording, SessionKind  # noqa: E402

ACADEMIC = repo.ACADEMIC_COLUMNS
EXPRESSION = repo.EXPRESSION_COLUMNS


def lesson(n_students: int, minutes: float, rng: np.random.Generator, pids: list[int]) -> list[repo.TrackRecord]:
    """A lesson's analysis: every student present throughout, face hidden a tenth of the time."""
    n_bins = int(minutes * 60)
    times = np.arange(0, n_bins, 0.25, dtype=np.float32)
    out = []
    for k in range(n_students):
        acad = rng.dirichlet(np.ones(len(ACADEMIC)), n_bins)
        expr = rng.dirichlet(np.ones(len(EXPRESSION)), n_bins)
        bins = pd.DataFrame({"t_start": np.arange(n_bins, dtype=float), "t_end": np.arange(1, n_bins + 1, dtype=float),
                             "face_visible": rng.random(n_bins) > 0.1, "engagement": rng.random(n_bins)})  # fmt: skip
        for j, c in enumerate(ACADEMIC):
            bins[c] = acad[:, j]
        for j, c in enumerate(EXPRESSION):
            bins[c] = expr[:, j]
        boxes = np.tile(np.array([[40 * k, 100, 40 * k + 30, 130]], np.float32), (len(times), 1))
        out.append(repo.TrackRecord(
            track_key=k, times=times, face_boxes=boxes, context_boxes=boxes * 1.5, embedding=rng.normal(size=128),
            bins=bins, features=rng.normal(size=(n_bins, len(FEATURE_NAMES))).astype(np.float32),
            feature_names=FEATURE_NAMES, person_id=pids[k], match_score=0.9,
        ))  # fmt: skip
    return out


def insert(url: str, group_id: int, tracks: list[repo.TrackRecord], minutes: float) -> tuple[int, float]:
    """Store the lesson as a new session the way an analysis does; returns its id and the seconds."""
    t0 = time.perf_counter()
    with session_scope(url) as s:
        rec = repo.create_recording(s, "/videos/lesson.mp4", SessionKind.classroom, group_id=group_id)
        repo.create_job(s, ANALYZE_TASK, session_id=rec.id, params={"analysis_fps": 4.0})
        repo.replace_analysis(s, repo.AnalysisResult(rec.id, 25.0, int(minutes * 60 * 25), 1920, 1080, 4.0, 1.0,
                                                     "cues@bench", "fer@bench", tracks))  # fmt: skip
        return rec.id, time.perf_counter() - t0


def clone(url: str, src: int, n: int) -> tuple[list[int], float]:
    """``n`` copies of session ``src`` made by the database (INSERT ... SELECT); ids and seconds."""
    sessions, jobs, tracks = (Base.metadata.tables[k] for k in ("sessions", "jobs", "tracks"))
    ids, t0 = [], time.perf_counter()
    for _ in range(n):
        with session_scope(url) as s:
            cols = [c for c in sessions.c if c.name != "id"]
            new = s.execute(sessions.insert().from_select(
                [c.name for c in cols], select(*cols).where(sessions.c.id == src)).returning(sessions.c.id)).scalar_one()
            for t in (jobs, tracks):
                cols = [c for c in t.c if c.name != "id"]
                sel = [literal(new).label(c.name) if c.name == "session_id" else c for c in cols]
                s.execute(t.insert().from_select([c.name for c in cols], select(*sel).where(t.c.session_id == src)))
            ot, nt = tracks.alias("ot"), tracks.alias("nt")
            for name in ("time_bins", "feature_series"):
                t = Base.metadata.tables[name]
                cols = [c for c in t.c if c.name != "id"]
                sel = [literal(new).label(c.name) if c.name == "session_id" else nt.c.id if c.name == "track_id" else c
                       for c in cols]  # fmt: skip
                joined = t.join(ot, ot.c.id == t.c.track_id).join(
                    nt, and_(nt.c.session_id == new, nt.c.track_key == ot.c.track_key))
                s.execute(t.insert().from_select([c.name for c in cols],
                                                 select(*sel).select_from(joined).where(t.c.session_id == src)))  # fmt: skip
            ids.append(new)
    return ids, time.perf_counter() - t0


def expire(url: str, ids: list[int], data_dir: Path) -> tuple[retention.RetentionReport, float]:
    with session_scope(url) as s:
        s.execute(update(Recording).where(Recording.id.in_(ids))
                  .values(created_at=datetime.now(timezone.utc) - timedelta(days=400)))  # fmt: skip
    t0 = time.perf_counter()
    rep = retention.run(url, "bench", data_dir)
    return rep, time.perf_counter() - t0


@contextmanager
def backend(name: str, tmp: Path):
    if name == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
    else:
        from tests.services import postgres_server

        with postgres_server() as url:
            yield url


def run_backend(name: str, args, tmp: Path) -> list[dict]:
    rows = []
    with backend(name, tmp) as url:
        migrate(url)
        rng = np.random.default_rng(0)
        with session_scope(url) as s:
            g = repo.get_or_create_group(s, "Class 5B", SessionKind.classroom).id
            consent.set_retention(s, g, 365, "bench")
            ps = [Person(group_id=g, label=f"Student {k + 1}", enrolled=True) for k in range(args.students)]
            s.add_all(ps)
            s.flush()
            pids = [p.id for p in ps]
        tracks = lesson(args.students, args.minutes, rng, pids)
        first, t_ins1 = insert(url, g, tracks, args.minutes)
        year, t_ins_year = clone(url, first, args.year)
        for label, ids, t_ins in (("one session", [first], t_ins1), (f"a year ({args.year} sessions)", year, t_ins_year)):
            rep, t_del = expire(url, ids, tmp)
            assert sorted(d.session_id for d in rep.deleted) == sorted(ids), "every expired session deleted"
            r = rep.rows
            assert r["time_bins"] == len(ids) * args.students * int(args.minutes * 60), r
            rows.append({"db": name, "what": label, "person_bins": r["time_bins"], "rows_removed": rep.total_rows,
                         "insert_s": t_ins, "delete_s": t_del, "rows_per_s": rep.total_rows / t_del,
                         "delete/insert": t_del / t_ins})  # fmt: skip
            print(f"  {name:10s} {label:24s} {r['time_bins']:>10,d} bins {rep.total_rows:>10,d} rows removed  "
                  f"insert {t_ins:7.2f} s  delete {t_del:7.2f} s  ({t_del / t_ins:.2f}x insert)  by table {r}",
                  flush=True)  # fmt: skip
        get_engine(url).dispose()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--year", type=int, default=40, help="sessions in a year of one group (default: weekly, 40)")
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--minutes", type=float, default=90)
    args = ap.parse_args()
    print(f"{args.students} students x {args.minutes:g} min at 1 s bins = "
          f"{args.students * int(args.minutes * 60):,d} person-bins per session", flush=True)  # fmt: skip
    out = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.backends.split(","):
            out += run_backend(name.strip(), args, Path(d))
    df = pd.DataFrame(out)
    with pd.option_context("display.width", 200, "display.float_format", "{:,.2f}".format):
        print(df.to_string(index=False))


if __name__ == "__main__":
    main()
