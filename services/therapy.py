"""What a clinician counts: how often each tagged behaviour happened in a session and for how long, week over week.

Tags are read as they are (labels are plain strings, whatever vocabulary they came from); a tag whose start
equals its end is a point event: it counts once and lasts nothing. The duration of a behaviour in a session
is the union of its tags' ranges, so two overlapping tags of one label (coded twice) are not counted double;
the count is the number of tags. Weeks start on Monday (UTC) of the day the session was recorded.

``behaviour_counts(tags, sessions)``  per session and label: count, seconds
``weekly(per_session)``               per week and label: count, seconds, sessions that week
``week_table(per_week)``              label x week cells such as "3 · 2:15", for a page or a PDF
``sessions_table(per_session, ...)``  session x label cells, every analysed session of the child
``child_history(url, actor, person)`` the three for one child across the analysed sessions of their group
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from services.summaries import format_clock

SESSION_COLUMNS = ["session_id", "title", "at", "week", "label", "count", "seconds"]
WEEK_COLUMNS = ["week", "label", "count", "seconds", "sessions"]


def week_of(at: datetime | None) -> pd.Timestamp | None:
    """The Monday (UTC, midnight) of the week ``at`` falls in."""
    if at is None or pd.isna(at):
        return None
    t = pd.Timestamp(at)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    day = t.normalize()
    return day - pd.Timedelta(days=day.weekday())


def _union_seconds(ranges: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(ranges):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def behaviour_counts(tags: pd.DataFrame, sessions: pd.DataFrame) -> pd.DataFrame:
    """Per session (``sessions``: session_id, title, at) and label: the number of tags and their seconds.

    ``tags``: session_id, label, t_start, t_end. A session without tags keeps no row here; ``weekly``
    still counts it among the sessions of its week."""
    meta = sessions.set_index("session_id")
    rows = []
    for (sid, label), g in tags.groupby(["session_id", "label"], sort=True):
        if sid not in meta.index:
            continue
        at = meta.at[sid, "at"]
        rows.append([int(sid), meta.at[sid, "title"], at, week_of(at), str(label), len(g),
                     _union_seconds(list(zip(g["t_start"].astype(float), g["t_end"].astype(float))))])  # fmt: skip
    out = pd.DataFrame(rows, columns=SESSION_COLUMNS)
    return out.sort_values(["at", "session_id", "label"], kind="stable").reset_index(drop=True)


def weekly(per_session: pd.DataFrame, sessions: pd.DataFrame) -> pd.DataFrame:
    """Per week and label: tags and seconds summed over the week's sessions, and how many sessions it had."""
    weeks = pd.Series([week_of(a) for a in sessions["at"]], index=sessions["session_id"], dtype="object")
    n_sessions = weeks.dropna().groupby(weeks.dropna()).size()
    if per_session.empty:
        return pd.DataFrame(columns=WEEK_COLUMNS)
    g = per_session.dropna(subset=["week"]).groupby(["week", "label"], sort=True)
    out = g.agg(count=("count", "sum"), seconds=("seconds", "sum")).reset_index()
    out["sessions"] = [int(n_sessions.get(w, 0)) for w in out["week"]]
    return out[WEEK_COLUMNS]


def week_name(week) -> str:
    return f"week of {pd.Timestamp(week):%Y-%m-%d}"


def cell(count: int, seconds: float) -> str:
    """'3 · 2:15': three tags lasting 2 min 15 s together (a point event adds to the count only)."""
    return f"{int(count)} · {format_clock(seconds)}"


def week_table(per_week: pd.DataFrame, all_weeks: list | None = None) -> pd.DataFrame:
    """One row per behaviour, one column per week (oldest first), cells ``cell``; weeks without it '0 · 00:00'."""
    weeks = sorted(set(per_week["week"]) | set(all_weeks or []))
    labels = sorted(set(per_week["label"]))
    table = pd.DataFrame({"behaviour": labels})
    for w in weeks:
        here = per_week[per_week["week"] == w].set_index("label")
        table[week_name(w)] = [cell(here.at[lab, "count"], here.at[lab, "seconds"]) if lab in here.index else cell(0, 0)
                               for lab in labels]  # fmt: skip
    return table


def session_table(per_session: pd.DataFrame, session_id: int, duration: float | None) -> pd.DataFrame:
    """This session's behaviours: label, tags, total time (mm:ss) and share of the session."""
    here = per_session[per_session["session_id"] == session_id]
    return pd.DataFrame({
        "behaviour": here["label"].tolist(),
        "tags": here["count"].astype(int).tolist(),
        "total time": [format_clock(v) for v in here["seconds"]],
        "share of the session": [f"{v / duration:.0%}" if duration else "" for v in here["seconds"]],
    })  # fmt: skip


def sessions_table(per_session: pd.DataFrame, sessions: pd.DataFrame) -> pd.DataFrame:
    """One row per analysed session (oldest first: date, title), one column per behaviour, cells ``cell``."""
    labels = sorted(set(per_session["label"]))
    rows = []
    for r in sessions.itertuples():
        here = per_session[per_session["session_id"] == r.session_id].set_index("label")
        when = "" if r.at is None or pd.isna(r.at) else f"{pd.Timestamp(r.at):%Y-%m-%d}"
        rows.append([when, f"{r.title} (#{r.session_id})",
                     *[cell(here.at[lab, "count"], here.at[lab, "seconds"]) if lab in here.index else cell(0, 0)
                       for lab in labels]])  # fmt: skip
    return pd.DataFrame(rows, columns=["date", "session", *labels])


@dataclass(frozen=True)
class History:
    """One child's tagged behaviours over the analysed sessions of their group, oldest first."""

    person_id: int
    person_label: str
    sessions: pd.DataFrame  # session_id, title, at, duration
    per_session: pd.DataFrame  # SESSION_COLUMNS
    per_week: pd.DataFrame  # WEEK_COLUMNS

    @property
    def by_session(self) -> pd.DataFrame:
        return sessions_table(self.per_session, self.sessions)

    @property
    def table(self) -> pd.DataFrame:
        return week_table(self.per_week, [w for w in (week_of(a) for a in self.sessions["at"]) if w is not None])


def history_from_rows(person_id: int, label: str, sessions: pd.DataFrame, tag_rows: pd.DataFrame) -> History:
    per_session = behaviour_counts(tag_rows, sessions)
    return History(person_id, label, sessions, per_session, weekly(per_session, sessions))


def child_history(url: str, actor, person_id: int) -> History:
    """The child's history from storage (only sessions and tags the actor may see; tags deleted left out)."""
    from services.actor import require
    from services.db import scope
    from storage.models import Person

    require(actor, "review")
    with scope(url) as s:
        p = s.get(Person, person_id)
        if p is None or not actor.sees(p.group_id):
            raise LookupError(f"person {person_id} does not exist or is not visible to you")
        return history_in(s, p)


def history_in(s, person, until=None, session_ids=None) -> History:
    """``person``'s history inside an open transaction: the analysed sessions of their group (recorded up
    to ``until`` when given, a datetime; only ``session_ids`` when given), their current tags in those."""
    from sqlalchemy import select

    from storage import tags as tag_store
    from storage.models import Recording

    q = select(Recording).where(Recording.group_id == person.group_id, Recording.analysed_at.is_not(None))
    if until is not None:
        q = q.where(Recording.created_at <= until)
    if session_ids is not None:
        q = q.where(Recording.id.in_(list(session_ids)))
    recs = list(s.scalars(q.order_by(Recording.created_at, Recording.id)))
    sessions = pd.DataFrame([(r.id, r.title, r.created_at, r.duration) for r in recs],
                            columns=["session_id", "title", "at", "duration"])  # fmt: skip
    ids = set(sessions["session_id"])
    rows = [(t.session_id, t.label, t.t_start, t.t_end) for t in tag_store.latest_tags(s, person_id=person.id)
            if t.session_id in ids]  # fmt: skip
    return history_from_rows(person.id, person.label or f"person {person.id}", sessions,
                             pd.DataFrame(rows, columns=["session_id", "label", "t_start", "t_end"]))
