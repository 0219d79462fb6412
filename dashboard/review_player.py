"""The review player: a Streamlit custom component with the session's review copy in an HTML5 video and
a timeline under it, synced both ways (``dashboard/components/review_player``: ``index.html`` and
``player.js``, a plain ES module that is its own build).

A click on the timeline or on a moment band plays the video from there; while it plays a cursor moves
on the timeline; the page asks for a seek with ``seek=(t, nonce)`` (a moment button), applied once per
nonce; a pause returns ``{"t": seconds, "paused": True}`` to the page. The video comes from
``dashboard.review_route`` (same origin: the login cookie goes with it, rights checked there).

Tagging while watching (``coding=True``): the group's vocabulary gives each label a key (a state
label's key starts an event at the video's time and the same key ends it; a point label's key marks
one instant); ``,`` ``.`` step one frame at the copy's ``fps``, arrows one second, ``[`` ``]`` the
speed, space plays and pauses, Backspace or Ctrl+Z undoes the last coded action. Tags are drawn in
one lane per label (names in the gutter, so they never overprint), in ``tag_colours`` (none of them
an expression's colour); a click on a tag opens it to change or delete. Each coded action goes back
as an event with an id of its own in ``value["events"]`` (every event not yet answered), and the page
passes the answers (``services.tagging.apply_events``) back in ``answers``: an event is stored once
however often a rerun delivers it.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

FRONTEND = Path(__file__).resolve().parent / "components" / "review_player"
MAX_POINTS = 600
# Tag colours: Paul Tol's muted scheme (colour-blind safe) without its sand, which is close to the
# "happy" yellow; none equals an expression's or an academic emotion's colour (tests check).
TAG_PALETTE = ("#44AA99", "#332288", "#CC6677", "#117733", "#882255", "#6699CC", "#999933", "#AA4499", "#EE8866",
               "#225555", "#663333", "#4477AA")  # fmt: skip
CALM_COLOUR = "#88CCEE"
OUTSIDE_COLOUR = "#8C8C8C"  # a tag whose label is not (or no longer) in the vocabulary
MAX_ANSWERS = 200


@lru_cache(maxsize=1)
def _component():
    from streamlit.components.v1 import declare_component

    return declare_component("affectline_review_player", path=str(FRONTEND))


def tag_colours(vocabulary: Sequence, labels: Iterable[str] = ()) -> dict[str, str]:
    """A colour per label: the vocabulary's in order (the calm label light blue), then grey for tag
    labels outside it. ``vocabulary``: items with ``label`` and ``calm`` (``services.vocabulary.VocabItem``)."""
    out, i = {}, 0
    for it in vocabulary:
        if it.calm:
            out[it.label] = CALM_COLOUR
        else:
            out[it.label] = TAG_PALETTE[i % len(TAG_PALETTE)]
            i += 1
    for lab in labels:
        out.setdefault(str(lab), OUTSIDE_COLOUR)
    return out


def _finite(v, what: str) -> float:
    x = float(v)
    if not math.isfinite(x):
        raise ValueError(f"{what} {v!r} is not a finite time")
    return x


def player_args(src: str, curve: Iterable[tuple[float, float | None]], t0: float, t1: float,
                moments: Sequence[tuple[float, float, str]] = (), seek: tuple[float, int] | None = None,
                caption: str = "", muted: bool = False, tags: Sequence[dict] = (), vocabulary: Sequence = (),
                fps: float = 25.0, coding: bool = False, answers: dict | None = None) -> dict:  # fmt: skip
    """The component's arguments (JSON): the curve thinned to ``MAX_POINTS``, NaN as null, times as floats;
    tags as {uid, t0, t1, label}, the vocabulary with a colour per label, the newest answers."""
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
        **_coding_args(tags, vocabulary, fps, coding, answers),
    }  # fmt: skip


def _coding_args(tags, vocabulary, fps, coding, answers) -> dict:
    if not (math.isfinite(float(fps)) and float(fps) > 0):
        raise ValueError(f"frame rate {fps!r} must be a positive number")
    items = list(vocabulary)
    colours = tag_colours(items, (t["label"] for t in tags))
    answers = dict(answers or {})
    if len(answers) > MAX_ANSWERS:  # the newest are the ones the player may still wait for
        answers = dict(list(answers.items())[-MAX_ANSWERS:])
    return {
        "tags": [{"uid": str(t["uid"]), "t0": _finite(t["t0"], "tag start"), "t1": _finite(t["t1"], "tag end"),
                  "label": str(t["label"])} for t in tags],
        "vocabulary": [{"label": it.label, "key": it.key, "kind": getattr(it.kind, "value", it.kind),
                        "calm": bool(it.calm), "colour": colours[it.label]} for it in items],
        "colours": colours, "fps": float(fps), "coding": bool(coding), "answers": answers,
    }  # fmt: skip


def review_player(key: str, height: int = 520, **kwargs) -> dict | None:
    """Mount the player (arguments as ``player_args``); returns the last value the player sent, or None."""
    return _component()(**player_args(**kwargs), key=key, default=None, height=height)


def take_events(value: dict | None, answers: dict, apply) -> bool:
    """Store the events a player value carries and keep their answers in ``answers`` (the page's session
    state, passed back to the player); True when an answer is new (the page reruns to show it).

    ``apply(events) -> {id: Applied}`` is ``services.tagging.apply_events`` bound to the session and
    child: it stores each event once, so a value delivered again on a rerun changes nothing. Events
    already answered here are not sent to it again."""
    events = (value or {}).get("events") if isinstance(value, dict) else None
    if not isinstance(events, list) or not events:
        return False
    waiting = [e for e in events if not (isinstance(e, dict) and e.get("id") in answers)]
    if not waiting:
        return False
    new = False
    for eid, a in apply(waiting).items():
        got = a.to_json()
        if answers.get(eid) != got:
            answers[eid] = got
            new = True
    while len(answers) > MAX_ANSWERS:
        answers.pop(next(iter(answers)))
    return new
