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

from storage.repo import ACADEMIC_COLUMNS, EXPRESSION_COLUMNS

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
