"""Bad input gives one line naming the input and what is wrong, exit non-zero, the job failed,
and nothing stored touched; failed or empty sessions are marked so and never shown first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from storage.db import migrate, session_scope
from storage.models import Job, JobStatus, Recording, TimeBin

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "cli.main"]


def _env(tmp_path: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFECTLINE_") or k == "AFFECTLINE_MODEL_DIR"}
    env.update(AFFECTLINE_DATA_DIR=str(tmp_path / "data"), **extra)
    return env


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'affectline.db'}"


def run_cli(tmp_path: Path, *args: str, **env: str) -> tuple[int, list[str], str]:
    r = subprocess.run([*CLI, *args], env=_env(tmp_path, **env), cwd=ROOT, capture_output=True, text=True, timeout=300,
                       input="")  # fmt: skip
    return r.returncode, [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")], r.stderr


def assert_one_line(rc: int, errors: list[str], stderr: str, *needles: str) -> None:
    assert rc != 0 and "Traceback" not in stderr, stderr[-2000:]
    assert len(errors) == 1, stderr[-2000:]
    for n in needles:
        assert n in errors[0], (n, errors[0])


def _tiny_video(path: Path, w: int, h: int, n: int = 20) -> Path:
    import av

    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=10)
        st.width, st.height, st.pix_fmt = w, h, "yuv420p"
        for _ in range(n):
            for p in st.encode(av.VideoFrame.from_ndarray(np.zeros((h, w, 3), np.uint8), format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    return path


def _stored(tmp_path: Path) -> tuple[int, int]:
    with session_scope(_url(tmp_path)) as s:
        return s.scalar(select(func.count()).select_from(TimeBin)), s.scalar(select(func.count()).select_from(Recording))


@pytest.mark.parametrize("case", ["one_pixel", "jpeg", "folder"])
def test_bad_videos_fail_the_job_in_one_line(tmp_path: Path, media_dir: Path, case: str):
    video = {
        "one_pixel": lambda: _tiny_video(tmp_path / "dot.mp4", 1, 1),
        "jpeg": lambda: media_dir / "group_multiface.jpg",
        "folder": lambda: tmp_path,
    }[case]()
    why = {"one_pixel": "frames are 1x1 pixels", "jpeg": "is a JPEG image, not a video", "folder": "is a folder"}[case]
    rc, errors, stderr = run_cli(tmp_path, "analyze", str(video))
    assert_one_line(rc, errors, stderr, str(video), why)
    with session_scope(_url(tmp_path)) as s:
        job = s.scalars(select(Job)).one()
        assert job.status == JobStatus.failed and why in job.error
        rec = s.get(Recording, job.session_id)
        from storage.repo import default_session, session_states

        assert session_states(s)[rec.id] == "failed"
        assert default_session(s) is None  # a failed session is never the one shown first
    assert _stored(tmp_path)[0] == 0


def test_a_jpeg_renamed_mp4_is_still_refused(tmp_path: Path, media_dir: Path):
    from pipeline.video import VideoError, VideoSource

    fake = tmp_path / "lesson.mp4"
    fake.write_bytes((media_dir / "group_multiface.jpg").read_bytes())
    with pytest.raises(VideoError, match="lesson.mp4: is a JPEG image, not a video"):
        VideoSource(fake)


@pytest.mark.parametrize("fps", ["nan", "inf", "-1", "0", "abc", "1e-9", "0.5", "61"])
def test_fps_must_be_a_finite_positive_number(tmp_path: Path, media_dir: Path, fps: str):
    rc, errors, stderr = run_cli(tmp_path, "analyze", str(media_dir / "two_people_head_turns_270p.mp4"), "--fps", fps)
    assert_one_line(rc, errors, stderr, f"--fps {fps}")
    assert not (tmp_path / "data" / "affectline.db").exists() or _stored(tmp_path) == (0, 0)  # nothing created


def test_fps_is_at_least_a_frame_per_bin(tmp_path: Path, media_dir: Path):
    """``--fps 1e-9`` gave a 15 s video two rows: fewer frames than bins is refused, naming the bound,
    which follows the bin size."""
    rc, errors, stderr = run_cli(tmp_path, "analyze", str(media_dir / "two_people_head_turns_270p.mp4"), "--fps", "0.2",
                                 AFFECTLINE_BIN_SECONDS="2")  # fmt: skip
    assert_one_line(rc, errors, stderr, "--fps 0.2", "at least 0.5 frames a second", "2 s bin")


def test_fps_bounds_hold_in_the_settings_and_the_upload_service(tmp_path: Path):
    from affectline.settings import Settings, analysis_fps_problem
    from services.analyses import check_fps

    assert analysis_fps_problem(4.0, 1.0) is None and analysis_fps_problem(0.5, 2.0) is None
    assert "at least 1 frame a second" in analysis_fps_problem(0.5, 1.0)
    assert "at most 60" in analysis_fps_problem(120.0, 1.0)
    assert Settings(bin_seconds=4.0, analysis_fps=0.25).analysis_fps == 0.25
    with pytest.raises(ValueError, match="at least 1 frame a second"):
        Settings(analysis_fps=0.01)
    with pytest.raises(ValueError, match=r"analysis fps 1e-09: must be at least 1 frame a second"):
        check_fps(1e-9, 1.0)
    rc, errors, stderr = run_cli(tmp_path, "sessions", "list", AFFECTLINE_ANALYSIS_FPS="0.01")
    assert_one_line(rc, errors, stderr, "AFFECTLINE_ANALYSIS_FPS='0.01'", "at least 1 frame a second")


def test_a_text_file_named_mp4_prints_only_the_one_line(tmp_path: Path):
    """libav ("moov atom not found") and decord ("ERROR opening ...") print their own lines when a
    file is probed; the user sees only ours."""
    bad = tmp_path / "notes.mp4"
    bad.write_text("lesson notes, not a video\n" * 20)
    rc, _, stderr = run_cli(tmp_path, "analyze", str(bad), "--eager")
    lines = stderr.splitlines()
    assert rc == 1 and len(lines) == 1, stderr
    assert lines[0].startswith(f"Error: {bad}: is not a video file or is damaged")
    # Verbose: the decoder's lines are there, in the debug log, for whoever asks.
    rc, _, stderr = run_cli(tmp_path, "-v", "analyze", str(bad), "--eager")
    assert rc == 1 and "moov atom not found" in stderr and "DEBUG pipeline.video: decoder:" in stderr


def test_the_decoder_guard_keeps_other_messages(tmp_path: Path):
    """Holding fd 2 while a file is probed must not swallow what anything else writes meanwhile."""
    code = ("import os, sys\n"
            "from pipeline.video import _quiet_stderr\n"
            "with _quiet_stderr():\n"
            "    os.write(2, b'[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55c08f4f2700] moov atom not found\\n')\n"
            "    os.write(2, b'[18:56:35] /github/workspace/src/video/video_reader.cc:83: ERROR opening: x.mp4\\n')\n"
            "    print('WARNING tasks.chunks: lease renewal failed', file=sys.stderr)\n"
            "print('after', file=sys.stderr)\n")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), cwd=ROOT, capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == ["WARNING tasks.chunks: lease renewal failed", "after"]


@pytest.mark.parametrize(("name", "value"), [("AFFECTLINE_ANALYSIS_FPS", "fast"), ("AFFECTLINE_CHUNK_SECONDS", "nan"),
                                             ("AFFECTLINE_LEASE_SECONDS", "0"), ("AFFECTLINE_EMBEDDER", "opencv")])  # fmt: skip
def test_bad_setting_is_one_line_naming_it(tmp_path: Path, name: str, value: str):
    rc, errors, stderr = run_cli(tmp_path, "sessions", "list", **{name: value})
    assert_one_line(rc, errors, stderr, f"{name}={value!r}")


def _session_with_bins(tmp_path: Path) -> int:
    import pandas as pd

    from storage import repo

    url = _url(tmp_path)
    migrate(url)
    with session_scope(url) as s:
        g = repo.get_or_create_group(s, "Year 5", "classroom")
        rec = repo.create_recording(s, "/v/lesson.mp4", "classroom", group_id=g.id)
        bins = pd.DataFrame({"t_start": [0.0, 1.0], "t_end": [1.0, 2.0], "face_visible": [True, True],
                             "engagement": [0.5, 0.6]})  # fmt: skip
        tr = repo.TrackRecord(track_key=0, times=np.array([0.5, 1.5]), face_boxes=np.zeros((2, 4)),
                              context_boxes=np.zeros((2, 4)), embedding=None, bins=bins, features=np.zeros((2, 1)),
                              feature_names=("x",))  # fmt: skip
        repo.replace_analysis(s, repo.AnalysisResult(rec.id, 10.0, 20, 64, 64, 2.0, 1.0, "cues", "fer", [tr]))
        return rec.id


@pytest.mark.parametrize("target", ["/dev/full", "folder", "unwritable"])
def test_export_to_a_bad_path_is_one_line(tmp_path: Path, target: str):
    sid = _session_with_bins(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = {"/dev/full": "/dev/full", "folder": str(tmp_path), "unwritable": str(blocker / "sub" / "x.csv")}[target]
    rc, errors, stderr = run_cli(tmp_path, "export", str(sid), "-o", out)
    assert_one_line(rc, errors, stderr, out)
    assert _stored(tmp_path) == (2, 1)
    assert blocker.read_text() == "x"


def test_deleting_a_session_while_it_is_analysed_is_refused(tmp_path: Path):
    from affectline.queue import ANALYZE_TASK
    from storage import jobs, repo

    sid = _session_with_bins(tmp_path)
    url = _url(tmp_path)
    with session_scope(url) as s:
        job = repo.create_job(s, ANALYZE_TASK, session_id=sid, params={"analysis_fps": 2.0})
        jid = job.id
        jobs.claim_job(s, jid, "plan", "some-worker", 30)
    rc, errors, stderr = run_cli(tmp_path, "sessions", "delete", str(sid), "--yes")
    assert_one_line(rc, errors, stderr, f"session {sid} is being analysed (job {jid}", f"affectline jobs cancel {jid}")
    assert _stored(tmp_path) == (2, 1)  # nothing touched
    rc, _, stderr = run_cli(tmp_path, "jobs", "cancel", str(jid))
    assert rc == 0, stderr
    rc, _, stderr = run_cli(tmp_path, "sessions", "delete", str(sid), "--yes")
    assert rc == 0, stderr
    assert _stored(tmp_path) == (0, 0)


def test_a_session_deleted_under_a_running_job_fails_it_cleanly(tmp_path: Path):
    """The dashboard's admin may still force a deletion: the link then stores nothing and says why."""
    from tasks.store import JobFailed, store
    from storage import repo

    sid = _session_with_bins(tmp_path)
    url = _url(tmp_path)
    with session_scope(url) as s:
        repo.delete_session(s, sid, "admin", force=True)
    with pytest.raises(JobFailed, match=f"session {sid} was deleted during its analysis"):
        store(url, sid, None, None)  # type: ignore[arg-type]


def test_empty_and_failed_sessions_are_marked_and_never_default(tmp_path: Path):
    from affectline.queue import ANALYZE_TASK
    from storage import jobs, repo

    ready = _session_with_bins(tmp_path)
    url = _url(tmp_path)
    with session_scope(url) as s:
        g = repo.get_or_create_group(s, "Year 5", "classroom")
        empty = repo.create_recording(s, "/v/empty.mp4", "classroom", group_id=g.id)
        ej = repo.create_job(s, ANALYZE_TASK, session_id=empty.id)
        repo.update_job(s, ej.id, status=JobStatus.done)
        failed = repo.create_recording(s, "/v/broken.mp4", "classroom", group_id=g.id)
        fj = repo.create_job(s, ANALYZE_TASK, session_id=failed.id)
        jobs.fail_job(s, fj.id, "broken")
        busy = repo.create_recording(s, "/v/busy.mp4", "classroom", group_id=g.id)
        repo.create_job(s, ANALYZE_TASK, session_id=busy.id)
        ids = (empty.id, failed.id, busy.id)
    with session_scope(url) as s:
        states = repo.session_states(s)
        assert [states[i] for i in (ready, *ids)] == ["ready", "empty", "failed", "queued"]
        assert repo.default_session(s).id == ready  # the newest three are not ready
    rc, _, stderr = run_cli(tmp_path, "sessions", "list")
    assert rc == 0, stderr
