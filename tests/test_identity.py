"""identity.resolve: who each track of a new analysis is, from a roster read by the caller (no database)."""

from __future__ import annotations

import numpy as np

from identity.resolve import Roster, resolve
from storage.people import OverrideSpec
from tests.test_persons import face, record


def test_overrides_first_then_the_enrolled_by_embedding_and_the_rest_unknown():
    tracks = [record(0, face(1), 0, 3), record(1, face(2), 0, 3), record(2, face(3), 0, 3), record(3, None, 0, 1)]
    roster = Roster(
        enrolled={7: np.stack([face(1, 0.1)]), 8: np.stack([face(2, 0.1), face(9)])},
        overrides=[OverrideSpec(20, 0.0, 3.0, face(1, 0.05))],  # a person's correction beats the roster's match
        threshold=0.5, analysis_fps=2.0,
    )  # fmt: skip
    out = {r.track_key: r for r in resolve(tracks, roster)}
    assert (out[0].person_id, out[0].match_score) == (20, None)
    assert out[1].person_id == 8 and 0 < out[1].match_score <= 1  # matched by its nearest enrolled embedding
    assert out[2].person_id is None and out[3].person_id is None  # a stranger, and a track without a face embedding
    assert [t.person_id for t in tracks] == [None] * 4  # the caller's records are left as they were


def test_an_override_cuts_a_track_and_the_rest_is_still_matched():
    tracks = [record(0, face(1), 0, 5.5)]
    roster = Roster(enrolled={7: face(1, 0.1)[None]}, overrides=[OverrideSpec(20, 3.0, 5.5, face(1, 0.05))],
                    threshold=0.5, analysis_fps=2.0)  # fmt: skip
    parts = sorted(resolve(tracks, roster), key=lambda r: r.times[0])
    # The override's part is the person's; the rest is one person per session, matched once: not also 20.
    assert [p.person_id for p in parts] == [7, 20]
    assert parts[0].times.max() < 3.0 <= parts[1].times.min()
    assert not resolve(tracks, Roster())[0].person_id  # an empty roster: nobody is known
