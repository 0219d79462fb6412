"""Start loading the chart library with the page, not after the page asks for its first chart.

Streamlit imports its plotly chunk (4.7 MB of JavaScript) only when the first chart arrives over
the websocket, after the app has booted, connected and run the page's script: in a new tab (a deep
link opened from a message, the usual way a teacher arrives at a lesson) the fetch, compile and
evaluation of that chunk then lie on the critical path, ~1-1.5 s of the 3+ s to the last chart
drawn (measured: ``bench/dashboard.py``, "new tab" opens). A ``<link rel="modulepreload">`` for the
chunk in the page's HTML lets the browser fetch and compile it while the app boots. Pure ASGI
middleware: only Streamlit's index page (``text/html`` answers) is touched; every other answer
(the websocket, static files, the review-copy video) passes through untouched.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

# The chunks worth preloading: Streamlit's plotly element (every page of ours with data draws one).
CHUNKS = ("PlotlyChart",)


@lru_cache(maxsize=1)
def preload_tags() -> bytes:
    """``<link rel="modulepreload">`` tags for ``CHUNKS`` in the installed Streamlit's static bundle."""
    import streamlit

    js = Path(streamlit.__file__).resolve().parent / "static" / "static" / "js"
    names = sorted(p.name for c in CHUNKS for p in js.glob(f"{c}.*.js"))
    # Relative, like the index page's own script tags, so a base URL path or a page path resolves them alike.
    return "".join(f'<link rel="modulepreload" crossorigin href="./static/js/{n}">' for n in names).encode()


def inject(html: bytes, tags: bytes) -> bytes:
    """``html`` with ``tags`` just before ``</head>`` (unchanged when there is no head or no tag)."""
    if not tags or tags in html:
        return html
    i = html.find(b"</head>")
    return html if i < 0 else html[:i] + tags + html[i:]


def _page_path(path: str) -> bool:
    """A page's address (``/``, ``/session``): not a file, not Streamlit's or our own API routes."""
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return "." not in last and not any(f"/{p}" in path for p in ("_stcore", "component", "media", "review", "app/static"))


class PreloadCharts:
    """ASGI middleware: adds ``preload_tags()`` to HTML answers of GET requests."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "GET" or not _page_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        # The index page is ~8 kB: asked for uncompressed (Streamlit's gzip sits inside this middleware).
        scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"accept-encoding"]}
        start: dict | None = None
        body: list[bytes] = []

        async def wrapped(message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if headers.get(b"content-type", b"").startswith(b"text/html") and b"content-encoding" not in headers:
                    start = message  # held until the body is complete (the index page is ~5 kB)
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            html = inject(b"".join(body), preload_tags())
            headers = [(k, v) for k, v in start.get("headers") or [] if k.lower() != b"content-length"]
            await send({**start, "headers": headers + [(b"content-length", str(len(html)).encode())]})
            await send({"type": "http.response.body", "body": html})

        await self.app(scope, receive, wrapped)
