"""The review player's coding arguments and the page's handling of its events (no browser): tag colours
apart from the expression colours, plain JSON, and a value delivered again on a rerun stored once."""

from __future__ import annotations

import json

import pytest

from dashboard.charts import ACADEMIC_COLORS, EXPRESSION_COLORS
from dashboard.review_player import CALM_COLOUR, OUTSIDE_COLOUR, player_args, tag_colours, take_events
from services.actor import actor_for_user
from services.tagging import apply_events, player_tags
from services.vocabulary import DEFAULTS, SessionKind
from storage.db import session_scope
from tests.dashboard_factories import seed


def test_tag_colours_are_distinct_and_never_an_expressions():
    vocab = DEFAULTS[SessionKind.therapy]
    colours = tag_colours(vocab, ["happy", "old label"])
    own = [colours[it.label] for it in vocab]
    assert len(set(own)) == len(own)
    taken = {c.lower() for c in (*EXPRESSION_COLORS.values(), *ACADEMIC_COLORS.values())}
    assert not {c.lower() for c in colours.values()} & taken
    assert colours["calm"] == CALM_COLOUR and colours["happy"] == colours["old label"] == OUTSIDE_COLOUR


def test_coding_arguments_are_plain_json():
    vocab = DEFAULTS[SessionKind.therapy]
    a = player_args("/review/1.mp4", [(0.0, 0.5)], 0.0, 2700.0, tags=[{"uid": "u1", "t0": 5, "t1": 9.5, "label": "gone"}],
                    vocabulary=vocab, fps=12.5, coding=True, answers={"e1": {"ok": True, "message": "m", "uid": "u1"}})  # fmt: skip
    json.dumps(a, allow_nan=False)
    assert a["vocabulary"][0] == {"label": "calm", "key": "c", "kind": "state", "calm": True, "colour": CALM_COLOUR}
    assert a["tags"] == [{"uid": "u1", "t0": 5.0, "t1": 9.5, "label": "gone"}] and a["colours"]["gone"] == OUTSIDE_COLOUR
    assert a["fps"] == 12.5 and a["coding"] is True
    with pytest.raises(ValueError, match="frame rate"):
        player_args("/review/1.mp4", [], 0.0, 10.0, fps=0)
    with pytest.raises(ValueError, match="finite"):
        player_args("/review/1.mp4", [], 0.0, 10.0, tags=[{"uid": "u", "t0": float("nan"), "t1": 1, "label": "x"}])


def test_a_value_delivered_again_is_stored_once_and_asks_for_no_second_rerun(db_url):
    ids = seed(db_url)
    with session_scope(db_url) as s:
        clinician = actor_for_user(s, ids.users["clinician"])
    sid, pid = ids.sessions["therapy"], ids.persons["therapy"][0]
    calls = []

    def apply(events):
        calls.append([e["id"] for e in events])
        return apply_events(db_url, clinician, sid, pid, events)

    value = {"t": 3.0, "paused": True, "events": [{"id": "pl-abc-1", "op": "add", "t_start": 1.0, "t_end": 2.5,
                                                   "label": "anxious"}]}  # fmt: skip
    answers: dict = {}
    assert take_events(value, answers, apply) is True  # new answer: the page reruns to show it
    assert answers["pl-abc-1"]["ok"] and answers["pl-abc-1"]["uid"]
    assert take_events(value, answers, apply) is False  # the rerun sees the same value: nothing sent again
    assert calls == [["pl-abc-1"]]
    fresh: dict = {}  # a second browser tab (its own session state) delivering the same event: same tag
    assert take_events(value, fresh, apply) is True and fresh == answers
    assert len(player_tags(db_url, clinician, sid, pid)) == 1
    assert take_events({"t": 1.0, "paused": True}, answers, apply) is False  # a plain pause carries no events


def test_the_child_charts_tag_colour_is_far_from_every_expression_colour():
    from dashboard.charts import BASELINE_LINE, TAG_LINE

    rgb = lambda c: tuple(int(c[i : i + 2], 16) for i in (1, 3, 5))  # noqa: E731
    parse = lambda c: tuple(int(float(x)) for x in c[c.index("(") + 1 : -1].split(",")[:3])  # noqa: E731
    tag = parse(TAG_LINE)
    far = lambda a, b: sum((x - y) ** 2 for x, y in zip(a, b)) ** 0.5 > 80  # noqa: E731
    assert all(far(tag, rgb(c)) for c in EXPRESSION_COLORS.values()) and far(tag, parse(BASELINE_LINE))
