"""dashboard.plot: the charts' own plotly.js bundle (pinned, at the wheel's plotly.js version, cached for good)
and the figure JSON it is given. The real-browser proof (drawn once, nothing else fetched) is in
tests/test_browser.py; bench/dashboard.py times it."""

from __future__ import annotations

import hashlib
import json

import plotly.graph_objects as go
import pytest
from plotly.offline import get_plotlyjs_version
from starlette.applications import Starlette
from starlette.testclient import TestClient

from dashboard import plot


def test_the_bundle_is_the_pinned_file_at_the_plotly_js_version_the_figures_are_built_for():
    body = plot.BUNDLE.read_bytes()
    assert hashlib.sha256(body).hexdigest() == plot.BUNDLE_SHA256
    assert plot.PLOTLY_JS_VERSION == get_plotlyjs_version()  # a plotly upgrade needs the matching bundle
    assert f"plotly.js (cartesian - minified) v{plot.PLOTLY_JS_VERSION}".encode() in body[:200]
    assert (plot.FRONTEND / "LICENSE-plotly.js.txt").read_text().startswith("MIT License")


def test_the_bundle_is_served_once_and_kept_by_the_browser():
    client = TestClient(Starlette(routes=plot.ROUTES))
    r = client.get(plot.BUNDLE_URL)
    assert r.status_code == 200 and r.content == plot.BUNDLE.read_bytes()
    assert r.headers["content-type"].startswith("text/javascript")
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert client.get(plot.BUNDLE_URL.replace(plot.PLOTLY_JS_VERSION, "0.0.0")).status_code == 404


def test_figure_json_is_what_plotly_js_reads_and_refuses_what_the_bundle_cannot_draw():
    # the template named, not read from pio.templates.default: another test module may have changed that
    fig = go.Figure([go.Scatter(x=[0, 1], y=[2, 3], name="a"), go.Heatmap(z=[[1, 2]]), go.Bar(y=[1])],
                    layout={"template": plot.TEMPLATE})
    out = json.loads(plot.figure_json(fig))
    assert [t["type"] for t in out["data"]] == ["scatter", "heatmap", "bar"]
    assert out["layout"]["template"]["layout"]["font"]["family"] == '"Source Sans", sans-serif'  # the page's font
    with pytest.raises(ValueError, match="cannot draw scattergl traces"):
        plot.figure_json(go.Figure(go.Scattergl(x=[0], y=[0])))
