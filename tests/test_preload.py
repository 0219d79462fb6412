"""The chart library preloaded with every page (dashboard.preload): the tag is in the page's HTML as
the real server sends it to a browser (gzip asked for), it names a chunk the server serves, and
nothing else the server answers is touched; off by the setting."""

from __future__ import annotations

import http.client
from urllib.parse import urlparse

import pytest

from dashboard.preload import _page_path, inject, preload_tags
from tests.browser import dashboard_server

BROWSER_HEADERS = {"Accept-Encoding": "gzip, deflate, br", "Accept": "text/html"}


def get(base: str, path: str, headers: dict | None = None):
    u = urlparse(base)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("GET", path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def test_tags_name_the_installed_plotly_chunk_and_go_before_the_head_ends():
    tags = preload_tags()
    assert tags.startswith(b'<link rel="modulepreload" crossorigin href="./static/js/PlotlyChart.') and tags.endswith(b'.js">')
    page = b"<html><head><title>x</title></head><body></body></html>"
    out = inject(page, tags)
    assert out.index(tags) < out.index(b"</head>") and out.replace(tags, b"") == page
    assert inject(out, tags) == out  # once
    assert inject(b"<p>no head</p>", tags) == b"<p>no head</p>"
    assert [p for p in ("/", "/session", "/x/review") if _page_path(p)] == ["/", "/session"]
    assert not any(_page_path(p) for p in ("/static/js/a.js", "/_stcore/health", "/review/3.mp4", "/component/x/index.html"))


def test_the_server_sends_the_tag_and_serves_the_chunk(tmp_path):
    with dashboard_server(tmp_path / "data") as base:
        status, headers, body = get(base, "/session?session=1", BROWSER_HEADERS)
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert "content-encoding" not in headers and int(headers["content-length"]) == len(body)
        assert preload_tags() in body and body.count(b"PlotlyChart.") == 1
        href = preload_tags().split(b'href="./', 1)[1].split(b'"', 1)[0].decode()
        status, headers, js = get(base, "/" + href, BROWSER_HEADERS)
        assert status == 200 and len(js) > 1_000_000 and "javascript" in headers["content-type"]
        # Other answers pass untouched: the health check, and the review route's refusal without a login.
        assert get(base, "/_stcore/health")[2] == b"ok"
        status, _, body = get(base, "/review/1.mp4", BROWSER_HEADERS)
        assert status == 403 and b"modulepreload" not in body


@pytest.mark.slow
def test_off_by_the_setting(tmp_path):
    with dashboard_server(tmp_path / "data", env={"AFFECTLINE_DASHBOARD_PRELOAD_CHARTS": "false"}) as base:
        status, _, body = get(base, "/session", {"Accept": "text/html"})  # uncompressed: the HTML itself
        assert status == 200 and b"</head>" in body and b"./static/js/index." in body
        assert b"PlotlyChart." not in body
