"""The tracker's thresholds and the track it hands on: shared by the tracker and the linkers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker thresholds; each trades one failure for another (times in seconds)."""

    high_score: float = 0.8
    """Detections at or above this start tracks and are matched first. Lower: faint
    detections (often false) start tracks; higher: a face must be clear to get a track."""
    low_score: float = 0.5
    """Detections in [low_score, high_score) only extend existing tracks, on motion alone
    (ByteTrack's second pass). Lower: tracks survive worse views but may swallow a false
    detection next to them."""
    motion_gate: float = 1.0
    """Largest distance, in face widths, between a track's predicted centre and a detection
    one frame later. Larger: fast movers and low frame rates keep their tracks; smaller:
    neighbours are less likely to be confused (matters when faces sit close together)."""
    gate_growth_per_s: float = 1.0
    """The motion gate widens by this fraction per second a track goes unseen, since the
    prediction grows uncertain."""
    max_scale_change: float = 1.5
    """Largest ratio between the widths of a track's last box and a detection (a face that
    turns or bows changes its box, a face twice the size is someone else)."""
    appearance_veto: float = 0.8
    """dlib distance above which a detection can never continue a track seen a moment ago
    (within ``embed_after_gap_s``), whatever the motion says. Different people are mostly
    0.7-0.9 apart, but one person's occluded or bowed face can be 0.7 from their frontal
    one, so this bar only stops clear swaps (people crossing)."""
    appearance_gate: float = 0.65
    """The stricter bar for a track unseen a while: a face resuming it by motion, or
    re-identified near where it was lost, must be this close. dlib's own same-person bar
    is 0.6. Lower: fewer wrong joins, more broken tracks after occlusions."""
    appearance_weight: float = 0.5
    """Share of the embedding distance in the matching cost when both sides have one."""
    max_gap_s: float = 1.0
    """A track unseen for longer no longer matches by motion, only by appearance. Longer:
    bridges longer occlusions by position; shorter: less risk of a different person
    stepping into the empty place."""
    reid_threshold: float = 0.5
    """dlib distance under which an unmatched face is given a lost track's id wherever it
    appears, and under which ``finish`` joins fragments. Stricter than matching because no
    motion backs it up. Higher: fewer fragments, more risk of merging two look-alikes."""
    reid_window_s: float = 600.0
    """How long a lost track can still be re-identified."""
    near_reid_s: float = 3.0
    """A face reappearing within this long near where a track was lost (the motion gate
    widened by the time away) needs only ``appearance_gate``: someone stepping out from
    behind another person. Later, the place says little and ``reid_threshold`` applies."""
    embed_every_s: float = 5.0
    """An unambiguously matched track gets a fresh embedding this often once it is
    established. Shorter: a richer appearance gallery (better re-identification after pose
    changes) at ~0.1 s a face."""
    embed_first_s: float = 0.5
    """A new track's second embedding comes this long after its first, and the interval
    doubles up to ``embed_every_s``: a person seen only briefly still leaves a few views to be
    re-identified by (one occluded view alone often is not enough)."""
    embed_after_gap_s: float = 0.5
    """A face that resumes a track unseen for this long is embedded, to check it is the same person."""
    min_embed_px: float = 24.0
    """Faces narrower than this are not embedded (dlib descriptors of smaller faces are too
    noisy to tell people apart); they are tracked by motion only."""
    gallery_size: int = 16
    """Embeddings kept per track for matching; the most redundant is dropped first."""
    min_hits: int = 3
    """``finish`` drops tracks with fewer detections (after joining fragments): spurious
    detections rarely repeat in one place. Higher: fewer ghost tracks, but brief glimpses
    vanish. Tracks seen in the first or last frame are kept whatever their length: in a
    chunked run they may continue in the neighbouring chunk (``link_chunks``)."""
    smooth_sigma_s: float = 0.2
    """Gaussian smoothing of boxes in time in ``finish``; 0 disables it."""
    summary_samples: int = 8
    """Embeddings kept in each ``TrackSummary`` besides the mean, spread over the track."""


@dataclass
class TrackSummary:
    """One person's final track: observed times, smoothed face boxes, appearance."""

    track_id: int
    times: np.ndarray  # (n,) seconds, increasing
    boxes: np.ndarray  # (n, 4) smoothed xyxy face boxes
    scores: np.ndarray  # (n,) detector scores
    embedding: np.ndarray  # (128,) geometric median of the track's embeddings; NaN when it has none
    embedding_samples: np.ndarray  # (k, 128) a few embeddings spread over the track
    source_ids: tuple[int, ...] = ()  # online ids (as returned by update) joined into this track

    @property
    def start(self) -> float:
        return float(self.times[0])

    @property
    def end(self) -> float:
        return float(self.times[-1])

    @property
    def duration(self) -> float:
        return self.end - self.start
