"""The session page's view cache: small, cached reductions of a session's bins, keyed by its fingerprint.

The raw class bins (162,000 rows for 90 min x 30 students) are read once per session and kept a
few minutes; every chart asks for a small, cached reduction of them (a few hundred points, a
students x 240 heat map), so a rerun or a zoom sends kilobytes, not the session. Reads go through
``services.session_views`` (visibility checked on every read); ``dashboard.data.invalidate``
clears this cache too (``clear``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import pandas as pd
import streamlit as st

from affectline.kinds import SessionKind
from services import checkins as _ck
from services import session_views as sv
from services import sessions as sessions_service
from services import summaries as _sm
from services.actor import GroupIds
from services.sessions import SessionInfo

MAX_POINTS = 600  # a wide chart is ~1,200 px: two pixels a point
HEAT_COLUMNS = 240


# Each view is cached under the session's fingerprint (``timelines.fingerprint``: analysis time and a
# count of its bins, re-read at most every 10 s), so an hour-long TTL never serves a re-analysed,
# merged or consent-withdrawn session: the fingerprint changes and the views are recomputed. Labels
# are applied fresh on every call (a rename shows at once).
VIEW_TTL = 3600


@st.cache_data(ttl=30, max_entries=64, show_spinner=False)
def session_info(url: str, group_ids: GroupIds, session_id: int) -> SessionInfo:
    return sessions_service.session_info(url, group_ids, session_id)


@st.cache_data(ttl=10, max_entries=64, show_spinner=False)
def session_fingerprint(url: str, group_ids: GroupIds, session_id: int) -> str:
    return sv.fingerprint(url, group_ids, session_id)


@st.cache_data(ttl=10, max_entries=64, show_spinner=False)
def person_labels(url: str, group_ids: GroupIds, session_id: int, person_ids: tuple[int, ...]) -> dict[int, str]:
    """Current labels of these persons of a visible session."""
    return sv.labels(url, group_ids, session_id, person_ids)


@st.cache_resource(ttl=VIEW_TTL, max_entries=4, show_spinner=False)
def _class_bins(url: str, group_ids: GroupIds, session_id: int, fp: str) -> pd.DataFrame:
    return sv.class_bins(url, group_ids, session_id)


def class_view_bins(url: str, group_ids: GroupIds, session_id: int) -> pd.DataFrame:
    """Every person's engagement and academic bins of a visible session (``services.timelines.class_bins``).

    A shared cached resource, not a copy per call (cache_data would unpickle 15 MB on every hit):
    callers must not modify it."""
    return _class_bins(url, group_ids, session_id, session_fingerprint(url, group_ids, session_id))


@st.cache_data(ttl=VIEW_TTL, max_entries=16, show_spinner=False)
def _class_aggregates(url: str, group_ids: GroupIds, session_id: int, fp: str) -> tuple[pd.DataFrame, str]:
    return sv.class_aggregates(url, group_ids, session_id)


def class_aggregates(url: str, group_ids: GroupIds, session_id: int) -> tuple[pd.DataFrame, str]:
    """Class aggregates of faces with no stored timeline, and the sentence saying so (empty when none)."""
    return _class_aggregates(url, group_ids, session_id, session_fingerprint(url, group_ids, session_id))


@dataclass(frozen=True)
class ClassOverview:
    summary: pd.DataFrame  # services.summaries.roster: by name, never ranked
    moments: list  # services.summaries.Moment
    t0: float
    t1: float
    checkins: list = ()  # services.checkins.CheckIn: students whose own pattern stood out, in time order


@st.cache_data(ttl=VIEW_TTL, max_entries=16, show_spinner=False)
def _class_overview(url: str, group_ids: GroupIds, session_id: int, fp: str) -> ClassOverview:
    info = session_info(url, group_ids, session_id)
    bins = class_view_bins(url, group_ids, session_id)
    agg, _ = class_aggregates(url, group_ids, session_id)
    t0, t1 = 0.0, float(info.duration or 0.0)
    if len(bins):
        t1 = max(t1, float(bins["t_start"].max()) + info.bin_seconds)
    return ClassOverview(_sm.roster(_sm.student_summary(bins, info.bin_seconds, duration=t1 - t0)),
                         _sm.moments(bins, info.bin_seconds, aggregates=agg), t0, t1,
                         _ck.checkins(bins, info.bin_seconds))  # fmt: skip


def class_overview(url: str, group_ids: GroupIds, session_id: int) -> ClassOverview:
    """Per-student summary (by name), the session's moments and check-ins (computed once per analysis and kept)."""
    ov = _class_overview(url, group_ids, session_id, session_fingerprint(url, group_ids, session_id))
    names = person_labels(url, group_ids, session_id, tuple(int(p) for p in ov.summary["person_id"]))
    summary = ov.summary.assign(person_label=[names.get(int(p), lab) for p, lab in
                                              zip(ov.summary["person_id"], ov.summary["person_label"])])  # fmt: skip
    moments = [dataclasses.replace(m, person_labels=tuple(names.get(p, lab) for p, lab in zip(m.person_ids, m.person_labels)))
               for m in ov.moments]  # fmt: skip
    return ClassOverview(summary, moments, ov.t0, ov.t1, _ck.relabel(ov.checkins, names))


@st.cache_data(ttl=VIEW_TTL, max_entries=16, show_spinner=False)
def _class_series_full(url: str, group_ids: GroupIds, session_id: int, fp: str) -> pd.DataFrame:
    info = session_info(url, group_ids, session_id)
    agg, _ = class_aggregates(url, group_ids, session_id)
    return _sm.class_series(class_view_bins(url, group_ids, session_id), info.bin_seconds, agg)


def class_series_full(url: str, group_ids: GroupIds, session_id: int) -> pd.DataFrame:
    """The class curve at bin resolution (every face, stored timeline or not); zooms resample it."""
    return _class_series_full(url, group_ids, session_id, session_fingerprint(url, group_ids, session_id))


@st.cache_data(ttl=VIEW_TTL, max_entries=32, show_spinner=False)
def _class_curve(url: str, group_ids: GroupIds, session_id: int, t0: float, t1: float, max_points: int,
                 fp: str) -> pd.DataFrame:  # fmt: skip
    info = session_info(url, group_ids, session_id)
    return _sm.resample(class_series_full(url, group_ids, session_id), t0, t1, max_points, info.bin_seconds)


def class_curve_view(url: str, group_ids: GroupIds, session_id: int, t0: float, t1: float,
                     max_points: int = MAX_POINTS) -> pd.DataFrame:  # fmt: skip
    """The class engagement curve and visible faces over [t0, t1), at most ``max_points`` buckets."""
    return _class_curve(url, group_ids, session_id, t0, t1, max_points, session_fingerprint(url, group_ids, session_id))


@st.cache_data(ttl=VIEW_TTL, max_entries=32, show_spinner=False)
def _heatmap(url: str, group_ids: GroupIds, session_id: int, value: str, t0: float, t1: float,
             order: tuple[int, ...], max_columns: int, fp: str) -> _sm.Heatmap:  # fmt: skip
    info = session_info(url, group_ids, session_id)
    return _sm.heatmap(class_view_bins(url, group_ids, session_id), value, t0, t1, max_columns, info.bin_seconds,
                       order=list(order))  # fmt: skip


def heatmap_view(url: str, group_ids: GroupIds, session_id: int, value: str, t0: float, t1: float,
                 order: tuple[int, ...], max_columns: int = HEAT_COLUMNS) -> _sm.Heatmap:  # fmt: skip
    """Students (``order``, top to bottom) x time over [t0, t1), at most ``max_columns`` columns."""
    h = _heatmap(url, group_ids, session_id, value, t0, t1, order, max_columns,
                 session_fingerprint(url, group_ids, session_id))  # fmt: skip
    names = person_labels(url, group_ids, session_id, tuple(h.person_ids))
    return dataclasses.replace(h, person_labels=[names.get(p, lab) for p, lab in zip(h.person_ids, h.person_labels)])


@st.cache_data(ttl=VIEW_TTL, max_entries=128, show_spinner=False)
def _student(url: str, group_ids: GroupIds, session_id: int, person_id: int, t0: float, t1: float, max_points: int,
             fp: str) -> pd.DataFrame:  # fmt: skip
    info = session_info(url, group_ids, session_id)
    b = class_view_bins(url, group_ids, session_id)
    b = b[b["person_id"] == person_id]
    vis = b["face_visible"].to_numpy(bool)
    cols = ["engagement", *_sm.ACADEMIC]
    frame = b[["t_start", *cols]].copy()
    frame.loc[~vis, cols] = float("nan")
    frame["not_readable"] = _sm.unreadable(b).astype(float)  # share per bucket: drawn as "not readable"
    return _sm.resample(frame, t0, t1, max_points, info.bin_seconds)


def student_view(url: str, group_ids: GroupIds, session_id: int, person_id: int, t0: float, t1: float,
                 max_points: int = MAX_POINTS // 2) -> pd.DataFrame:  # fmt: skip
    """One student's engagement and academic emotions over [t0, t1), resampled (NaN = not visible)."""
    return _student(url, group_ids, session_id, person_id, t0, t1, max_points,
                    session_fingerprint(url, group_ids, session_id))  # fmt: skip


@st.cache_resource(ttl=VIEW_TTL, max_entries=16, show_spinner=False)
def _class_figure(url: str, group_ids: GroupIds, session_id: int, t0: float, t1: float, value: str,
                  students: tuple[int, ...], labels: tuple[tuple[int, str], ...], title: str, fp: str):  # fmt: skip
    from dashboard import charts

    ov = class_overview(url, group_ids, session_id)
    order = tuple(int(p) for p in ov.summary["person_id"])
    names = dict(labels)
    curve = class_curve_view(url, group_ids, session_id, t0, t1)
    heat = heatmap_view(url, group_ids, session_id, value, t0, t1, order)
    shown = [m for m in ov.moments if m.t_end > t0 and m.t_start < t1]
    rows = [(names[p], student_view(url, group_ids, session_id, p, t0, t1)) for p in students]
    return charts.class_overview_figure(curve, heat, shown, (t0, t1), ov.t1, title=title, value_label=value,
                                        students=rows)  # fmt: skip


def class_figure(url: str, group_ids: GroupIds, session_id: int, t0: float, t1: float, value: str,
                 students: Sequence[int], title: str):  # fmt: skip
    """The session page's one chart (``charts.class_overview_figure``) for this view, built once and kept.

    Building it (plotly validation of 8 panels and 39 traces) was 0.15-0.5 s of every open; the same view
    opened again, by this user or another with the same groups, is now a lookup. A shared resource: callers
    must not modify it. Keyed by the students' current labels, so a rename shows at once."""
    ov = class_overview(url, group_ids, session_id)
    labels = tuple((int(p), str(lab)) for p, lab in zip(ov.summary["person_id"], ov.summary["person_label"]))
    return _class_figure(url, group_ids, session_id, float(t0), float(t1), value, tuple(int(p) for p in students),
                         labels, title, session_fingerprint(url, group_ids, session_id))  # fmt: skip


@st.cache_data(ttl=300, max_entries=16, show_spinner=False)
def group_trends(url: str, group_ids: GroupIds, group_id: int, limit: int = 12) -> _sm.Trends:
    """Per-student and class figures across the group's newest ``limit`` analysed sessions."""
    lessons = sv.group_lessons(url, group_ids, group_id, limit)  # recordings of a few seconds left out, with a note
    # each session's summary is the one its own page caches: a session already opened costs nothing here
    tr = _sm.trends_from_summaries([(k, class_overview(url, group_ids, k.id).summary) for k in lessons.kept])
    return dataclasses.replace(tr, note=lessons.note)


# --- the session page's first view, for the warm-up at server start (dashboard.warmup) ----------

DEFAULT_STUDENTS = 6  # rows drawn under the heat map before anyone is picked: the first by name
DEFAULT_HEAT_VALUE = _sm.HEATMAP_VALUES[0]


def chart_title(therapy: bool) -> str:
    return "Engagement over time (therapy session)" if therapy else "Class engagement"


def warm_session(url: str, group_ids: GroupIds, session_id: int):
    """Compute what the session page's first view of a session needs, under the page's own cache keys.

    The same calls, with the same arguments, that ``views/session.py`` makes for its default view (whole
    session, engagement heat map, the first six students by name), so the first open after a server start
    finds them cached. Returns the chart, or None when that page draws no per-student chart (not analysed,
    or no stored timelines). Visibility is checked as on any read: ``group_ids`` must see the session."""
    info = session_info(url, group_ids, session_id)
    if not info.analysed:
        return None
    ov = class_overview(url, group_ids, session_id)
    class_aggregates(url, group_ids, session_id)
    if ov.summary.empty:
        return None
    order = tuple(int(p) for p in ov.summary["person_id"])
    class_curve_view(url, group_ids, session_id, ov.t0, ov.t1)
    return class_figure(url, group_ids, session_id, ov.t0, ov.t1, DEFAULT_HEAT_VALUE, order[:DEFAULT_STUDENTS],
                        chart_title(info.kind is SessionKind.therapy))  # fmt: skip


def clear() -> None:
    """Forget the cached resources (``dashboard.data.invalidate`` calls this after any write)."""
    _class_bins.clear()
    _class_figure.clear()
