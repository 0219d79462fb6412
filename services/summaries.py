"""What a screen (or a printed page) can show of a session: summaries, a heat map, moments, resampled series.

Pure pandas/numpy over the per-person bins of ``storage.repo.session_bins`` (columns t_start, t_end,
person_id, person_label, face_visible, engagement, the academic and expression probabilities). The
dashboard and the PDF reports both build on these functions; their signatures are kept stable.

Conventions:

* Time is seconds from the start of the session (``t_start`` of a bin).
* A bin whose face is not visible has no scores: it is never averaged in as a low score. A person
  with no row at all for some time (not in frame) counts as not visible then.
* "Minutes confused" (fatigued, distracted) = minutes of visible bins whose most probable academic
  emotion is that one: the same reading a teacher would make of the stacked chart.
* A visible face that could not be read (the readability gate, ``recognition.face.readability``:
  too small, turned away, blurred, no landmarks) has no academic emotion or expression: it counts as
  "not readable" (``minutes_not_readable``), never as confused, distracted or anything else. Bins
  stored before the gate (``readable`` NULL) count as read.

Functions (stable signatures):

``student_summary(bins, bin_seconds=1.0, duration=None) -> pd.DataFrame``
    One row per person, ranked: lowest mean engagement first (who needs a look). Columns
    ``SUMMARY_COLUMNS``: rank, person_id, person_label, mean_engagement, minutes_visible,
    minutes_confused, minutes_fatigued, minutes_distracted, minutes_not_readable (visible, not
    readable), minutes_not_visible.

``roster(summary) -> pd.DataFrame``
    The same rows in a stable neutral order, by name (natural: "Student 2" before "Student 10"), without
    the rank column: what every screen and page shows (students are not ranked against each other).

``class_series(bins, bin_seconds=1.0, aggregates=None) -> pd.DataFrame``
    Per bin: t_start, engagement (mean over visible faces), n_visible, and the mean of each
    academic emotion over visible faces; ``aggregates`` (``storage.consent.class_aggregates``)
    adds the faces whose per-person timeline was not stored (no consent).

``resample(series, t0, t1, max_points, bin_seconds=1.0, how="mean") -> pd.DataFrame``
    A per-bin frame (``t_start`` + value columns) reduced to at most ``max_points`` equal buckets
    over [t0, t1): the mean (or min / max) of the non-missing values per bucket; buckets with no
    value stay NaN, so gaps stay gaps. Column ``t_start`` is the bucket start, ``step`` its width.
    Asking again with a narrower [t0, t1) gives a finer series: that is how charts refine on zoom.

``heatmap(bins, value="engagement", t0=None, t1=None, max_columns=240, bin_seconds=1.0, order=None) -> Heatmap``
    A persons x time matrix of ``value`` (engagement or an academic emotion), mean of visible bins
    per column, NaN where the face was not visible in the whole column, or visible but not readable
    (``Heatmap.unreadable`` tells those apart). ``order``: person ids top to bottom (default:
    ``roster`` order, by name).

``moments(bins, bin_seconds=1.0, ...) -> list[Moment]``
    Class-wide events found automatically: engagement dips, confusion and fatigue rises, distraction
    spikes, each with start, end, duration, size (how far from the session's usual level) and the
    students involved (whose own value moved the same way in that span). In time order.
    ``aggregates`` as for ``class_series``.

``trends(sessions) -> Trends``
    Across sessions of one group: ``sessions`` is a sequence of (``SessionKey``, bins, bin_seconds)
    in any order; returns per-student rows (session x person) and per-class rows (one per session),
    in session time order.

``trends_from_summaries(sessions) -> Trends``
    The same from (``SessionKey``, ``student_summary``) pairs (summaries already computed).

``format_clock(seconds) -> str``
    ``75.0 -> "01:15"``, ``3725 -> "1:02:05"``: the mm:ss (h:mm:ss) shown everywhere.

``parse_clock(text) -> float``
    The inverse, also accepting plain seconds (``"90"``, ``"1:30"``, ``"0:01:30"``); ValueError
    naming the text otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Sequence

import numpy as np
import pandas as pd

ACADEMIC = ("neutrality", "enjoyment", "confusion", "fatigue", "distraction")
HEATMAP_VALUES = ("engagement", *ACADEMIC)
SUMMARY_COLUMNS = ["rank", "person_id", "person_label", "mean_engagement", "minutes_visible", "minutes_confused",
                   "minutes_fatigued", "minutes_distracted", "minutes_not_readable", "minutes_not_visible"]  # fmt: skip
NOT_READABLE = "not readable"
"""What a visible face the gate could not read is called on every screen and page."""
MomentKind = Literal["dip", "confusion", "fatigue", "distraction"]
MOMENT_WORDS = {
    "dip": "class engagement dipped",
    "confusion": "confusion rose",
    "fatigue": "fatigue rose",
    "distraction": "distraction spiked",
}


# --- time in words ---------------------------------------------------------------------------


def format_clock(seconds: float) -> str:
    """Seconds from the start as mm:ss, or h:mm:ss from one hour on."""
    if seconds is None or not np.isfinite(seconds):
        return "--:--"
    s = int(round(max(float(seconds), 0.0)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def parse_clock(text: str) -> float:
    """``"mm:ss"``, ``"h:mm:ss"`` or plain seconds -> seconds."""
    raw = str(text).strip()
    parts = raw.split(":")
    try:
        if len(parts) > 3 or not all(p.strip() for p in parts):
            raise ValueError
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"time {raw!r} is not mm:ss, h:mm:ss or seconds") from None
    if any(v < 0 for v in values) or any(v >= 60 for v in values[1:]):
        raise ValueError(f"time {raw!r} is not mm:ss, h:mm:ss or seconds")
    total = 0.0
    for v in values:
        total = total * 60 + v
    return total


# --- helpers ---------------------------------------------------------------------------------


def _visible(bins: pd.DataFrame) -> np.ndarray:
    return bins["face_visible"].fillna(False).astype(bool).to_numpy()


def unreadable(bins: pd.DataFrame) -> np.ndarray:
    """(n,) bool: the face was visible but none of the bin's face-frames could be read (``readable`` == 0)."""
    if "readable" not in bins or bins.empty:
        return np.zeros(len(bins), bool)
    r = pd.to_numeric(bins["readable"], errors="coerce").to_numpy(float)
    return _visible(bins) & np.isfinite(r) & (r <= 0)


def _num(bins: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(bins[col], errors="coerce").to_numpy(float)


def _dominant(bins: pd.DataFrame) -> np.ndarray:
    """Index into ACADEMIC of each bin's most probable academic emotion (-1 where none)."""
    p = np.column_stack([_num(bins, c) for c in ACADEMIC]) if len(bins) else np.zeros((0, len(ACADEMIC)))
    ok = np.isfinite(p).any(axis=1) & _visible(bins)
    out = np.full(len(bins), -1)
    out[ok] = np.nanargmax(np.where(np.isfinite(p[ok]), p[ok], -np.inf), axis=1)
    return out


def _labels(bins: pd.DataFrame) -> dict[int, str]:
    if bins.empty:
        return {}
    if "person_label" not in bins:
        return {int(p): f"Person {int(p)}" for p in bins["person_id"].unique()}
    p = bins[["person_id", "person_label"]].drop_duplicates("person_id")
    return {int(i): str(lab) for i, lab in p.itertuples(index=False)}


def _span(bins: pd.DataFrame, bin_seconds: float) -> tuple[float, float]:
    if bins.empty:
        return 0.0, 0.0
    t = bins["t_start"].to_numpy(float)
    return float(t.min()), float(t.max()) + bin_seconds


# --- per-student summary -----------------------------------------------------------------------


def student_summary(bins: pd.DataFrame, bin_seconds: float = 1.0, duration: float | None = None) -> pd.DataFrame:
    """Per person: mean engagement and minutes confused / fatigued / distracted / not visible; lowest engagement first.

    ``duration`` (seconds) is the session's length; not-visible minutes are the part of it where the
    person's face was not visible, whether or not they had a bin then. Default: the span of the bins.
    Persons with no visible bin rank last (nothing to say about them).
    """
    if bins.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    if duration is None:
        t0, t1 = _span(bins, bin_seconds)
        duration = t1 - t0
    vis = _visible(bins)
    dom = _dominant(bins)
    frame = pd.DataFrame({
        "person_id": bins["person_id"].astype(int).to_numpy(),
        "eng": np.where(vis, _num(bins, "engagement"), np.nan),
        "vis": vis.astype(float),
        "unread": unreadable(bins).astype(float),
        **{f"is_{c}": (dom == ACADEMIC.index(c)).astype(float) for c in ("confusion", "fatigue", "distraction")},
    })  # fmt: skip
    g = frame.groupby("person_id", sort=False)
    minutes = bin_seconds / 60.0
    out = pd.DataFrame({
        "mean_engagement": g["eng"].mean(),
        "minutes_visible": g["vis"].sum() * minutes,
        "minutes_confused": g["is_confusion"].sum() * minutes,
        "minutes_fatigued": g["is_fatigue"].sum() * minutes,
        "minutes_distracted": g["is_distraction"].sum() * minutes,
        "minutes_not_readable": g["unread"].sum() * minutes,
    })  # fmt: skip
    out["minutes_not_visible"] = (duration / 60.0 - out["minutes_visible"]).clip(lower=0.0)
    labels = _labels(bins)
    out.index.name = "person_id"
    out = out.reset_index()
    out["person_label"] = out["person_id"].map(labels)
    out = out.sort_values(["mean_engagement", "person_label", "person_id"], na_position="last", kind="stable")
    out["rank"] = np.arange(1, len(out) + 1)
    return out[SUMMARY_COLUMNS].reset_index(drop=True)


def _natural(label: str) -> tuple:
    """A sort key reading digit runs as numbers: "Student 2" < "Student 10"; case-blind."""
    import re

    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.casefold()) for p in re.split(r"(\d+)", str(label)) if p)


ROSTER_COLUMNS = [c for c in SUMMARY_COLUMNS if c != "rank"]


def roster(summary: pd.DataFrame) -> pd.DataFrame:
    """``student_summary`` rows (or any frame with person_id, person_label) by name (then id), without ``rank``:
    the neutral order every view shows."""
    if summary.empty:
        return pd.DataFrame(columns=ROSTER_COLUMNS)
    key = [(_natural(lab), int(p)) for lab, p in zip(summary["person_label"], summary["person_id"])]
    order = sorted(range(len(summary)), key=key.__getitem__)
    return summary.iloc[order][[c for c in summary.columns if c != "rank"]].reset_index(drop=True)


# --- class series and resampling ---------------------------------------------------------------


def class_series(bins: pd.DataFrame, bin_seconds: float = 1.0, aggregates: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per bin: mean engagement and academic emotions over the visible faces, and how many faces were visible.

    ``aggregates`` (``storage.consent.class_aggregates``: t_start, n_visible and means of faces whose
    per-person timeline was not stored) are weighed in by their visible faces, so the class curve
    counts every face.
    """
    cols = ["t_start", "engagement", "n_visible", *ACADEMIC]
    values = ["engagement", *ACADEMIC]
    parts = []
    if not bins.empty:
        vis = _visible(bins)
        frame = pd.DataFrame({"t_start": bins["t_start"].to_numpy(float), "n": vis.astype(float)})
        for c in values:
            frame[c] = np.where(vis, _num(bins, c), np.nan)
        parts.append(frame)
    if aggregates is not None and len(aggregates):
        a = pd.DataFrame({"t_start": aggregates["t_start"].to_numpy(float),
                          "n": pd.to_numeric(aggregates["n_visible"], errors="coerce").fillna(0).to_numpy(float)})  # fmt: skip
        for c in values:
            a[c] = pd.to_numeric(aggregates[c], errors="coerce").to_numpy(float) if c in aggregates else np.nan
        parts.append(a)
    if not parts:
        return pd.DataFrame(columns=cols)
    frame = pd.concat(parts, ignore_index=True)
    w = frame["n"].to_numpy(float)
    weighted = pd.DataFrame({"t_start": frame["t_start"], "n": w})
    for c in values:  # weighted sums over rows that have a value; the weight counted only there
        v = frame[c].to_numpy(float)
        ok = np.isfinite(v) & (w > 0)
        weighted[c] = np.where(ok, v * w, 0.0)
        weighted[f"w_{c}"] = np.where(ok, w, 0.0)
    g = weighted.groupby("t_start", sort=True).sum()
    out = pd.DataFrame(index=g.index)
    for c in values:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[c] = np.where(g[f"w_{c}"] > 0, g[c] / g[f"w_{c}"], np.nan)
    out["n_visible"] = g["n"].round().astype(int)
    return out.reset_index()[cols]


def resample(
    series: pd.DataFrame, t0: float, t1: float, max_points: int, bin_seconds: float = 1.0,
    how: Literal["mean", "min", "max"] = "mean",
) -> pd.DataFrame:  # fmt: skip
    """At most ``max_points`` buckets over [t0, t1), each a whole number of bins wide; NaN where no value."""
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    if t1 <= t0:
        raise ValueError(f"empty time range {t0}-{t1}")
    n_bins = int(np.ceil((t1 - t0) / bin_seconds - 1e-9))
    per = max(1, int(np.ceil(n_bins / max_points)))
    step = per * bin_seconds
    n = int(np.ceil(n_bins / per))
    values = [c for c in series.columns if c != "t_start"]
    out = pd.DataFrame({"t_start": t0 + step * np.arange(n), "step": step})
    if series.empty:
        for c in values:
            out[c] = np.nan
        return out
    t = series["t_start"].to_numpy(float)
    keep = (t >= t0) & (t < t1)
    idx = np.minimum(((t[keep] - t0) / step + 1e-9).astype(int), n - 1)
    sub = series.loc[keep, values].apply(pd.to_numeric, errors="coerce")
    agg = sub.groupby(idx).agg(how)
    for c in values:
        col = np.full(n, np.nan)
        col[agg.index.to_numpy()] = agg[c].to_numpy(float)
        out[c] = col
    return out


# --- heat map --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heatmap:
    """``values[i, j]``: person ``person_ids[i]`` in the column starting at ``t_start[j]`` (``step`` wide)."""

    value: str
    person_ids: list[int]
    person_labels: list[str]
    t_start: np.ndarray
    step: float
    values: np.ndarray  # (persons, columns), NaN = not visible (or not readable) in that column
    unreadable: np.ndarray | None = None  # (persons, columns) bool: visible there, but no face-frame readable

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape


def heatmap(
    bins: pd.DataFrame, value: str = "engagement", t0: float | None = None, t1: float | None = None,
    max_columns: int = 240, bin_seconds: float = 1.0, order: Sequence[int] | None = None,
) -> Heatmap:  # fmt: skip
    """A persons x time matrix of ``value`` at no more than ``max_columns`` columns."""
    if value not in HEATMAP_VALUES:
        raise ValueError(f"heat map value {value!r} is not one of {', '.join(HEATMAP_VALUES)}")
    lo, hi = _span(bins, bin_seconds)
    t0 = lo if t0 is None else float(t0)
    t1 = hi if t1 is None else float(t1)
    if order is None:
        order = roster(student_summary(bins, bin_seconds))["person_id"].tolist()
    order = [int(p) for p in order]
    labels = _labels(bins)
    if bins.empty or t1 <= t0:
        return Heatmap(value, order, [labels.get(p, str(p)) for p in order], np.zeros(0), float(bin_seconds),
                       np.zeros((len(order), 0)), np.zeros((len(order), 0), bool))  # fmt: skip
    vis = _visible(bins)
    frame = pd.DataFrame({"t_start": bins["t_start"].to_numpy(float), "person_id": bins["person_id"].astype(int).to_numpy(),
                          "v": np.where(vis, _num(bins, value), np.nan), "u": unreadable(bins)})  # fmt: skip
    grid = resample(pd.DataFrame({"t_start": [t0]}), t0, t1, max_columns, bin_seconds)
    step = float(grid["step"].iloc[0])
    n = len(grid)
    keep = (frame["t_start"] >= t0) & (frame["t_start"] < t1) & frame["person_id"].isin(order)
    f = frame[keep]
    col = np.minimum(((f["t_start"].to_numpy() - t0) / step + 1e-9).astype(int), n - 1)
    row_of = {p: i for i, p in enumerate(order)}
    row = f["person_id"].map(row_of).to_numpy()
    v = f["v"].to_numpy(float)
    ok = np.isfinite(v)
    sums = np.zeros((len(order), n))
    counts = np.zeros((len(order), n))
    np.add.at(sums, (row[ok], col[ok]), v[ok])
    np.add.at(counts, (row[ok], col[ok]), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(counts > 0, sums / counts, np.nan)
    u = f["u"].to_numpy(bool)
    seen_unread = np.zeros((len(order), n), bool)
    seen_unread[row[u], col[u]] = True
    # A cell with no value but an unreadable face in it is "not readable", not "not visible".
    return Heatmap(value, order, [labels.get(p, str(p)) for p in order], grid["t_start"].to_numpy(float), step, values,
                   seen_unread & ~np.isfinite(values))  # fmt: skip


# --- moments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moment:
    """A class-wide event: when, for how long, how large, and who."""

    kind: MomentKind
    t_start: float
    t_end: float
    size: float  # peak distance from the session's usual level (engagement or probability units)
    level: float  # the class value at the peak
    usual: float  # the session's usual (median) level
    person_ids: tuple[int, ...] = ()
    person_labels: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        return self.t_end - self.t_start

    @property
    def title(self) -> str:
        return f"{format_clock(self.t_start)}-{format_clock(self.t_end)}: {MOMENT_WORDS[self.kind]}"

    def describe(self) -> str:
        who = ", ".join(self.person_labels) if self.person_labels else "no single student stood out"
        return (f"{self.title} ({self.level:.2f} vs usual {self.usual:.2f}, {self.duration / 60:.1f} min); "
                f"students: {who}")  # fmt: skip


@dataclass(frozen=True)
class MomentRule:
    """How one kind of moment is found on the class series."""

    kind: MomentKind
    column: str  # class_series column
    direction: int  # -1: below usual (dip), +1: above usual (rise)
    min_delta: float  # at least this far from usual (value units)
    min_seconds: float  # and for at least this long
    smooth_seconds: float  # rolling-mean window before detection


DEFAULT_RULES = (
    MomentRule("dip", "engagement", -1, 0.08, 30.0, 20.0),
    MomentRule("confusion", "confusion", +1, 0.08, 30.0, 20.0),
    MomentRule("fatigue", "fatigue", +1, 0.08, 60.0, 30.0),
    MomentRule("distraction", "distraction", +1, 0.10, 10.0, 6.0),
)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def moments(
    bins: pd.DataFrame, bin_seconds: float = 1.0, rules: Sequence[MomentRule] = DEFAULT_RULES, spread_k: float = 2.0,
    min_visible: int = 2, max_moments: int = 20, person_delta: float | None = None,
    aggregates: pd.DataFrame | None = None,
) -> list[Moment]:  # fmt: skip
    """Class-wide dips and rises, in time order (at most ``max_moments``, the largest kept).

    For each rule the class value (mean over visible faces) is smoothed, its usual level is the
    session median, and a moment is a run of bins at least ``max(min_delta, spread_k * robust spread)``
    from it in the rule's direction, lasting ``min_seconds`` or more, with at least ``min_visible``
    faces visible. Runs closer than the smoothing window are joined. The students involved are those
    visible in the span whose own mean there moved from their own session mean the same way by at
    least ``person_delta`` (default: the rule's ``min_delta``), largest change first.
    """
    series = class_series(bins, bin_seconds, aggregates)
    if series.empty or bins.empty:
        return []
    t0, t1 = _span(bins, bin_seconds)
    grid = resample(series, t0, t1, max_points=10**9, bin_seconds=bin_seconds)  # one row per bin, gaps NaN
    grid["n_visible"] = grid["n_visible"].fillna(0)
    t = grid["t_start"].to_numpy(float)
    labels = _labels(bins)
    vis = _visible(bins)
    bt = bins["t_start"].to_numpy(float)
    bp = bins["person_id"].astype(int).to_numpy()
    found: list[Moment] = []
    for rule in rules:
        raw = grid[rule.column].where(grid["n_visible"] >= min_visible)
        w = max(1, int(round(rule.smooth_seconds / bin_seconds)))
        smooth = raw.rolling(w, center=True, min_periods=max(1, w // 2)).mean().to_numpy(float)
        finite = smooth[np.isfinite(smooth)]
        if len(finite) < 3:
            continue
        usual = float(np.median(finite))
        spread = 1.4826 * float(np.median(np.abs(finite - usual)))
        threshold = max(rule.min_delta, spread_k * spread)
        dev = rule.direction * (smooth - usual)
        flagged = np.nan_to_num(dev, nan=-np.inf) >= threshold
        runs = _runs(flagged)
        joined: list[list[int]] = []
        for a, b in runs:  # bridge short gaps (a student turning away for a moment does not end a dip)
            if joined and a - joined[-1][1] <= w:
                joined[-1][1] = b
            else:
                joined.append([a, b])
        delta = rule.min_delta if person_delta is None else person_delta
        col = _num(bins, rule.column)
        own = pd.Series(np.where(vis, col, np.nan)).groupby(bp).mean()
        for a, b in joined:
            if (b - a) * bin_seconds < rule.min_seconds:
                continue
            peak = a + int(np.nanargmax(dev[a:b]))
            ms, me = float(t[a]), float(t[b - 1] + bin_seconds)
            inside = (bt >= ms) & (bt < me) & vis & np.isfinite(col)
            span_mean = pd.Series(col[inside]).groupby(bp[inside]).mean()
            moved = (rule.direction * (span_mean - own.reindex(span_mean.index))).dropna()
            moved = moved[moved >= delta].sort_values(ascending=False)
            ids = tuple(int(p) for p in moved.index)
            found.append(Moment(rule.kind, ms, me, float(dev[peak]), float(smooth[peak]), usual, ids,
                                tuple(labels.get(p, str(p)) for p in ids)))  # fmt: skip
    if len(found) > max_moments:  # keep the largest: size weighted by how long it lasted
        found = sorted(found, key=lambda m: -m.size * np.sqrt(m.duration))[:max_moments]
    return sorted(found, key=lambda m: (m.t_start, m.kind))


# --- trends across sessions ----------------------------------------------------------------


@dataclass(frozen=True)
class SessionKey:
    """Which session a summary belongs to (trends are in ``at`` order)."""

    id: int
    title: str
    at: datetime | None = None


@dataclass(frozen=True)
class Trends:
    per_student: pd.DataFrame  # session_id, title, at, person_id, person_label, mean_engagement, minutes_*
    per_class: pd.DataFrame  # session_id, title, at, mean_engagement, minutes_visible, persons, minutes_confused, ...
    sessions: list[SessionKey] = field(default_factory=list)
    note: str = ""  # what was left out and why (``services.lessons.left_out_note``)


TREND_MINUTES = ["minutes_visible", "minutes_confused", "minutes_fatigued", "minutes_distracted", "minutes_not_readable",
                 "minutes_not_visible"]  # fmt: skip


def trends(sessions: Sequence[tuple[SessionKey, pd.DataFrame, float]]) -> Trends:
    """Per-student and class figures of each session of a group, oldest first.

    The class mean engagement of a session is over all visible person-bins (a student seen longer
    weighs more, as in the class curve); class minutes are per-student means.
    """
    return trends_from_summaries([(key, student_summary(bins, step)) for key, bins, step in sessions])


def trends_from_summaries(sessions: Sequence[tuple[SessionKey, pd.DataFrame]]) -> Trends:
    """``trends`` from each session's ``student_summary`` (what a page has cached already)."""
    order = sorted(sessions, key=lambda x: (x[0].at is None, x[0].at or datetime.min, x[0].id))
    rows, class_rows = [], []
    for key, summ in order:
        for r in summ.itertuples(index=False):
            rows.append({"session_id": key.id, "title": key.title, "at": key.at, **r._asdict()})
        w = summ["minutes_visible"].to_numpy(float) if len(summ) else np.zeros(0)
        e = summ["mean_engagement"].to_numpy(float) if len(summ) else np.zeros(0)
        ok = np.isfinite(e) & (w > 0)
        class_rows.append({
            "session_id": key.id, "title": key.title, "at": key.at,
            # the mean over visible person-bins: each student's mean weighed by their visible time
            "mean_engagement": float(np.sum(e[ok] * w[ok]) / np.sum(w[ok])) if ok.any() else np.nan,
            "persons": int(len(summ)),
            **{c: float(summ[c].mean()) if len(summ) else np.nan for c in TREND_MINUTES},
        })  # fmt: skip
    per_student = pd.DataFrame(rows, columns=["session_id", "title", "at", *SUMMARY_COLUMNS]).drop(columns="rank")
    per_class = pd.DataFrame(class_rows, columns=["session_id", "title", "at", "mean_engagement", "persons", *TREND_MINUTES])
    return Trends(per_student, per_class, [k for k, _ in order])
