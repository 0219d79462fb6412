"""Static charts for the PDF reports: matplotlib figures drawn by Agg (no display, no browser) to PNG bytes.

Time axes read in clock time from the session start (mm:ss, or h:mm:ss past an hour). Bins
with no visible face are left blank or hatched grey, never drawn as a low score.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from services import report_fonts as fonts
from services.summaries import format_clock

ACADEMIC_COLORS = {"neutrality": "#9e9e9e", "enjoyment": "#2e7d32", "confusion": "#ef6c00", "fatigue": "#6a1b9a",
                   "distraction": "#c62828"}  # fmt: skip
EXPRESSION_COLORS = {"angry": "#d32f2f", "disgust": "#558b2f", "fear": "#7b1fa2", "happy": "#fbc02d", "sad": "#1976d2",
                     "surprise": "#f06292", "neutral": "#757575"}  # fmt: skip
TAG_COLORS = ("#00897b", "#5e35b1", "#f4511e", "#3949ab", "#c0ca33", "#00acc1", "#8d6e63")
ENGAGEMENT_LINE = "#1565c0"
MOMENT_COLOR = "#ef6c00"
UNSEEN = "#b0b0b0"  # mid grey: apart from every colour of the engagement scale, also in grey print
NOT_READABLE = "#7e57c2"  # a visible face the readability gate could not read: apart from grey (not visible)
# Low engagement red, middling pale yellow, high blue-green: legible in grey print too (monotone lightness).
HEAT = LinearSegmentedColormap.from_list("engagement", ["#b2182b", "#f4a582", "#fddbc7", "#d1e5f0", "#4393c3", "#053061"])
DPI = 130


_CLOCK = FuncFormatter(lambda v, _pos: format_clock(v))


def _figure(**kw) -> Figure:
    """A figure of its own, drawn by Agg: no pyplot, so no global state shared by two reports built at once
    (Streamlit runs each browser session's script in its own thread)."""
    fonts.use_in_matplotlib()  # names in every script on the axes (DejaVu, then Noto Sans CJK)
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _time_axis(ax, t0: float, t1: float) -> None:
    ax.set_xlim(t0, max(t1, t0 + 1))
    ax.xaxis.set_major_formatter(_CLOCK)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=10, steps=[1, 2, 3, 5, 6, 10]))
    ax.grid(axis="x", color="#eeeeee", linewidth=0.6)


def _spans(ax, spans: Sequence[tuple[float, float]], **style) -> None:
    for a, b in spans:
        ax.axvspan(a, b, **style)


def class_curve(t: np.ndarray, engagement: np.ndarray, n_visible: np.ndarray, n_persons: int,
                moments: Sequence[tuple[float, float]] = (), width_in: float = 7.2) -> bytes:  # fmt: skip
    """Class engagement (mean over visible faces) with the visible-face count below; moments shaded."""
    fig = _figure(figsize=(width_in, 3.0), layout="constrained")
    ax, axn = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    _spans(ax, moments, color=MOMENT_COLOR, alpha=0.18, linewidth=0)
    ax.plot(t + step / 2, engagement, color=ENGAGEMENT_LINE, linewidth=1.3)
    ax.set_ylim(0, 1)
    ax.set_ylabel("engagement")
    axn.fill_between(t + step / 2, n_visible, step="mid", color="#90a4ae", linewidth=0)
    axn.set_ylim(0, max(n_persons, 1))
    axn.set_ylabel("faces")
    _time_axis(axn, float(t[0]) if len(t) else 0.0, float(t[-1] + step) if len(t) else 1.0)
    axn.set_xlabel("time from the start of the session")
    return _png(fig)


def heat_map(matrix: np.ndarray, rows: Sequence[str], t0: float, col_seconds: float, title: str,
             width_in: float = 7.2, unreadable: np.ndarray | None = None) -> bytes:  # fmt: skip
    """Students x time: each cell the mean over its bins with a visible face; grey where none was seen,
    hatched violet where a face was seen but could not be read (``unreadable``, persons x columns)."""
    n_rows = max(len(rows), 1)
    height = min(9.0, 1.0 + 0.17 * n_rows)
    # Fixed margins, not constrained layout: measuring the tick labels took half of this chart's time.
    fig = _figure(figsize=(width_in, height))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.13, right=0.9, top=1 - 0.3 / height, bottom=0.45 / height)
    cmap = HEAT.with_extremes(bad=UNSEEN)
    t1 = t0 + col_seconds * matrix.shape[1]
    im = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest",
                   extent=(t0, t1, n_rows - 0.5, -0.5))  # fmt: skip
    if unreadable is not None and np.asarray(unreadable).any():
        from matplotlib.colors import ListedColormap

        ax.imshow(np.ma.masked_where(~np.asarray(unreadable, bool), np.ones(matrix.shape)), aspect="auto",
                  cmap=ListedColormap([NOT_READABLE]), vmin=0, vmax=1, interpolation="nearest",
                  extent=(t0, t1, n_rows - 0.5, -0.5))  # fmt: skip
    ax.set_yticks(range(len(rows)), rows, fontsize=6 if n_rows > 20 else 8)
    _time_axis(ax, t0, t1)
    ax.grid(False)
    ax.set_title(title, fontsize=9, loc="left")
    fig.colorbar(im, cax=fig.add_axes((0.92, 0.45 / height, 0.015, 1 - 0.75 / height)))
    return _png(fig)


def person_timeline(t: np.ndarray, step: float, academic: dict[str, np.ndarray], engagement: np.ndarray,
                    expression: dict[str, np.ndarray], uncertain: Sequence[tuple[float, float]],
                    unseen: Sequence[tuple[float, float]], tags: Sequence[tuple[float, float, str]],
                    width_in: float = 7.2, unreadable: Sequence[tuple[float, float]] = ()) -> bytes:  # fmt: skip
    """One person: academic emotions (stacked) with engagement, then expressions; every panel carries the
    tags (coloured spans, labelled on top), the uncertain spans (hatched), the not-visible spans (grey) and
    the visible but not readable spans (violet)."""
    fig = _figure(figsize=(width_in, 4.4), layout="constrained")
    a1, a2 = fig.subplots(2, 1, sharex=True)
    x = t + step / 2
    labels = sorted({lab for _, _, lab in tags})
    tag_color = {lab: TAG_COLORS[i % len(TAG_COLORS)] for i, lab in enumerate(labels)}
    for ax in (a1, a2):
        _spans(ax, unseen, color=UNSEEN, linewidth=0, zorder=0)
        _spans(ax, unreadable, color=NOT_READABLE, alpha=0.35, linewidth=0, zorder=0)
        _spans(ax, uncertain, facecolor="none", edgecolor="#616161", hatch="///", linewidth=0, zorder=3)
        for a, b, lab in tags:
            ax.axvspan(a, b, color=tag_color[lab], alpha=0.22, linewidth=0, zorder=1)
            ax.axvline(a, color=tag_color[lab], linewidth=0.8, zorder=4)
        ax.set_ylim(0, 1)
    a1.stackplot(x, *academic.values(), colors=[ACADEMIC_COLORS.get(k, "#999999") for k in academic],
                 labels=list(academic), alpha=0.85, zorder=2)  # fmt: skip
    a1.plot(x, engagement, color="black", linewidth=1.1, label="engagement", zorder=5)
    a1.set_ylabel("academic")
    a1.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=6, frameon=False)
    for k, v in expression.items():
        a2.plot(x, v, color=EXPRESSION_COLORS.get(k, "#999999"), linewidth=1.0, label=k, zorder=5)
    a2.set_ylabel("expression")
    a2.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=6, frameon=False)
    for a, _b, lab in tags:
        a1.annotate(lab, (a, 1.0), xytext=(2, 2), textcoords="offset points", fontsize=6, color=tag_color[lab],
                    annotation_clip=False)  # fmt: skip
    _time_axis(a2, float(t[0]) if len(t) else 0.0, float(t[-1] + step) if len(t) else 1.0)
    a2.set_xlabel("time from the start of the session (hatched: uncertain; grey: face not visible; violet: not readable)")
    return _png(fig)


def trend(labels: Sequence[str], values: Sequence[float], width_in: float = 7.2) -> bytes:
    """Mean engagement per session over a date range (one point a session, in date order)."""
    fig = _figure(figsize=(width_in, 2.4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(values))
    ax.plot(x, values, marker="o", color=ENGAGEMENT_LINE, linewidth=1.3)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean engagement")
    ax.grid(axis="y", color="#eeeeee")
    return _png(fig)


def lesson_overlay(earlier: Sequence[tuple[str, np.ndarray, np.ndarray]], current: tuple[str, np.ndarray, np.ndarray],
                   width_in: float = 7.2) -> bytes:  # fmt: skip
    """This lesson's class engagement (blue) over earlier lessons' (greys, oldest palest): (title, minutes, values)."""
    fig = _figure(figsize=(width_in, 2.6), layout="constrained")
    ax = fig.subplots()
    greys = ("#cfd8dc", "#b0bec5", "#90a4ae", "#78909c", "#607d8b", "#546e7a")
    for i, (title, x, y) in enumerate(earlier):
        ax.plot(x, y, color=greys[max(0, len(greys) - len(earlier) + i)], linewidth=1.0, label=title)
    title, x, y = current
    ax.plot(x, y, color=ENGAGEMENT_LINE, linewidth=1.8, label=f"this lesson: {title}")
    ax.set_ylim(0, 1)
    ax.set_xlim(left=0)
    ax.set_ylabel("class engagement")
    ax.set_xlabel("minutes from the start of the lesson")
    ax.grid(axis="y", color="#eeeeee")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=6, frameon=False)
    return _png(fig)
