"""dlib face descriptors and roster assignment on real faces."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import pytest

from affectline.types import Detections
from recognition.reid import FaceEmbedder, pairwise_distance, robust_mean
from recognition.tracking import assign_to_persons, similarity
from tests import realseq
from tests.realseq import annotated, read_frames, read_image

embedder = realseq.embedder


@lru_cache(maxsize=1)
def group_embeddings() -> tuple[np.ndarray, np.ndarray]:
    """The six group-photo people embedded at full size (faces ~80-100 px) and at half size."""
    img = read_image("group_multiface.jpg")
    faces, _ = annotated("group_multiface.jpg")[0]
    full = embedder().embed(img, Detections(faces, np.ones(len(faces))))
    half_img = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    half = embedder().embed(half_img, Detections(faces * 0.5, np.ones(len(faces))))
    return full, half


def test_same_person_is_close_and_different_people_are_far():
    full, half = group_embeddings()
    assert full.shape == (6, 128) and full.dtype == np.float32
    assert np.isfinite(full).all() and np.linalg.norm(full, axis=1).min() > 0.5
    d = pairwise_distance(full, half)
    same, other = np.diag(d), d[~np.eye(6, dtype=bool)]
    assert same.max() < 0.35, same
    assert other.min() > 0.55, other.min()
    np.testing.assert_allclose(FaceEmbedder.distance(full[0], half), d[0], rtol=1e-5)


def test_two_people_stay_apart_through_head_turns():
    frames, _ = read_frames("two_people_head_turns_270p.mp4", [0, 20, 40, 55])
    dets = realseq.mtcnn().detect(frames)
    embs, side = [], []
    for f, d in zip(frames, dets):
        assert len(d) == 2
        embs.append(embedder().embed(f, d))
        side.append(d.centers[:, 0] > f.shape[1] / 2)  # the man sits right
    e, s = np.concatenate(embs), np.concatenate(side)
    d = pairwise_distance(e, e)
    same = d[(s[:, None] == s[None, :]) & ~np.eye(len(s), dtype=bool)]
    other = d[s[:, None] != s[None, :]]
    assert same.max() < other.min(), (same.max(), other.min())


def test_embed_edge_cases():
    img = read_image("group_multiface.jpg")
    assert embedder().embed(img, Detections.empty()).shape == (0, 128)
    with pytest.raises(ValueError, match="frame must be RGB uint8"):
        embedder().embed(img.astype(np.float32), Detections.empty())


def test_robust_mean_shrugs_off_an_outlier_and_nan_rows():
    full, half = group_embeddings()
    rows = np.stack([full[0], half[0], full[0] * 0.99 + half[0] * 0.01, full[3], np.full(128, np.nan)])
    m = robust_mean(rows)
    assert np.linalg.norm(m - full[0]) < 0.15 < np.linalg.norm(rows[:4].mean(0) - full[0]) + 0.1
    assert np.linalg.norm(m - full[3]) > 0.5
    assert np.isnan(robust_mean(np.full((2, 128), np.nan))).all()


def test_tracks_are_assigned_to_enrolled_persons():
    full, half = group_embeddings()
    enrolled = {100 + k: full[k : k + 1] for k in range(5)}  # person 5 is not enrolled
    order = [3, 5, 0, 1, 4, 2]
    got = assign_to_persons(half[order], enrolled, threshold=0.5)
    assert [p for p, _ in got] == [103, None, 100, 101, 104, 102]
    assert all(0.5 < s <= 1.0 for p, s in got if p is not None)
    assert got[1][1] < 0.5  # the stranger's best similarity stays under the bar


def test_one_person_per_track_and_one_track_per_person():
    full, half = group_embeddings()
    # Two tracks that both look like person 0: only the closer one gets them.
    got = assign_to_persons(np.stack([half[0], full[0]]), {7: full[0:1], 8: full[1:2]}, threshold=0.5)
    assert got[1][0] == 7 and got[0][0] is None
    # A person enrolled from several sessions matches on their closest embedding.
    got = assign_to_persons(half[2:3], {1: np.stack([full[4], full[2]])}, threshold=0.5)
    assert got[0][0] == 1
    assert assign_to_persons(half, {}, 0.5) == [(None, 0.0)] * 6
    assert assign_to_persons(np.full((1, 128), np.nan), {1: full[:1]}, 0.5) == [(None, 0.0)]


def test_similarity_scale():
    assert similarity(0.0, 0.5) == 1.0 and similarity(0.5, 0.5) == 0.5 and similarity(1.2, 0.5) == 0.0
