"""One rule for who each track of an analysis is, in three steps:

1. the human corrections of this session (``overrides``) take the tracks, or the parts of tracks, they
   claim (``identity.overrides.apply_overrides``);
2. the rest are matched one to one to the group's enrolled persons by face embedding, no further than
   the threshold (``recognition.tracking.assign_to_persons``: Hungarian on the nearest enrolled
   embedding of each person);
3. what stays unclaimed keeps ``person_id`` None: the analyses writer makes it a new 'Unknown N'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from affectline.ownership import slack
from identity.overrides import Override, R, apply_overrides


@dataclass(frozen=True)
class Roster:
    """What the group knows of its people, read by the caller: enrolled persons' embeddings
    {person_id: (k, 128)}, this session's overrides, the match threshold (Euclidean, as dlib's) and
    the analysis rate (an override claims samples up to half a sampling interval past its range)."""

    enrolled: Mapping[int, np.ndarray] = field(default_factory=dict)
    overrides: Sequence[Override] = ()
    threshold: float = 0.5
    analysis_fps: float | None = None


def resolve(tracks: Sequence[R], roster: Roster) -> list[R]:
    """The tracks with ``person_id`` (and ``match_score`` for an embedding match) set where the roster
    says who they are; a track cut by an override comes back as several records."""
    from recognition.tracking import assign_to_persons

    out = apply_overrides(tracks, roster.overrides, roster.threshold, tol=slack(roster.analysis_fps))
    free = [i for i, r in enumerate(out) if r.person_id is None and r.embedding is not None]
    if roster.enrolled and free:
        found = assign_to_persons(np.stack([out[i].embedding for i in free]), dict(roster.enrolled), roster.threshold)
        for i, (pid, score) in zip(free, found):
            if pid is not None:
                out[i] = dataclasses.replace(out[i], person_id=pid, match_score=float(score))
    return out
