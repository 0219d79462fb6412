"""The review player: a Streamlit custom component with the session's review copy in an HTML5 video and
a timeline under it, synced both ways (``dashboard/components/review_player``: ``index.html`` and
``player.js``, a plain ES module that is its own build).

A click on the timeline or on a moment band plays the video from there; while it plays a cursor moves
on the timeline; the page asks for a seek with ``seek=(t, nonce)`` (a moment button), applied once per
nonce; a pause returns ``{"t": seconds, "paused": True}`` to the page. The video comes from
``dashboard.review_route`` (same origin: the login cookie goes with it, rights checked there).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

FRONTEND = Path(__file__).resolve().parent / "components" / "review_player"
MAX_POINTS = 600


@lru_cache(maxsize=1)
def _component():
    from streamlit.components.v1 import declare_component

    return declare_component("affectline_review_player", path=str(FRONTEND))


def player_args(src: str, curve: Iterable[tuple[float, float | None]], t0: float, t1: float,
                moments: Sequence[tuple[float, float, str]] = (), seek: tuple[float, int] | None = None,
                caption: str = "", muted: bool = False) -> dict:  # fmt: skip
    """The component's arguments (JSON): the curve thinned to ``MAX_POINTS``, NaN as null, times as floats."""
    pts = [(float(t), None if v is None or not math.isfinite(float(v)) else float(v)) for t, v in curve]
    if len(pts) > MAX_POINTS:
        stride = math.ceil(len(pts) / MAX_POINTS)
        pts = pts[::stride]
    if not t1 > t0:
        raise ValueError(f"timeline range {t0}-{t1} is empty")
    return {
        "src": src, "range": [float(t0), float(t1)], "curve": [list(p) for p in pts],
        "moments": [[float(a), float(b), str(label)] for a, b, label in moments],
        "seek": None if seek is None else {"t": float(seek[0]), "nonce": int(seek[1])},
        "caption": caption, "muted": bool(muted),
    }  # fmt: skip


def review_player(key: str, height: int = 520, **kwargs) -> dict | None:
    """Mount the player (arguments as ``player_args``); returns the last value the player sent, or None."""
    return _component()(**player_args(**kwargs), key=key, default=None, height=height)
