"""A session's time bins read fast: selected columns, optional time range and persons, no ORM rows.

SQLAlchemy's per-row result processing is most of the cost on a 90-minute class (162,000
person-bins: 7.9 s as typed rows, 3.5 s through ``exec_driver_sql``, 2.0 s through the driver's
own cursor, on the loaded 2-core build machine), so the query is compiled by SQLAlchemy and
fetched by the driver.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import repo
from storage.models import Person, TimeBin

SCORE_COLUMNS = ("engagement", *repo.ACADEMIC_COLUMNS, *repo.EXPRESSION_COLUMNS)
DEFAULT_COLUMNS = ("person_id", "t_start", "t_end", "face_visible", *SCORE_COLUMNS, "personal_label",
                   "personal_confidence")  # fmt: skip


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
