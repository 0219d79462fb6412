"""Chunk results -> the video's persons: identities stitched across chunk boundaries, timelines joined.

Pure: no models, no video. Identities are stitched first by overlap (neighbouring chunks
analysed the same frames around their boundary, so one face has the same boxes at the
same times on both sides: ``match_by_overlap``), then by the tracker's own rules on
motion and appearance for what the overlap did not settle (someone who left and came
back later: ``link_chunks``). A person's timeline is the concatenation of its chunk
tracks' bins (each chunk owns the bins that start in its window), with 'no face' bins
filled in between, each chunk track's scores first re-read against the person's own
baseline over the whole session (``pipeline.relative``). The work and memory here are bounded by persons x bins; sample arrays
are carried along only when asked (``with_samples``), for in-process runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from affectline.types import TimeGrid, VideoInfo
from pipeline.bins import absent_bins
from pipeline.chunk import ChunkResult, ChunkTrack
from pipeline.relative import CueSamples, relative_parts

CONFIRM_SCORE = 0.95
"""A track counts as a person once the landmarker confirmed a face in it at least once, or
the detector was sure of it (most samples at >= 0.95). Detector false positives (hair,
patterned cloth) persist for seconds at ~0.88 and never give landmarks; real faces too
small to landmark (10-20 px classroom faces) score above 0.95."""


@dataclass
class PersonTrack:
    """One linked person-track of the analysed video, before storage."""

    key: int
    times: np.ndarray
    face_boxes: np.ndarray
    context_boxes: np.ndarray
    embedding: np.ndarray | None
    bins: pd.DataFrame
    features: np.ndarray
    thumbnail: bytes | None = None
    sources: list[tuple[int, int]] = field(default_factory=list)  # (chunk index, chunk-local track id)
    cue_samples: CueSamples | None = None  # for a re-read against a clinician's baseline (tasks.store.store)


@dataclass
class PipelineOutput:
    info: VideoInfo
    analysis_fps: float
    bin_seconds: float
    academic_model: str
    expression_model: str
    tracks: list[PersonTrack]
    n_face_samples: int = 0
    n_full_searches: int = 0  # frames searched whole for faces; the others only near tracked faces


def is_confirmed(parts: list[ChunkTrack]) -> bool:
    n = sum(p.n_samples for p in parts)
    return n > 0 and (any(p.n_found for p in parts) or 2 * sum(p.n_confident for p in parts) > n)


def _summary(tr: ChunkTrack):
    from recognition.tracking import TrackSummary

    n = len(tr.link_times)
    return TrackSummary(tr.track_id, np.asarray(tr.link_times, np.float64), np.asarray(tr.link_boxes, np.float32),
                        np.ones(n, np.float32), np.asarray(tr.embedding, np.float64),
                        np.asarray(tr.embedding_samples, np.float32).reshape(-1, 128))  # fmt: skip


def _in_zone(tracks: list[ChunkTrack], t0: float, t1: float):
    """(times, boxes) of each track inside [t0, t1), and the ids of the tracks seen there."""
    out, who = [], []
    for tr in tracks:
        t = np.asarray(tr.overlap_times, np.float64)
        sel = (t >= t0) & (t < t1)
        if sel.any():
            out.append((t[sel], np.asarray(tr.overlap_boxes)[sel]))
            who.append(tr.track_id)
    return out, who


def identities(chunks: list[ChunkResult]) -> dict[tuple[int, int], int]:
    """(chunk position in ``chunks``, chunk-local track id) -> person id, 0, 1, ... by first appearance."""
    from recognition.tracking import link_chunks, match_by_overlap

    joined = []
    for c in range(len(chunks) - 1):
        a, b = chunks[c], chunks[c + 1]
        if abs(b.start - a.end) > 1e-6:
            continue  # not neighbours: only appearance can link them
        both = (b.analysed.start, a.analysed.end)  # the frames both chunks analysed
        (left, lw), (right, rw) = _in_zone(a.tracks, *both), _in_zone(b.tracks, *both)
        joined += [((c, lw[i]), (c + 1, rw[j])) for i, j in match_by_overlap(left, right)]
    summaries = [[_summary(tr) for tr in ch.tracks if len(tr.link_times)] for ch in chunks]
    mapping = link_chunks(summaries, joined=joined)
    # Tracks seen only in an overlap zone (no sample in their own window) take their partner's id.
    nxt = max(mapping.values(), default=-1) + 1
    parent = {}
    for a, b in joined:
        parent.setdefault(a, b)
        parent.setdefault(b, a)
    for c, ch in enumerate(chunks):
        for tr in ch.tracks:
            k = (c, tr.track_id)
            if k not in mapping:
                p = parent.get(k)
                mapping[k] = mapping[p] if p in mapping else nxt
                nxt += p not in mapping
    return mapping


def link_chunk_results(chunks: list[ChunkResult], info: VideoInfo, fps: float, settings=None,
                       with_samples: bool = True) -> PipelineOutput:  # fmt: skip
    """The video's persons from its chunks' results (in any order; duplicates of a chunk index are an error)."""
    chunks = sorted(chunks, key=lambda c: c.index)
    if len({c.index for c in chunks}) != len(chunks):
        raise ValueError(f"chunk results repeat an index: {[c.index for c in chunks]}")
    if not chunks:
        return PipelineOutput(info, fps, getattr(settings, "bin_seconds", 1.0), "", "", [])
    step = chunks[0].bin_seconds
    grid = TimeGrid(step)
    mapping = identities(chunks)
    groups: dict[int, list[tuple[int, ChunkTrack]]] = {}
    for c, ch in enumerate(chunks):
        for tr in ch.tracks:
            if tr.n_samples:
                groups.setdefault(mapping[(c, tr.track_id)], []).append((c, tr))
    absent = (chunks[0].absent_academic, chunks[0].absent_engagement)
    persons = []
    for gid, parts in groups.items():
        trs = [p for _, p in parts]
        if not is_confirmed(trs):
            continue
        persons.append((min(float(p.times[0]) for p in trs), gid, parts))
    tracks = []
    model, academic = _cue_model(chunks[0].academic_model)
    for key, (_, gid, parts) in enumerate(sorted(persons, key=lambda p: (p[0], p[1]))):
        parts.sort(key=lambda p: p[1].times[0])
        trs = [p for _, p in parts]
        # Scores read against this person's own session baseline (pipeline.relative).
        trs, _ = relative_parts(trs, model, grid, academic)
        bins, feats = _timeline(trs, grid, info.duration, absent)
        valid = [np.asarray(p.embedding, np.float32) for p in trs if np.isfinite(p.embedding).all()]
        cat = (lambda k, w: np.concatenate([np.asarray(getattr(p, k), np.float32).reshape(-1, w) for p in trs]))
        tracks.append(PersonTrack(
            key=key,
            times=np.concatenate([p.times for p in trs]).astype(np.float32) if with_samples else np.zeros(0, np.float32),
            face_boxes=cat("face_boxes", 4) if with_samples else np.zeros((0, 4), np.float32),
            context_boxes=cat("context_boxes", 4) if with_samples else np.zeros((0, 4), np.float32),
            embedding=np.mean(valid, axis=0) if valid else None,  # faces too small to embed have none
            bins=bins, features=feats, thumbnail=next((p.thumbnail for p in trs if p.thumbnail), None),
            sources=[(chunks[c].index, p.track_id) for c, p in parts], cue_samples=CueSamples.of(trs),
        ))  # fmt: skip
    return PipelineOutput(
        info=info, analysis_fps=fps, bin_seconds=step, academic_model=chunks[0].academic_model,
        expression_model=chunks[0].expression_model, tracks=tracks,
        n_face_samples=sum(c.n_face_samples for c in chunks), n_full_searches=sum(c.n_full_searches for c in chunks),
    )  # fmt: skip


def _cue_model(academic_model: str):
    """The cue model that re-reads the persons, and whether it also gives their academic
    emotions (it does unless a window model such as CLIP-CAER made them; engagement is
    always the cue model's)."""
    from recognition.academic.cues import CueModel

    model = CueModel()
    return model, academic_model == f"{model.name}@{model.sha256[:12]}"


def _timeline(parts: list[ChunkTrack], grid: TimeGrid, duration: float, absent) -> tuple[pd.DataFrame, np.ndarray]:
    """One person's bins: its chunk tracks' bins in time order, 'no face' bins between them."""
    dfs, feats = [], []
    last = None
    for p in parts:
        if not len(p.bins):
            continue
        idx = np.asarray(grid.index(p.bins["t_start"].to_numpy() + 1e-9 * grid.step), np.int64)
        keep = idx > last if last is not None else np.ones(len(idx), bool)  # never a bin twice
        if last is not None and keep.any() and idx[keep][0] > last + 1:
            gap = np.arange(last + 1, idx[keep][0])
            d, f = absent_bins(grid, gap, duration, *absent)
            dfs.append(d)
            feats.append(f)
        dfs.append(p.bins[keep])
        feats.append(p.features[keep])
        if keep.any():
            last = int(idx[keep][-1])
    df = pd.concat(dfs, ignore_index=True) if dfs else pd.DataFrame()
    return df, (np.concatenate(feats).astype(np.float32) if feats else np.zeros((0, 0), np.float32))
