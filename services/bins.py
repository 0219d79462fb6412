"""A session's time bins read fast: selected columns, optional time range and persons, no ORM rows.

SQLAlchemy's per-row result processing is most of the cost on a 90-minute class (162,000
person-bins: 7.9 s as typed rows, 3.5 s through ``exec_driver_sql``, 2.0 s through the driver's
own cursor, on the loaded 2-core build machine), so the query is compiled by SQLAlchemy and
fetched by the driver.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from sqlalchemy import and_, case, func, select
from sqlalchemy.orm import Session

from storage import repo
from storage.models import Person, TimeBin

SCORE_COLUMNS = ("engagement", *repo.ACADEMIC_COLUMNS, *repo.EXPRESSION_COLUMNS)
DEFAULT_COLUMNS = ("person_id", "t_start", "t_end", "face_visible", *SCORE_COLUMNS, "readable", "unreadable_reason",
                   "personal_label", "personal_confidence")  # fmt: skip


def load_bins(
    s: Session, session_id: int, columns: Sequence[str] = DEFAULT_COLUMNS, t0: float | None = None,
    t1: float | None = None, person_ids: Sequence[int] | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Bins of one session (``columns`` of ``time_bins`` plus ``person_label``), by person then time.

    ``t0``/``t1`` keep the bins that overlap [t0, t1) (seconds); ``person_ids`` keeps those persons."""
    cols = [getattr(TimeBin, c) for c in columns if c != "person_label"]
    q = select(*cols, Person.label.label("person_label")).join(Person, Person.id == TimeBin.person_id)
    q = q.where(TimeBin.session_id == session_id)
    if t0 is not None:
        q = q.where(TimeBin.t_end > float(t0))
    if t1 is not None:
        q = q.where(TimeBin.t_start < float(t1))
    if person_ids is not None:
        q = q.where(TimeBin.person_id.in_([int(p) for p in person_ids]))
    q = q.order_by(TimeBin.person_id, TimeBin.t_start)
    conn = s.connection()
    sql = q.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})  # IN (...) expanded
    args = tuple(sql.params[k] for k in sql.positiontup) if sql.positional else sql.params
    cur = conn.connection.dbapi_connection.cursor()
    try:
        cur.execute(str(sql), args)
        rows = cur.fetchall()
    finally:
        cur.close()
    names = [c.key for c in cols] + ["person_label"]
    df = pd.DataFrame.from_records(rows, columns=names)
    if "face_visible" in df:
        df["face_visible"] = df["face_visible"].astype(bool)  # SQLite hands back 0/1
    return df


def session_persons(url: str, actor, session_id: int) -> list[tuple[int, str]]:
    """(person id, label) of the persons seen in a visible session, by label."""
    from services.db import scope, visible_session

    with scope(url) as s:
        visible_session(s, actor.group_ids, session_id)
        return [(p.id, p.label) for p, _n in repo.session_persons(s, session_id)]


def student_summaries(s: Session, session_ids: Sequence[int], bin_seconds: dict[int, float]) -> dict[int, pd.DataFrame]:
    """``services.summaries.student_summary(load_bins(s, sid, ...), step)`` of each session, aggregated in SQL.

    A group report over a term (40 lessons of a class: millions of bins) needs only these per-person sums;
    fetching every bin into pandas was ~1.2 s a 45-minute lesson. Same rules: engagement averaged over
    visible bins, a bin counted for the academic emotion with the highest probability (the first on ties,
    missing ones never win), and the session's span (first bin to last bin + step) as its duration."""
    from services.summaries import ACADEMIC, SUMMARY_COLUMNS

    ids = [int(i) for i in session_ids]
    if not ids:
        return {}
    vis = TimeBin.face_visible.is_(True)
    p = {c: func.coalesce(getattr(TimeBin, c), -1.0) for c in ACADEMIC}  # missing never beats a probability

    def dominant(k: int):
        c = ACADEMIC[k]
        wins = [p[c] > p[o] for o in ACADEMIC[:k]] + [p[c] >= p[o] for o in ACADEMIC[k + 1 :]]
        return func.sum(case((and_(vis, getattr(TimeBin, c).is_not(None), *wins), 1), else_=0))

    sums = [
        func.avg(case((vis, TimeBin.engagement), else_=None)),
        func.sum(case((vis, 1), else_=0)),
        *[dominant(ACADEMIC.index(c)) for c in ("confusion", "fatigue", "distraction")],
        func.sum(case((and_(vis, TimeBin.readable.is_not(None), TimeBin.readable <= 0), 1), else_=0)),
        func.min(TimeBin.t_start),
        func.max(TimeBin.t_start),
    ]
    q = (
        select(TimeBin.session_id, TimeBin.person_id, *sums)
        .where(TimeBin.session_id.in_(ids))
        .group_by(TimeBin.session_id, TimeBin.person_id)  # no join per bin: the labels are read once below
    )
    cols = ["session_id", "person_id", "mean_engagement", "n_visible", "n_confusion", "n_fatigue",
            "n_distraction", "n_not_readable", "t_min", "t_max"]  # fmt: skip
    rows = pd.DataFrame(s.execute(q).all(), columns=cols)
    labels = dict(
        s.execute(select(Person.id, Person.label).where(Person.id.in_(rows["person_id"].unique().tolist()))).all()
    )
    rows["person_label"] = rows["person_id"].map(labels)
    out: dict[int, pd.DataFrame] = {}
    for sid in ids:
        r = rows[rows["session_id"] == sid]
        if r.empty:
            out[sid] = pd.DataFrame(columns=SUMMARY_COLUMNS)
            continue
        step = float(bin_seconds.get(sid, 1.0))
        minutes = step / 60.0
        duration = float(r["t_max"].max()) + step - float(r["t_min"].min())
        summ = pd.DataFrame({
            "person_id": r["person_id"].astype(int).to_numpy(),
            "person_label": r["person_label"].astype(str).to_numpy(),
            "mean_engagement": pd.to_numeric(r["mean_engagement"], errors="coerce").to_numpy(float),
            "minutes_visible": r["n_visible"].to_numpy(float) * minutes,
            "minutes_confused": r["n_confusion"].to_numpy(float) * minutes,
            "minutes_fatigued": r["n_fatigue"].to_numpy(float) * minutes,
            "minutes_distracted": r["n_distraction"].to_numpy(float) * minutes,
            "minutes_not_readable": r["n_not_readable"].to_numpy(float) * minutes,
        })  # fmt: skip
        summ["minutes_not_visible"] = (duration / 60.0 - summ["minutes_visible"]).clip(lower=0.0)
        summ = summ.sort_values(["mean_engagement", "person_label", "person_id"], na_position="last", kind="stable")
        summ["rank"] = np.arange(1, len(summ) + 1)
        out[sid] = summ[SUMMARY_COLUMNS].reset_index(drop=True)
    return out
