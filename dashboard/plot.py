"""Every chart of the dashboard: a plotly figure drawn by plotly.js in the page (``chart``).

Why not ``st.plotly_chart``: on a deep link opened in a new tab it was most of the wait (issue 19). Its
plotly is a 4.7 MB module chunk whose evaluation took ~0.35 s before anything was drawn, and it drew
every figure twice (~0.3 s more on the class page). Here a custom component (``st.components.v2``,
in the page's own DOM, no iframe; ``components/plotly_view/chart.js``) draws each figure once with
plotly.js's cartesian bundle: 1.5 MB, every trace type the dashboard draws (scatter, bar, heatmap). It is
one classic script served by the dashboard itself with ``immutable`` caching (``ROUTES``), so a browser
that has been here keeps it and V8's compiled code for it. ``bench/dashboard.py`` measures the page.

The bundle is npm's ``plotly.js-cartesian-dist-min`` at the plotly.js version of the ``plotly`` wheel
(the figures are built against that schema); ``BUNDLE_SHA256`` pins it and a test checks both.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from starlette.responses import FileResponse, Response
from starlette.routing import Route

FRONTEND = Path(__file__).resolve().parent / "components" / "plotly_view"
PLOTLY_JS_VERSION = "4.1.1"
BUNDLE = FRONTEND / f"plotly-cartesian-{PLOTLY_JS_VERSION}.min.js"
BUNDLE_SHA256 = "79542150855a52c567260e3137095dbe2b744e6d702a5cabe67da246942fba7a"
BUNDLE_URL = f"/affectline/static/{BUNDLE.name}"  # versioned name: a new bundle is a new URL, never a stale cache
TRACE_TYPES = frozenset({"bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour",
                         "image", "pie", "scatter", "scatterternary", "violin"})  # what the cartesian bundle draws  # fmt: skip
COMPONENT = "affectline_chart"
Brush = tuple[object, object]  # a box drawn on a chart: (from, to) in the x axis's units (dates: ISO text)

# The look st.plotly_chart's theme gave: white plots in the page's font. The default of every figure built
# after this module is imported (the pages and the warm-up import it before they build any).
pio.templates["affectline"] = go.layout.Template(layout={"font": {"family": '"Source Sans", sans-serif'}})
TEMPLATE = "plotly_white+affectline"
pio.templates.default = TEMPLATE


async def _bundle(request) -> Response:
    return FileResponse(BUNDLE, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})  # fmt: skip


ROUTES = [Route(BUNDLE_URL, _bundle, methods=["GET", "HEAD"])]


@lru_cache(maxsize=1)
def _component():
    import streamlit as st

    # isolate_styles=False: plotly.js puts its modebar and hover styles in the document's head
    return st.components.v2.component(COMPONENT, js=(FRONTEND / "chart.js").read_text(), isolate_styles=False)


def figure_json(fig) -> str:
    """The figure as plotly.js reads it (arrays as typed binary), refused if the bundle cannot draw a trace."""
    kinds = {t.type or "scatter" for t in fig.data}
    if unknown := kinds - TRACE_TYPES:
        raise ValueError(f"the dashboard's plotly bundle cannot draw {', '.join(sorted(unknown))} traces")
    return pio.to_json(fig, validate=False)


def _ignore() -> None:
    """A selection needs a registered callback to be delivered; the page reads it from the result."""


def chart(fig, key: str, *, select: bool = False, config: dict | None = None) -> Brush | None:
    """Draw ``fig`` (escape its text first: ``dashboard.safe.figure``). With ``select``, dragging across it
    draws a box (the figure's ``dragmode="select"``) and the rerun that follows returns the box's x range;
    otherwise, and on every other run, None."""
    cfg = {"displaylogo": False, **(config or {})}
    res = _component()(key=key, data={"figure": figure_json(fig), "config": cfg, "src": BUNDLE_URL, "select": select},
                       on_selection_change=_ignore)  # fmt: skip
    box = getattr(res, "selection", None) if select else None
    xs = box.get("x") if isinstance(box, dict) else None
    return (xs[0], xs[1]) if isinstance(xs, list) and len(xs) == 2 else None
