"""The therapy pages' behaviour chart: minutes of each tagged behaviour per week, the tag count on each bar."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from services.therapy import week_name

# Not the expression colours: a behaviour called "happy" is a clinician's tag, not the model's estimate.
BEHAVIOUR_COLORS = ("#00897b", "#5e35b1", "#8d6e63", "#3949ab", "#c0ca33", "#00acc1", "#d81b60", "#6d4c41")


def behaviour_figure(per_week: pd.DataFrame, title: str = "Tagged behaviours, week over week") -> go.Figure:
    """Grouped bars: x the weeks (oldest first), one bar per behaviour, height its minutes, text its count."""
    fig = go.Figure()
    weeks = sorted(set(per_week["week"]))
    names = [week_name(w) for w in weeks]
    for i, (label, g) in enumerate(per_week.groupby("label", sort=True)):
        by = g.set_index("week")
        minutes = [round(float(by.at[w, "seconds"]) / 60, 2) if w in by.index else 0.0 for w in weeks]
        counts = [int(by.at[w, "count"]) if w in by.index else 0 for w in weeks]
        fig.add_bar(x=names, y=minutes, name=str(label), text=[f"{c}×" for c in counts], textposition="outside",
                    marker_color=BEHAVIOUR_COLORS[i % len(BEHAVIOUR_COLORS)], customdata=counts,
                    hovertemplate=f"{label}<br>%{{x}}: %{{customdata}} tags, %{{y:.1f}} min<extra></extra>")  # fmt: skip
    fig.update_layout(title=title, barmode="group", height=320, margin=dict(l=60, r=20, t=50, b=40),
                      yaxis_title="minutes tagged", legend=dict(orientation="h", y=1.02, yanchor="bottom"))  # fmt: skip
    return fig
