"""Face tracking over time, joining tracks across chunks, context boxes and roster matching."""

from recognition.tracking.context import context_box, context_boxes
from recognition.tracking.merge import link_chunks, link_fragments, match_by_overlap
from recognition.tracking.persons import assign_to_persons, similarity
from recognition.tracking.tracker import Tracker, TrackerConfig, TrackSummary, smooth_boxes

__all__ = [
    "TrackSummary",
    "Tracker",
    "TrackerConfig",
    "assign_to_persons",
    "context_box",
    "context_boxes",
    "link_chunks",
    "link_fragments",
    "match_by_overlap",
    "similarity",
    "smooth_boxes",
]
