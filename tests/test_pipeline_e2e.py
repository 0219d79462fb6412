"""The whole path on real footage and synthetic videos: video -> tracks -> stored bins -> export."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select

from affectline.model_cards import card_for
from affectline.queue import ANALYZE_TASK
from storage.db import session_scope
from storage.models import Job, JobStatus, Person, Recording, TimeBin, Track
from storage.repo import EXPORT_COLUMNS, create_job, create_recording, export_frame
from tests.synth import paste_video, write_video


@pytest.fixture(scope="module")
def pipeline():
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline

    with Pipeline(Settings(academic_model="cues"), device="cpu") as p:
        yield p


def _run(job_id: int, settings, pipeline) -> None:
    from tasks.eager import JobFailed, run_analysis

    try:
        run_analysis(job_id, settings, pipeline=pipeline)
    except JobFailed:
        pass  # recorded on the job row, which the tests check


def _analyse(db_url: str, settings, pipeline, video: Path, fps: float = 2.0) -> tuple[int, int]:
    """Create a session + job and run it through the same code as the worker."""
    with session_scope(db_url) as s:
        rec = create_recording(s, str(video), "classroom")
        job = create_job(s, ANALYZE_TASK, session_id=rec.id, params={"analysis_fps": fps})
        ids = rec.id, job.id
    _run(ids[1], settings, pipeline)
    return ids


@pytest.fixture(scope="module")
def faces(media_dir: Path) -> list[np.ndarray]:
    """Four real face crops (with margin) from the group photo, as RGB."""
    import dlib

    img = cv2.cvtColor(cv2.imread(str(media_dir / "group_multiface.jpg")), cv2.COLOR_BGR2RGB)
    rects = dlib.get_frontal_face_detector()(img, 1)
    out = []
    for r in sorted(rects, key=lambda r: r.left())[:4]:
        cx, cy, half = (r.left() + r.right()) // 2, (r.top() + r.bottom()) // 2, int(r.width() * 0.9)
        crop = img[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half]
        out.append(cv2.resize(crop, (96, 96)))
    assert len(out) == 4
    return out


def test_crowd_video_gives_several_tracks_stored_and_exported(db_url, settings, pipeline, media_dir, tmp_path):
    rid, jid = _analyse(db_url, settings, pipeline, media_dir / "crowd_walk_1080p.mp4", fps=4.0)
    with session_scope(db_url) as s:
        job = s.get(Job, jid)
        assert job.status == JobStatus.done, job.error
        n_tracks = s.scalar(select(func.count()).select_from(Track).where(Track.session_id == rid))
        assert n_tracks >= 3  # 4-5 clear foreground faces at frame 60
        df = export_frame(s, rid)
        rec = s.get(Recording, rid)
        assert rec.academic_model.startswith("cues@")
        assert card_for(rec.expression_model) is not None, rec.expression_model  # the default model has measured figures
    assert list(df.columns) == list(EXPORT_COLUMNS)
    assert df["person_id"].nunique() == n_tracks
    eng = df["engagement"].dropna()  # empty where no landmarks were found on a tiny face: unknown, not 0
    assert len(eng) >= 0.7 * len(df) and ((eng >= 0) & (eng <= 1)).all()
    # Read faces (and bins with no face: the cue model's verdict) sum to 1; unreadable ones have none at all.
    read = ~df.face_visible | (df.readable > 0)
    assert read.sum() >= 0.5 * len(df) and df.loc[df.face_visible, "readable"].notna().all()
    acad = df[["neutrality", "enjoyment", "confusion", "fatigue", "distraction"]].to_numpy()
    assert np.allclose(acad[read].sum(axis=1), 1, atol=1e-3) and np.isnan(acad[~read]).all()
    expr = df[["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]].to_numpy()
    seen = (df.face_visible & read).to_numpy()
    assert np.allclose(expr[seen].sum(axis=1), 1, atol=1e-3) and np.isnan(expr[~read.to_numpy()]).all()
    assert df.loc[~read, "unreadable_reason"].notna().all() and df.loc[read, "unreadable_reason"].isna().all()
    # faces are where people are: boxes sit in the frame and the lower part of a walking crowd
    with session_scope(db_url) as s:
        from storage.db import from_blob

        boxes = np.concatenate([from_blob(t.face_boxes, 4) for t in s.scalars(select(Track).where(Track.session_id == rid))])
    assert (boxes[:, 0] >= -5).all() and (boxes[:, 2] <= 1925).all() and (boxes[:, 3] - boxes[:, 1] > 8).all()


def test_group_photo_finds_every_face(db_url, settings, pipeline, media_dir, tmp_path):
    img = cv2.cvtColor(cv2.imread(str(media_dir / "group_multiface.jpg")), cv2.COLOR_BGR2RGB)
    img = img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2]
    video = write_video(tmp_path / "group.mp4", 10, 5, (img.shape[1], img.shape[0]), lambda i: img)
    rid, jid = _analyse(db_url, settings, pipeline, video, fps=5.0)
    with session_scope(db_url) as s:
        assert s.get(Job, jid).status == JobStatus.done
        persons = s.scalar(select(func.count(func.distinct(TimeBin.person_id))).where(TimeBin.session_id == rid))
    assert persons == 6


def test_synthetic_absence_gives_exact_bins(db_url, settings, pipeline, faces, tmp_path):
    # Face A present all 6 s; face B absent from 2 s to 4 s; 5 fps, analysed at 5 fps.
    video = paste_video(
        tmp_path / "two.mp4", faces[:2],
        [lambda i: (60, 100), lambda i: None if 10 <= i < 20 else (400, 100)], frames=30, fps=5,
    )  # fmt: skip
    rid, jid = _analyse(db_url, settings, pipeline, video, fps=5.0)
    with session_scope(db_url) as s:
        assert s.get(Job, jid).status == JobStatus.done
        df = export_frame(s, rid)
    assert df["person_id"].nunique() == 2  # B keeps its identity across the gap
    per = df.groupby("person_id")
    assert sorted(per.size().tolist()) == [6, 6]
    vis = {pid: g.sort_values("t_start")["face_visible"].tolist() for pid, g in per}
    assert sorted(vis.values()) == sorted([[True] * 6, [True, True, False, False, True, True]])
    assert df["t_start"].min() == 0.0 and df["t_end"].max() == pytest.approx(6.0)


def test_video_without_faces_is_a_session_with_zero_persons(db_url, settings, pipeline, tmp_path):
    video = write_video(tmp_path / "empty_room.mp4", 20, 10, (320, 180), lambda i: np.full((180, 320, 3), 40 + i, np.uint8))
    rid, jid = _analyse(db_url, settings, pipeline, video)
    with session_scope(db_url) as s:
        job = s.get(Job, jid)
        assert job.status == JobStatus.done and job.error is None
        assert s.scalar(select(func.count()).select_from(TimeBin).where(TimeBin.session_id == rid)) == 0
        assert export_frame(s, rid).empty


def test_rerun_replaces_instead_of_duplicating(db_url, settings, pipeline, faces, tmp_path):
    video = paste_video(tmp_path / "one.mp4", faces[:1], [lambda i: (100, 80)], frames=15, fps=5)
    rid, jid = _analyse(db_url, settings, pipeline, video, fps=5.0)
    with session_scope(db_url) as s:
        before = s.scalar(select(func.count()).select_from(TimeBin))
        job2 = create_job(s, ANALYZE_TASK, session_id=rid, params={"analysis_fps": 5.0})
        jid2 = job2.id
    _run(jid2, settings, pipeline)
    with session_scope(db_url) as s:
        assert s.scalar(select(func.count()).select_from(TimeBin)) == before
        assert s.scalar(select(func.count()).select_from(Person)) == 1


@pytest.mark.parametrize("kind", ["missing", "text", "truncated"])
def test_bad_input_fails_the_job_and_touches_nothing_else(db_url, settings, pipeline, faces, media_dir, tmp_path, kind):
    good = paste_video(tmp_path / "good.mp4", faces[:1], [lambda i: (100, 80)], frames=10, fps=5)
    rid_good, _ = _analyse(db_url, settings, pipeline, good, fps=5.0)
    with session_scope(db_url) as s:
        snapshot = export_frame(s, rid_good)
    bad = {
        "missing": tmp_path / "nope.mp4",
        "text": tmp_path / "notes.mp4",
        "truncated": tmp_path / "cut.mp4",
    }[kind]
    if kind == "text":
        bad.write_text("not a video")
    if kind == "truncated":
        bad.write_bytes((media_dir / "crowd_walk_1080p.mp4").read_bytes()[:200_000])
    rid, jid = _analyse(db_url, settings, pipeline, bad)
    with session_scope(db_url) as s:
        job = s.get(Job, jid)
        assert job.status == JobStatus.failed
        assert str(bad) in job.error and "\n" not in job.error
        assert s.scalar(select(func.count()).select_from(TimeBin).where(TimeBin.session_id == rid)) == 0
        pd.testing.assert_frame_equal(export_frame(s, rid_good), snapshot)


def test_whole_frame_searches_follow_the_time_grid_whatever_the_chunking():
    from pipeline.analyse import full_search_frames

    times = np.arange(0, 6, 0.25)  # 4 fps
    single, _ = full_search_frames(times, 1.0, None)
    assert np.flatnonzero(single).tolist() == [0, 4, 8, 12, 16, 20]
    # In chunks of 2 s, batches of 3: the same frames (a chunk starts with last_slot=None).
    chunked = []
    for c in range(3):
        last = None
        for b in range(0, 8, 3):
            full, last = full_search_frames(times[c * 8 : (c + 1) * 8][b : b + 3], 1.0, last)
            chunked.extend(full.tolist())
    assert chunked == single.tolist()
    assert full_search_frames(times, 0.0, None)[0].all()  # 0: every frame


def test_local_search_between_whole_searches_keeps_every_person(media_dir):
    """On real footage, searching whole once a second gives the persons and samples of
    searching every frame whole, with fewer whole searches."""
    from affectline.settings import Settings
    from pipeline.analyse import Pipeline

    runs = {}
    for every in (0.0, 1.0):
        with Pipeline(Settings(academic_model="cues", full_search_every_s=every), device="cpu") as p:
            runs[every] = p.apply(media_dir / "two_people_head_turns_270p.mp4", fps=4)
    whole, local = runs[0.0], runs[1.0]
    assert len(local.tracks) == len(whole.tracks) == 2
    assert whole.n_full_searches == sum(1 for _ in np.arange(0, whole.info.duration, 0.25))
    assert local.n_full_searches < whole.n_full_searches
    for a, b in zip(whole.tracks, local.tracks):
        assert abs(len(a.times) - len(b.times)) <= 1
        assert np.nanmax(np.abs(a.bins["engagement"].to_numpy() - b.bins["engagement"].to_numpy())) < 0.1


def test_real_classroom_gives_no_emotion_for_a_face_it_cannot_read(db_url, settings, pipeline, media_dir):
    """The sample classroom (four students, faces 10-20 px): before the readability gate 75% of its
    student-seconds were exported as "confusion". No face-second may carry an academic emotion or an
    expression unless it was readable, and every unreadable one says why, in the export too."""
    from recognition.face.readability import REASONS
    from services import summaries as sm
    from services.exports import frame_bytes

    rid, jid = _analyse(db_url, settings, pipeline, media_dir / "classroom_4students_270p.mp4", fps=4.0)
    with session_scope(db_url) as s:
        assert s.get(Job, jid).status == JobStatus.done, s.get(Job, jid).error
        df = export_frame(s, rid)
    assert df["person_id"].nunique() >= 3
    vis = df[df.face_visible]
    assert len(vis) >= 6
    acad = vis[list(sm.ACADEMIC)].to_numpy(float)
    expr = vis[["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]].to_numpy(float)
    read = (vis["readable"] > 0).to_numpy()
    assert np.isnan(acad[~read]).all() and np.isnan(expr[~read]).all()  # no label of any kind when unreadable
    assert np.isfinite(acad[read]).all()
    assert vis.loc[~read, "unreadable_reason"].isin(REASONS).all() and vis.loc[read, "unreadable_reason"].isna().all()
    # faces this small are declined for their size (pupils ~4-9 px apart, the gate reads from 14)
    assert (~read).mean() >= 0.9 and (vis.loc[~read, "unreadable_reason"] == "too_small").mean() >= 0.9
    # a "confusion" second needs a readable face
    confused = sm._dominant(vis) == sm.ACADEMIC.index("confusion")
    assert not (confused & ~read).any()
    summary = sm.student_summary(df, 1.0)
    assert summary["minutes_not_readable"].sum() == pytest.approx((~read).sum() / 60)
    text = frame_bytes(df, "csv").decode()
    assert "readable,unreadable_reason,pose_reliable" in text.splitlines()[0] and "too_small" in text
