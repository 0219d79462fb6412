"""Pure plotly figure builders: DataFrames in, ``go.Figure`` out (no Streamlit, no database).

Time is seconds from the start of the session. Bins where a face was not visible,
and bins with no row at all (the person was not in frame), are drawn as gaps:
lines break there and a grey band marks them, so a missing face never looks like
a low score.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from services.timelines import ACADEMIC_COLUMNS, EXPRESSION_COLUMNS

ACADEMIC_COLORS = {
    "neutrality": "#9e9e9e",
    "enjoyment": "#2e7d32",
    "confusion": "#ef6c00",
    "fatigue": "#6a1b9a",
    "distraction": "#c62828",
}
EXPRESSION_COLORS = {
    "angry": "#d32f2f",
    "disgust": "#558b2f",
    "fear": "#7b1fa2",
    "happy": "#fbc02d",
    "sad": "#1976d2",
    "surprise": "#f06292",
    "neutral": "#757575",
}
# Clinic labels that are not one of the 7 expressions (e.g. "anxious") take these in turn.
OTHER_LABEL_COLORS = ("#00897b", "#5e35b1", "#8d6e63", "#3949ab", "#c0ca33", "#00acc1")
GAP_COLOR = "rgba(120,120,120,0.15)"
UNCERTAIN = "uncertain"
# A visible face the readability gate could not read: violet, apart from grey (not visible) and from
# the darker grey of "uncertain"; no academic emotion or expression is drawn there.
NOT_READABLE = "not readable"
NOT_READABLE_FILL = "rgba(126,87,194,0.22)"
NOT_READABLE_CELL = "#b39ddb"

# What each model family is, in words a teacher or clinician can act on. A provenance string
# is "<name>@<sha256 prefix>"; names are matched loosely ("clip-caer", "clip_caer", ...).
MODEL_DESCRIPTIONS = (  # (substring of the normalised name, description), first match wins
    ("cue", "interpretable cue model, not a trained classifier"),
    ("caer", "CLIP-CAER academic-emotion network"),
    ("xception", "FER2013 mini-Xception expression network"),
)


def describe_model(provenance: str | None) -> str:
    """``"cues@0123456789ab"`` -> ``"cues@0123456789ab: interpretable cue model, not a trained classifier"``."""
    if not provenance:
        return "unknown model (not recorded)"
    family = "".join(ch for ch in provenance.split("@", 1)[0].lower() if ch.isalnum())
    what = next((d for key, d in MODEL_DESCRIPTIONS if key in family), None)
    return f"{provenance}: {what}" if what else provenance


def model_caption(academic_model: str | None, expression_model: str | None) -> str:
    """One line saying which models produced a session's numbers."""
    return f"Academic emotions and engagement: {describe_model(academic_model)}. Expressions: {describe_model(expression_model)}."


def accuracy_caption(expression_model: str | None) -> str:
    """The one line beside the numbers: how accurate the expression model is (its model card), and the gate."""
    from affectline.model_cards import accuracy_markdown, card_for
    from dashboard.safe import md_text

    # A card's words and link are ours; an id without a card is stored text, shown as text.
    line = accuracy_markdown(expression_model) if card_for(expression_model) else md_text(accuracy_markdown(expression_model))
    return (line + " Faces too small, turned away or blurred to read are shown as "
            f"'{NOT_READABLE}', apart from 'not visible' and 'uncertain': no emotion is given for them.")  # fmt: skip


def on_grid(bins: pd.DataFrame, step: float, value_cols: Sequence[str]) -> pd.DataFrame:
    """One row per ``step`` from the first to the last bin; missing bins and hidden faces get NaN values.

    ``face_visible`` is False on the inserted rows, so gaps can be found from it alone.
    """
    if step <= 0:
        raise ValueError(f"bin step must be positive, got {step}")
    if bins.empty:
        return pd.DataFrame(columns=["t_start", "face_visible", *value_cols])
    b = bins.sort_values("t_start")
    t0 = float(b["t_start"].iloc[0])
    idx = np.rint((b["t_start"].to_numpy(float) - t0) / step).astype(int)
    n = int(idx.max()) + 1
    out = pd.DataFrame({"t_start": t0 + step * np.arange(n), "face_visible": False})
    out.loc[idx, "face_visible"] = b["face_visible"].astype(bool).to_numpy()
    for c in value_cols:
        col = np.full(n, np.nan)
        col[idx] = pd.to_numeric(b[c], errors="coerce").to_numpy(float)
        out[c] = col
    out.loc[~out["face_visible"], list(value_cols)] = np.nan
    return out


def hidden_ranges(grid: pd.DataFrame, step: float) -> list[tuple[float, float]]:
    """Time ranges [start, end) where ``face_visible`` is False on a gridded frame."""
    ranges: list[tuple[float, float]] = []
    start = None
    for t, vis in zip(grid["t_start"].to_numpy(float), grid["face_visible"].to_numpy(bool)):
        if not vis and start is None:
            start = t
        elif vis and start is not None:
            ranges.append((start, t))
            start = None
    if start is not None:
        ranges.append((start, float(grid["t_start"].iloc[-1]) + step))
    return ranges


def visible_runs(grid: pd.DataFrame) -> list[tuple[int, int]]:
    """Row index ranges [i0, i1) of consecutive visible bins on a gridded frame."""
    vis = np.concatenate([[False], grid["face_visible"].to_numpy(bool), [False]])
    edges = np.flatnonzero(np.diff(vis.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _band_polygons(
    x: np.ndarray, lower: np.ndarray, upper: np.ndarray, value: np.ndarray, runs: list[tuple[int, int]], step: float
) -> tuple[list, list, list]:  # fmt: skip
    """One closed polygon per visible run between ``lower`` and ``upper``, separated by None.

    Plotly's stacked areas and 'tonexty' fills bridge missing values; 'toself' closes each
    gap-separated segment on its own, so a stacked band made of these has real gaps, in one trace.
    A run of a single bin is widened to 80 % of a bin so it stays visible.
    """
    px: list = []
    py: list = []
    pc: list = []
    for i0, i1 in runs:
        xs, lo, hi, v = x[i0:i1], lower[i0:i1], upper[i0:i1], value[i0:i1]
        if i1 - i0 == 1:
            xs, lo, hi, v = (np.array([xs[0] - 0.4 * step, xs[0] + 0.4 * step]), np.repeat(lo, 2), np.repeat(hi, 2),
                             np.repeat(v, 2))  # fmt: skip
        px += [*xs, *xs[::-1], None]
        py += [*hi, *lo[::-1], None]
        pc += [*v, *v[::-1], None]
    return px, py, pc


def _shade(fig: go.Figure, ranges: Iterable[tuple[float, float]], label: str = "face not visible") -> None:
    for i, (a, b) in enumerate(ranges):
        fig.add_vrect(x0=a, x1=b, fillcolor=GAP_COLOR, line_width=0, layer="below",
                      annotation_text=label if i == 0 else None, annotation_position="top left",
                      annotation_font_size=10)  # fmt: skip


def engagement_figure(class_eng: pd.DataFrame, step: float = 1.0, title: str = "Class engagement") -> go.Figure:
    """Mean engagement of visible faces over time (line, 0-1) and the number of visible faces (bars).

    ``class_eng`` is ``storage.repo.class_engagement`` output: t_start, engagement, n_visible.
    """
    g = on_grid(class_eng.assign(face_visible=class_eng["n_visible"].fillna(0) > 0), step, ["engagement", "n_visible"])
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=g["t_start"] + step / 2, y=g["n_visible"].fillna(0), name="visible faces", width=step * 0.9,
                marker_color="rgba(25,118,210,0.25)", secondary_y=True,
                hovertemplate="%{y} faces visible<extra></extra>")  # fmt: skip
    fig.add_scatter(x=g["t_start"] + step / 2, y=g["engagement"], mode="lines", name="engagement",
                    line=dict(color="#1565c0", width=2.5), connectgaps=False, secondary_y=False,
                    hovertemplate="t=%{x:.0f}s engagement %{y:.2f}<extra></extra>")  # fmt: skip
    _shade(fig, hidden_ranges(g, step), "no face visible")
    fig.update_yaxes(title_text="engagement", range=[0, 1], secondary_y=False)
    most = int(np.nanmax(g["n_visible"].fillna(0).to_numpy(float), initial=0))
    fig.update_yaxes(title_text="visible faces", range=[0, max(most, 1) * 1.05], dtick=max(1, -(-most // 5)),
                     showgrid=False, secondary_y=True)  # fmt: skip
    fig.update_xaxes(title_text="time (s)")
    fig.update_layout(title=title, height=320, margin=dict(l=50, r=50, t=50, b=40),
                      legend=dict(orientation="h", y=-0.25))  # fmt: skip
    return fig


def person_figure(bins: pd.DataFrame, title: str, step: float = 1.0, show_legend: bool = True) -> go.Figure:
    """One person's small multiple: academic emotions (stacked areas) with engagement, and expressions.

    Row 1: the 5 academic-emotion probabilities stacked to 1 (one filled band per class), engagement as
    a black line.
    Row 2: the 7 expression probabilities as lines. Hidden-face bins are gaps in both.
    """
    g = on_grid(bins, step, ["engagement", *ACADEMIC_COLUMNS, *EXPRESSION_COLUMNS])
    x = g["t_start"] + step / 2
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("academic emotions and engagement", "expressions"))  # fmt: skip
    runs = visible_runs(g)
    probs = g[list(ACADEMIC_COLUMNS)].to_numpy(float)
    cum = np.cumsum(probs, axis=1)
    for k, c in enumerate(ACADEMIC_COLUMNS):
        lower = cum[:, k - 1] if k else np.zeros(len(g))
        px, py, pc = _band_polygons(x.to_numpy(float), lower, cum[:, k], probs[:, k], runs, step)
        fig.add_scatter(x=px, y=py, customdata=pc, mode="lines", fill="toself", fillcolor=_rgba(ACADEMIC_COLORS[c], 0.75),
                        line=dict(width=0.5, color=ACADEMIC_COLORS[c]), name=c, legendgroup=c, showlegend=show_legend,
                        hoveron="points", hovertemplate=f"{c} %{{customdata:.2f}}<extra></extra>", row=1, col=1)  # fmt: skip
    fig.add_scatter(x=x, y=g["engagement"], mode="lines", name="engagement", line=dict(color="black", width=2),
                    connectgaps=False, showlegend=show_legend, row=1, col=1)  # fmt: skip
    for c in EXPRESSION_COLUMNS:
        fig.add_scatter(x=x, y=g[c], mode="lines", name=c, line=dict(width=1.5, color=EXPRESSION_COLORS[c]),
                        connectgaps=False, legendgroup="expression", showlegend=show_legend, row=2, col=1)  # fmt: skip
    for a, b in hidden_ranges(g, step):
        for row in (1, 2):
            fig.add_vrect(x0=a, x1=b, fillcolor=GAP_COLOR, line_width=0, layer="below", row=row, col=1)
    fig.update_yaxes(range=[0, 1], row=1, col=1)
    fig.update_yaxes(range=[0, 1], row=2, col=1)
    fig.update_xaxes(title_text="time (s)", row=2, col=1)
    fig.update_layout(title=title, height=420, margin=dict(l=40, r=20, t=60, b=40),
                      legend=dict(orientation="v", font_size=10))  # fmt: skip
    return fig


def personal_figure(bins: pd.DataFrame, tags: pd.DataFrame | None, title: str, step: float = 1.0) -> go.Figure:
    """Therapy review: the personalised label per bin (grey = "uncertain"), its confidence, and clinician tags.

    ``bins`` needs t_start, face_visible, personal_label, personal_confidence (the last two may be all empty:
    no personal model yet). ``tags``: t_start, t_end, label, note (may be None or empty).
    """
    g = on_grid(bins, step, ["personal_confidence", *EXPRESSION_COLUMNS])
    labels = pd.Series([None] * len(g), dtype=object)
    if "personal_label" in bins and len(bins):
        b = bins.sort_values("t_start")
        idx = np.rint((b["t_start"].to_numpy(float) - float(b["t_start"].iloc[0])) / step).astype(int)
        labels.iloc[idx] = b["personal_label"].to_numpy(object)
    labels[~g["face_visible"].to_numpy(bool)] = None
    x = g["t_start"] + step / 2
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1, row_heights=[0.45, 0.55],
                        subplot_titles=("personalised label (marker size = confidence)", "expressions"))  # fmt: skip
    conf = g["personal_confidence"].fillna(0).to_numpy(float)
    others = iter(OTHER_LABEL_COLORS * 4)
    for lab in sorted({lab for lab in labels.dropna()}, key=lambda v: (v == UNCERTAIN, v)):
        m = (labels == lab).to_numpy()
        color = "#bdbdbd" if lab == UNCERTAIN else EXPRESSION_COLORS.get(str(lab).lower()) or next(others)
        fig.add_scatter(x=x[m], y=[lab] * int(m.sum()), mode="markers", name=lab,
                        marker=dict(size=6 + 10 * conf[m], color=color),
                        customdata=conf[m], hovertemplate="%{y} (confidence %{customdata:.2f})<extra></extra>",
                        row=1, col=1)  # fmt: skip
    for c in EXPRESSION_COLUMNS:
        fig.add_scatter(x=x, y=g[c], mode="lines", name=c, line=dict(width=1.5, color=EXPRESSION_COLORS[c]),
                        connectgaps=False, legendgroup="expression", row=2, col=1)  # fmt: skip
    for a, b in hidden_ranges(g, step):
        for row in (1, 2):
            fig.add_vrect(x0=a, x1=b, fillcolor=GAP_COLOR, line_width=0, layer="below", row=row, col=1)
    if tags is not None:
        for r in tags.itertuples():
            fig.add_vrect(x0=r.t_start, x1=r.t_end, fillcolor="rgba(255,193,7,0.25)", line_width=1,
                          line_color="rgba(255,160,0,0.8)", annotation_text=str(r.label),
                          annotation_position="top left", row=2, col=1)  # fmt: skip
    fig.update_yaxes(range=[0, 1], row=2, col=1)
    fig.update_xaxes(title_text="time (s)", row=2, col=1)
    fig.update_layout(title=title, height=460, margin=dict(l=60, r=20, t=60, b=40))
    return fig


# --- issue 11: figures sized to the screen, one mm:ss time axis ---------------------------------
#
# Time goes on a plotly *date* axis fed milliseconds from the epoch: plotly then picks ticks that
# suit the zoom (mm:ss, and h:mm:ss past an hour) and a brushed range comes back as a timestamp.
# Every figure of a session gets the same x range, so small multiples line up.

MOMENT_COLORS = {"dip": "rgba(21,101,192,0.16)", "confusion": "rgba(239,108,0,0.16)",
                 "fatigue": "rgba(106,27,154,0.14)", "distraction": "rgba(198,40,40,0.14)"}  # fmt: skip
# Tags in a navy far from every expression's colour (the yellow they had was "happy"'s; issue 19).
TAG_FILL, TAG_LINE = "rgba(26,35,126,0.16)", "rgba(26,35,126,0.9)"
BASELINE_FILL, BASELINE_LINE = "rgba(76,175,80,0.18)", "rgba(56,142,60,0.9)"
UNCERTAIN_FILL = "rgba(97,97,97,0.18)"
HEAT_SCALES = {"engagement": "RdYlGn", "confusion": "Oranges", "fatigue": "Purples", "distraction": "Reds",
               "enjoyment": "Greens", "neutrality": "Greys"}  # fmt: skip


# The session's start sits at midnight of 2000-01-01, not at the epoch: plotly.js reads a number of
# 4 digits on a date axis as a *year* (1500 ms would be drawn in the year 1500), so the seconds
# 1-10 of a session vanished off the left edge. Every value is now 13 digits. Ticks show the time
# of day, which from midnight is the time since the start (h:mm:ss up to 24 hours).
ORIGIN = pd.Timestamp("2000-01-01")
ORIGIN_MS = float(ORIGIN.value // 1_000_000)


def ms(seconds) -> np.ndarray | float:
    """Seconds from the start -> the date axis's milliseconds."""
    if np.isscalar(seconds):
        return ORIGIN_MS + float(seconds) * 1000.0
    return ORIGIN_MS + np.asarray(seconds, dtype=float) * 1000.0


def duration_ms(seconds) -> np.ndarray:
    """A length of time on the date axis (a horizontal bar's width), not a point on it."""
    return np.asarray(seconds, dtype=float) * 1000.0


def axis_seconds(value) -> float:
    """A date-axis value plotly sends back (a timestamp string or milliseconds) -> seconds from the start."""
    if isinstance(value, (int, float, np.floating)):
        return (float(value) - ORIGIN_MS) / 1000.0
    ts = pd.Timestamp(str(value))
    if ts.tzinfo is not None:
        ts = ts.tz_convert(None)
    return (ts - ORIGIN).total_seconds()


def _time_axis(fig: go.Figure, x_range: tuple[float, float], duration: float, **where) -> None:
    fmt = "%H:%M:%S" if duration >= 3600 else "%M:%S"
    fig.update_xaxes(type="date", range=[ms(x_range[0]), ms(x_range[1])], tickformat=fmt, hoverformat=fmt, **where)


def _mmss(duration: float) -> str:
    return "%{x|%H:%M:%S}" if duration >= 3600 else "%{x|%M:%S}"


def _refs(fig: go.Figure, row: int | None) -> tuple[str, str]:
    """The (xref, yref) of a subplot row, for shapes spanning its height."""
    if row is None:
        return "x", "y domain"
    sp = fig.get_subplot(row, 1)
    x = sp.xaxis.plotly_name.replace("axis", "")
    y = sp.yaxis.plotly_name.replace("axis", "")
    return x, f"{y} domain"


def _spans(fig: go.Figure, spans, fill: str, line: str | None = None, label=None, rows=(None,), width: float = 0,
           layer: str = "below", out: tuple[list, list] | None = None) -> None:  # fmt: skip
    """Vertical bands as layout shapes (plotly's add_vrect costs ~0.1 s a band on subplots).

    With ``out`` = (shapes, annotations) they are collected there for one ``_apply`` at the end
    (each layout update re-validates every shape already there)."""
    shapes, notes = out if out is not None else ([], [])
    refs = [_refs(fig, r) for r in rows]
    for i, sp in enumerate(spans):
        a, b = ms(sp[0]), ms(sp[1])
        text = label(sp) if callable(label) else (label if i == 0 else None)
        for xr, yr in refs:
            shapes.append(dict(type="rect", xref=xr, yref=yr, x0=a, x1=b, y0=0, y1=1, fillcolor=fill, layer=layer,
                               line=dict(width=width, color=line) if width else dict(width=0)))  # fmt: skip
        if text:
            xr, yr = refs[0]
            notes.append(dict(x=a, y=1, xref=xr, yref=yr, text=str(text), showarrow=False, xanchor="left",
                              yanchor="top", font=dict(size=10)))  # fmt: skip
    if out is None:
        _apply(fig, (shapes, notes))


def sm_clock(seconds: float) -> str:
    """Seconds -> "mm:ss" ("h:mm:ss" past an hour); never "NaN" (an unknown time reads "?")."""
    if seconds is None or not np.isfinite(float(seconds)):
        return "?"
    t = int(round(float(seconds)))
    h, m, sec = t // 3600, t % 3600 // 60, t % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


# A tag's name is drawn at its start, in the first free row (lane) of names: two tags close in time
# would otherwise print their names over each other. Widths are estimated from the text length.
TAG_FONT_PX, TAG_CHAR_PX, TAG_PLOT_PX, TAG_LANE_STEP, TAG_MAX_LANES = 10, 6.2, 900.0, 0.13, 4


def label_lanes(starts: Sequence[float], texts: Sequence[str], x_range: tuple[float, float],
                plot_px: float = TAG_PLOT_PX, max_lanes: int = TAG_MAX_LANES) -> list[int]:  # fmt: skip
    """The lane (0 = top) of each label so that no two labels of a lane overlap on a ``plot_px`` wide axis.

    Labels are placed left to right, each in the first lane whose previous label ends before it starts
    (past ``max_lanes`` lanes: the lane that frees up first, so a crowd overlaps as little as it can)."""
    span = max(float(x_range[1]) - float(x_range[0]), 1e-9)
    sec_per_px = span / plot_px
    order = sorted(range(len(starts)), key=lambda i: float(starts[i]))
    ends: list[float] = []  # per lane: where its last label ends (seconds)
    out = [0] * len(starts)
    for i in order:
        a = float(starts[i])
        width = (len(str(texts[i])) * TAG_CHAR_PX + 6) * sec_per_px
        lane = next((k for k, e in enumerate(ends) if e <= a), None)
        if lane is None:
            if len(ends) < max_lanes:
                ends.append(0.0)
                lane = len(ends) - 1
            else:
                lane = int(np.argmin(ends))
        ends[lane] = a + width
        out[i] = lane
    return out


def _tag_spans(fig: go.Figure, tags: pd.DataFrame, x_range: tuple[float, float], rows, bands: tuple[list, list],
               layer: str = "below") -> None:  # fmt: skip
    """Tags (navy) and baseline ranges (green) as bands on ``rows``, their names staggered in lanes on the first
    row, and each name with its range on hover of the name."""
    base = tags["is_baseline"].fillna(False).astype(bool) if "is_baseline" in tags else pd.Series(False, tags.index)
    items = [(float(r.t_start), float(r.t_end), f"baseline: {r.label}" if b else str(r.label), bool(b))
             for r, b in zip(tags.itertuples(), base)]  # fmt: skip
    for is_base, fill, line in ((False, TAG_FILL, TAG_LINE), (True, BASELINE_FILL, BASELINE_LINE)):
        _spans(fig, [it for it in items if it[3] == is_base], fill, line, rows=rows, width=1, layer=layer, out=bands)
    lanes = label_lanes([it[0] for it in items], [it[2] for it in items], x_range)
    xr, yr = _refs(fig, rows[0])
    for (a, b, text, _), lane in zip(items, lanes):
        bands[1].append(dict(x=ms(a), y=1 - TAG_LANE_STEP * lane, xref=xr, yref=yr, text=text, showarrow=False,
                             xanchor="left", yanchor="top", font=dict(size=TAG_FONT_PX),
                             hovertext=f"{text} {sm_clock(a)}-{sm_clock(b)}"))  # fmt: skip


def _apply(fig: go.Figure, bands: tuple[list, list]) -> None:
    shapes, notes = bands
    if shapes or notes:
        fig.update_layout(shapes=list(fig.layout.shapes or ()) + shapes,
                          annotations=list(fig.layout.annotations or ()) + notes)  # fmt: skip


def class_overview_figure(
    series, heat, moments=(), x_range: tuple[float, float] | None = None, duration: float = 0.0,
    title: str = "Class engagement", value_label: str = "engagement",
    students: Sequence[tuple[str, pd.DataFrame]] = (),
) -> go.Figure:  # fmt: skip
    """One figure, one x axis: class engagement with visible faces (top), the students x time heat map, and
    a small multiple per chosen student (academic emotions stacked, engagement on top).

    ``series``: ``services.summaries.resample`` of ``class_series`` (t_start, step, engagement, n_visible).
    ``heat``: a ``services.summaries.Heatmap`` on the same range. ``moments``: ``Moment``s, drawn as bands.
    ``students``: (label, ``resample`` of that student's bins) on the same range.
    Every panel shares the x axis: zooming the class curve zooms the heat map and every student.
    """
    n_rows = max(len(heat.person_ids), 1)
    heat_px = max(160, min(18 * n_rows, 640))
    student_px = 150
    heights = [220, heat_px] + [student_px] * len(students)
    total = sum(heights) + 40 * len(heights)
    fig = make_subplots(rows=len(heights), cols=1, shared_xaxes=True, vertical_spacing=36 / total,
                        row_heights=heights, specs=[[{"secondary_y": True}], [{}]] + [[{}]] * len(students))  # fmt: skip
    step = float(series["step"].iloc[0]) if len(series) else 1.0
    x = ms(series["t_start"].to_numpy(float) + step / 2)
    # Visible faces as one filled step line, not a bar per bucket: 600 bars were 600 SVG paths to lay out and
    # paint (twice: Streamlit draws a chart, then redraws it themed), ~20 % of the chart's drawing.
    edges = ms(np.append(series["t_start"].to_numpy(float), float(series["t_start"].iloc[-1]) + step)) if len(series) \
        else np.zeros(0)  # fmt: skip
    faces = series["n_visible"].fillna(0).round(1).to_numpy(float)
    fig.add_scatter(x=edges, y=np.append(faces, faces[-1:]), mode="lines", line=dict(shape="hv", width=0),
                    fill="tozeroy", fillcolor="rgba(25,118,210,0.22)", name="visible faces",
                    hovertemplate="%{y:.0f} faces visible<extra></extra>", row=1, col=1, secondary_y=True)  # fmt: skip
    fig.add_scatter(x=x, y=series["engagement"].round(3), mode="lines", name="class engagement",
                    line=dict(color="#1565c0", width=2.5), connectgaps=False, row=1, col=1, secondary_y=False,
                    hovertemplate=f"{_mmss(duration)} engagement %{{y:.2f}}<extra></extra>")  # fmt: skip
    if heat.values.size:
        hx = ms(heat.t_start + heat.step / 2)
        fig.add_heatmap(x=hx, y=unique_labels(heat.person_labels), z=heat.values.astype(np.float32),  # NaN = blank
                        colorscale=HEAT_SCALES.get(heat.value, "Viridis"), zmin=0, zmax=1, xgap=0, ygap=1,
                        colorbar=dict(title=value_label, len=0.6, y=0.3, thickness=12),
                        hovertemplate=f"%{{y}} {_mmss(duration)}<br>{value_label} %{{z:.2f}}<extra></extra>",
                        name=value_label, row=2, col=1)  # fmt: skip
        unread = getattr(heat, "unreadable", None)
        if unread is not None and np.asarray(unread).any():  # visible but not readable: its own colour, not blank
            fig.add_heatmap(x=hx, y=unique_labels(heat.person_labels), z=np.where(unread, 1.0, np.nan).astype(np.float32),
                            colorscale=[[0, NOT_READABLE_CELL], [1, NOT_READABLE_CELL]], zmin=0, zmax=1, showscale=False,
                            xgap=0, ygap=1, name=NOT_READABLE,
                            hovertemplate=f"%{{y}} {_mmss(duration)}<br>{NOT_READABLE}: face visible, too small, turned "
                                          "away or blurred to read<extra></extra>", row=2, col=1)  # fmt: skip
        fig.update_yaxes(autorange="reversed", type="category", row=2, col=1, tickfont_size=10)
    bands: tuple[list, list] = ([], [])
    for kind, color in MOMENT_COLORS.items():
        _spans(fig, [(m.t_start, m.t_end) for m in moments if m.kind == kind], color, rows=(1,), out=bands)
    for i, (label, ss) in enumerate(students):
        _student_rows(fig, ss, label, row=3 + i, duration=duration, show_legend=i == 0, bands=bands)
    _apply(fig, bands)
    lo, hi = x_range or ((float(series["t_start"].iloc[0]), float(series["t_start"].iloc[-1]) + step) if len(series)
                         else (0.0, 1.0))  # fmt: skip
    _time_axis(fig, (lo, hi), duration or hi)
    fig.update_xaxes(showticklabels=True, row=1, col=1)
    fig.update_yaxes(title_text="engagement", range=[0, 1], secondary_y=False, row=1, col=1)
    most = float(np.nanmax(series["n_visible"].to_numpy(float), initial=0)) if len(series) else 0
    fig.update_yaxes(title_text="visible faces", range=[0, max(most, 1) * 1.05], showgrid=False, secondary_y=True,
                     dtick=max(1, int(np.ceil(most / 5))), row=1, col=1)  # fmt: skip
    if heat.values.size:  # the colour scale beside the heat map's own rows
        lo_d, hi_d = fig.get_subplot(2, 1).yaxis.domain
        fig.update_traces(colorbar=dict(y=(lo_d + hi_d) / 2, len=hi_d - lo_d, yanchor="middle"), selector=dict(type="heatmap"))
    fig.update_layout(title=title, height=total + 90, margin=dict(l=90, r=60, t=50, b=30), dragmode="select",
                      selectdirection="h", legend=dict(orientation="h", y=1.02, x=0.5, xanchor="center", yanchor="bottom"),
                      hovermode="closest", uirevision="class")  # fmt: skip
    return fig


def _student_rows(fig: go.Figure, series: pd.DataFrame, label: str, row: int, duration: float, show_legend: bool,
                  bands: tuple[list, list]) -> None:  # fmt: skip
    """One student's small multiple in ``row`` of a shared-x figure (see ``student_figure``)."""
    step = float(series["step"].iloc[0]) if len(series) else 1.0
    x = ms(series["t_start"].to_numpy(float) + step / 2)
    probs = series[list(ACADEMIC_COLUMNS)].to_numpy(float)
    total = probs.sum(axis=1, keepdims=True)
    probs = np.divide(probs, total, out=np.full_like(probs, np.nan), where=total > 0)  # bucket means sum to 1 again
    for k, c in enumerate(ACADEMIC_COLUMNS):  # plotly stacks them (a stackgroup per row); no face: 0, a grey band
        fig.add_scatter(x=x, y=np.nan_to_num(probs[:, k]).astype(np.float32), mode="lines", stackgroup=f"academic{row}",
                        line=dict(width=0, color=ACADEMIC_COLORS[c]), fillcolor=_rgba(ACADEMIC_COLORS[c], 0.7), name=c,
                        legendgroup=c, showlegend=show_legend,
                        hovertemplate=f"{label}: {c} %{{y:.2f}}<extra></extra>", row=row, col=1)  # fmt: skip
    fig.add_scatter(x=x, y=series["engagement"].to_numpy(np.float32), mode="lines", name="engagement",
                    legendgroup="engagement", connectgaps=False, line=dict(color="black", width=1.6),
                    showlegend=show_legend, hovertemplate=f"{label} {_mmss(duration)} engagement %{{y:.2f}}<extra></extra>",
                    row=row, col=1)  # fmt: skip
    hidden, unread = gate_spans(series)
    _spans(fig, hidden, GAP_COLOR, rows=(row,), out=bands)
    _spans(fig, unread, NOT_READABLE_FILL, rows=(row,), out=bands, label=NOT_READABLE)
    fig.update_yaxes(title_text=label, title_font_size=11, range=[0, 1], fixedrange=True, row=row, col=1)


def unique_labels(labels: Sequence[str]) -> list[str]:
    """Labels made unique (a heat map's category rows would merge two students called the same)."""
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} ({seen[lab]})")
    return out


def student_figure(series, title: str, x_range: tuple[float, float], duration: float, show_legend: bool = False,
                   tags=None) -> go.Figure:  # fmt: skip
    """One student's small multiple on the session's x range: academic emotions stacked, engagement on top.

    ``series``: ``services.summaries.resample`` of one person's bins (t_start, step, engagement, academic columns),
    NaN where the face was not visible (the bands break there and a grey band shows it).
    """
    step = float(series["step"].iloc[0]) if len(series) else 1.0
    x = ms(series["t_start"].to_numpy(float) + step / 2)
    fig = go.Figure()
    probs = series[list(ACADEMIC_COLUMNS)].to_numpy(float)
    total = probs.sum(axis=1, keepdims=True)
    probs = np.divide(probs, total, out=np.full_like(probs, np.nan), where=total > 0)  # bucket means sum to 1 again
    for k, c in enumerate(ACADEMIC_COLUMNS):  # plotly stacks them; no face: 0, under a grey band
        fig.add_scatter(x=x, y=np.nan_to_num(probs[:, k]).astype(np.float32), mode="lines", stackgroup="academic",
                        line=dict(width=0, color=ACADEMIC_COLORS[c]), fillcolor=_rgba(ACADEMIC_COLORS[c], 0.7), name=c,
                        legendgroup=c, showlegend=show_legend, hovertemplate=f"{c} %{{y:.2f}}<extra></extra>")  # fmt: skip
    fig.add_scatter(x=x, y=series["engagement"].round(3), mode="lines", name="engagement", connectgaps=False,
                    line=dict(color="black", width=1.8), showlegend=show_legend,
                    hovertemplate=f"{_mmss(duration)} engagement %{{y:.2f}}<extra></extra>")  # fmt: skip
    hidden, unread = gate_spans(series)
    bands: tuple[list, list] = ([], [])
    _spans(fig, hidden, GAP_COLOR, out=bands)
    _spans(fig, unread, NOT_READABLE_FILL, label=NOT_READABLE, out=bands)
    if tags is not None and len(tags):
        _tag_spans(fig, tags, x_range, rows=(None,), bands=bands)
    _apply(fig, bands)
    _time_axis(fig, x_range, duration)
    fig.update_yaxes(range=[0, 1], fixedrange=True)
    fig.update_layout(title=dict(text=title, font_size=13), height=190, margin=dict(l=40, r=10, t=32, b=24),
                      showlegend=show_legend, hovermode="x unified", dragmode="select", selectdirection="h")  # fmt: skip
    return fig


def gate_spans(series: pd.DataFrame) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(not visible, not readable) spans of a resampled series: a bucket is "not readable" when most of its
    bins had a visible face that could not be read (``not_readable`` share, see ``dashboard.data``), else a
    bucket without engagement is "not visible"."""
    step = float(series["step"].iloc[0]) if len(series) else 1.0
    t = series["t_start"].to_numpy(float)
    unread = (series["not_readable"].fillna(0).to_numpy(float) >= 0.5) if "not_readable" in series \
        else np.zeros(len(series), bool)  # fmt: skip
    hidden = ~np.isfinite(series["engagement"].to_numpy(float)) & ~unread
    spans = [[(float(t[a]), float(t[b - 1] + step)) for a, b in _runs_of(m)] for m in (hidden, unread)]
    return spans[0], spans[1]


def _nan_runs(v: np.ndarray, t: np.ndarray, step: float) -> list[tuple[float, float]]:
    """[start, end) time spans where ``v`` is NaN (no visible face)."""
    out = []
    for a, b in _runs_of(~np.isfinite(v)):
        out.append((float(t[a]), float(t[b - 1] + step)))
    return out


def _runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    m = np.concatenate([[False], np.asarray(mask, bool), [False]]).astype(np.int8)
    e = np.flatnonzero(np.diff(m))
    return [(int(a), int(b)) for a, b in zip(e[::2], e[1::2])]


def trend_figure(per_class: pd.DataFrame, per_student: pd.DataFrame | None = None, students: Sequence[int] = ()) -> go.Figure:
    """Mean engagement per session of a group (class, thick) and chosen students (thin), oldest first."""
    fig = go.Figure()
    x = [f"{t} ({a:%Y-%m-%d})" if a is not None and not pd.isna(a) else str(t)
         for t, a in zip(per_class["title"], per_class["at"])]  # fmt: skip
    names = dict(zip(per_class["session_id"], x))
    fig.add_scatter(x=x, y=per_class["mean_engagement"].round(3), mode="lines+markers", name="class",
                    line=dict(color="#1565c0", width=3))  # fmt: skip
    if per_student is not None:
        for pid in students:
            p = per_student[per_student["person_id"] == pid]
            if len(p):
                fig.add_scatter(x=[names.get(i, str(i)) for i in p["session_id"]], y=p["mean_engagement"].round(3),
                                mode="lines+markers", name=str(p["person_label"].iloc[0]), line=dict(width=1.5))  # fmt: skip
    fig.update_yaxes(title_text="mean engagement", range=[0, 1])
    fig.update_layout(title="Engagement across sessions of this group", height=300, margin=dict(l=50, r=20, t=50, b=40))
    return fig


EARLIER_LESSON_COLORS = ("#b0bec5", "#90a4ae", "#78909c", "#607d8b", "#546e7a", "#455a64")


def lesson_overlay_figure(curves) -> go.Figure:
    """This lesson's class engagement (thick blue) over the earlier lessons of its group (thin greys, oldest
    palest), on one axis of minutes from each lesson's start (``services.lessons.LessonCurves``)."""
    fig = go.Figure()
    earlier = curves.earlier
    for i, c in enumerate(earlier):
        when = f" ({c.key.at:%Y-%m-%d})" if c.key.at is not None else ""
        color = EARLIER_LESSON_COLORS[max(0, len(EARLIER_LESSON_COLORS) - len(earlier) + i)]
        fig.add_scatter(x=np.round(c.minutes, 3), y=np.round(c.engagement, 3), mode="lines", name=f"{c.key.title}{when}",
                        line=dict(color=color, width=1.5), connectgaps=False,
                        hovertemplate="%{x:.1f} min: %{y:.2f}<extra>" + f"{c.key.title}" + "</extra>")  # fmt: skip
    if (cur := curves.current) is not None:
        fig.add_scatter(x=np.round(cur.minutes, 3), y=np.round(cur.engagement, 3), mode="lines",
                        name=f"this lesson: {cur.key.title}", line=dict(color="#1565c0", width=3), connectgaps=False,
                        hovertemplate="%{x:.1f} min: %{y:.2f}<extra>this lesson</extra>")  # fmt: skip
    fig.update_xaxes(title_text="minutes from the start of the lesson", rangemode="tozero")
    fig.update_yaxes(title_text="class engagement", range=[0, 1])
    fig.update_layout(title="This lesson over earlier lessons of the group", height=320,
                      margin=dict(l=50, r=20, t=50, b=40), legend=dict(orientation="h", y=-0.25))  # fmt: skip
    return fig


LABEL_ROW_COLORS = {UNCERTAIN: "#bdbdbd"}


def child_figure(
    series: pd.DataFrame, labels: pd.DataFrame, tags: pd.DataFrame | None, title: str, x_range: tuple[float, float],
    duration: float, cues: pd.DataFrame | None = None,
) -> go.Figure:  # fmt: skip
    """A child's therapy session: personalised label, academic emotions, expressions; tags on every row.

    ``series``: ``resample`` of the child's bins (t_start, step, engagement, academic, expression columns,
    personal_confidence). ``labels``: per-bin (t_start, t_end, personal_label) runs, see ``label_runs``;
    "uncertain" runs are shaded grey across all rows. ``tags``: t_start, t_end, label, is_baseline.
    ``cues``: ``resample`` of the cue inputs on the same buckets; shown on hover of the expression row.
    """
    step = float(series["step"].iloc[0]) if len(series) else 1.0
    x = ms(series["t_start"].to_numpy(float) + step / 2)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.22, 0.38, 0.40],
                        subplot_titles=("personalised label and confidence", "academic emotions and engagement",
                                        "expressions (hover: the cues behind them)"))  # fmt: skip
    others = iter(OTHER_LABEL_COLORS * 8)
    seen: dict[str, str] = {}
    for lab in sorted({str(v) for v in labels["label"].dropna()}, key=lambda v: (v == UNCERTAIN, v)) if len(labels) else []:
        seen[lab] = LABEL_ROW_COLORS.get(lab) or EXPRESSION_COLORS.get(lab.lower()) or next(others)
    for lab, color in seen.items():  # one bar trace per label: runs as horizontal bars, not one dot per bin
        r = labels[labels["label"] == lab]
        # Times preformatted: plotly formats a bar's ``base`` as a number, so "%{base|%M:%S}" showed "NaN:NaN".
        when = [f"{sm_clock(a)}-{sm_clock(b)}" for a, b in zip(r["t_start"], r["t_end"])]
        fig.add_bar(x=duration_ms((r["t_end"] - r["t_start"]).to_numpy(float)), base=ms(r["t_start"].to_numpy(float)),
                    y=[lab] * len(r), orientation="h", marker_color=color, name=lab, legendgroup="label",
                    customdata=when, hovertemplate=f"{lab} %{{customdata}}<extra></extra>", row=1, col=1)  # fmt: skip
    if "personal_confidence" in series and series["personal_confidence"].notna().any():
        fig.add_scatter(x=x, y=series["personal_confidence"].round(3), mode="lines", name="confidence", yaxis="y4",
                        line=dict(color="black", width=1), connectgaps=False, showlegend=True,
                        hovertemplate="confidence %{y:.2f}<extra></extra>")  # fmt: skip
        fig.update_layout(yaxis4=dict(overlaying="y", side="right", range=[0, 1], showgrid=False, title="confidence",
                                      anchor="x"))  # fmt: skip
    probs = series[list(ACADEMIC_COLUMNS)].to_numpy(float)
    total = probs.sum(axis=1, keepdims=True)
    probs = np.divide(probs, total, out=np.full_like(probs, np.nan), where=total > 0)
    for k, c in enumerate(ACADEMIC_COLUMNS):  # plotly stacks them; no face: 0, under a grey band
        fig.add_scatter(x=x, y=np.nan_to_num(probs[:, k]).astype(np.float32), mode="lines", stackgroup="academic",
                        line=dict(width=0, color=ACADEMIC_COLORS[c]), fillcolor=_rgba(ACADEMIC_COLORS[c], 0.7), name=c,
                        legendgroup="academic", hovertemplate=f"{c} %{{y:.2f}}<extra></extra>", row=2, col=1)  # fmt: skip
    fig.add_scatter(x=x, y=series["engagement"].round(3), mode="lines", name="engagement", connectgaps=False,
                    line=dict(color="black", width=1.8), legendgroup="academic",
                    hovertemplate="engagement %{y:.2f}<extra></extra>", row=2, col=1)  # fmt: skip
    cue_text = _cue_hover(cues, len(series)) if cues is not None else None
    for i, c in enumerate(EXPRESSION_COLUMNS):
        fig.add_scatter(x=x, y=series[c].round(3), mode="lines", name=c, line=dict(width=1.5, color=EXPRESSION_COLORS[c]),
                        connectgaps=False, legendgroup="expression", row=3, col=1,
                        text=cue_text if (cue_text is not None and i == 0) else None,
                        hovertemplate=(f"{c} %{{y:.2f}}" + ("<br>%{text}" if cue_text is not None and i == 0 else "")
                                       + "<extra></extra>"))  # fmt: skip
    bands: tuple[list, list] = ([], [])
    hidden, unread = gate_spans(series)
    _spans(fig, hidden, GAP_COLOR, label="face not visible", rows=(1, 2, 3), out=bands)
    _spans(fig, unread, NOT_READABLE_FILL, label=NOT_READABLE, rows=(1, 2, 3), out=bands)
    unc = labels[labels["label"] == UNCERTAIN] if len(labels) else labels
    _spans(fig, list(zip(unc["t_start"], unc["t_end"])) if len(unc) else [], UNCERTAIN_FILL, label="uncertain",
           rows=(2, 3), out=bands)  # fmt: skip
    if tags is not None and len(tags):
        _tag_spans(fig, tags, x_range, rows=(1, 2, 3), bands=bands, layer="above")
    _apply(fig, bands)
    _time_axis(fig, x_range, duration)
    fig.update_yaxes(range=[0, 1], row=2, col=1, fixedrange=True)
    fig.update_yaxes(range=[0, 1], row=3, col=1, fixedrange=True)
    fig.update_yaxes(fixedrange=True, row=1, col=1)
    fig.update_layout(title=title, height=640, barmode="overlay", margin=dict(l=80, r=60, t=70, b=30),
                      dragmode="select", selectdirection="h", hovermode="x unified", uirevision="child",
                      legend=dict(font_size=10))  # fmt: skip
    return fig


def _cue_hover(cues: pd.DataFrame, n: int) -> list[str] | None:
    """Per bucket, the cue model's inputs in words (blendshape means, head pose in degrees)."""
    if cues is None or len(cues) != n:
        return None
    c = cues

    def mean2(a, b):
        return (c[a] + c[b]) / 2

    parts = {
        "smile": mean2("mouthSmileLeft", "mouthSmileRight"),
        "brow down": mean2("browDownLeft", "browDownRight"),
        "brow inner up": c["browInnerUp"],
        "eye blink": mean2("eyeBlinkLeft", "eyeBlinkRight"),
        "jaw open": c["jawOpen"],
    }
    out = []
    for i in range(n):
        bits = [f"{k} {v.iloc[i]:.2f}" for k, v in parts.items() if np.isfinite(v.iloc[i])]
        pose = [f"{k} {c[k].iloc[i]:+.0f}°" for k in ("yaw", "pitch", "roll") if np.isfinite(c[k].iloc[i])]
        out.append("cues: " + (", ".join(bits) if bits else "none (no landmarks)") + ("<br>head " + " ".join(pose) if pose else ""))
    return out


def label_runs(bins: pd.DataFrame, step: float) -> pd.DataFrame:
    """Consecutive bins with the same personalised label as (t_start, t_end, label) runs (hidden faces: no run)."""
    if bins.empty or "personal_label" not in bins:
        return pd.DataFrame(columns=["t_start", "t_end", "label"])
    b = bins.sort_values("t_start")
    lab = b["personal_label"].where(b["face_visible"].astype(bool)).to_numpy(object)
    t = b["t_start"].to_numpy(float)
    rows = []
    i = 0
    while i < len(b):
        j = i
        while j + 1 < len(b) and lab[j + 1] == lab[i] and abs(t[j + 1] - t[j] - step) < 1e-6:
            j += 1
        if lab[i] is not None and not (isinstance(lab[i], float) and np.isnan(lab[i])):
            rows.append({"t_start": t[i], "t_end": t[j] + step, "label": str(lab[i])})
        i = j + 1
    return pd.DataFrame(rows, columns=["t_start", "t_end", "label"])
