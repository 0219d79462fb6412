"""Starting an analysis: a session row, a queued job, and the task enqueued by name after the commit."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable

from affectline.queue import ANALYZE_TASK, make_celery
from affectline.settings import Settings
from services import outage
from services.actor import Actor, require
from services.db import scope
from storage import repo
from storage.models import Group, JobStatus, SessionKind

VIDEO_TYPES = ("mp4", "mov", "avi", "mkv", "webm", "m4v")


def safe_filename(name: str) -> str:
    """A file name that cannot escape the uploads folder or carry odd characters."""
    base = Path(name).name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "video"
    return stem[-120:]


def send_analysis(settings: Settings, job_id: int) -> None:
    """Enqueue the analysis task by name (the worker imports torch; we do not)."""
    make_celery(settings).send_task(ANALYZE_TASK, args=[job_id])


def check_fps(analysis_fps: float, bin_seconds: float | None = None) -> float:
    """``analysis_fps`` as a float, or ValueError in one line naming it (bins of ``bin_seconds``,
    default the settings'): check it before an upload is written."""
    from affectline.settings import analysis_fps_problem, get_settings

    try:
        fps = float(analysis_fps)
    except (TypeError, ValueError):
        fps = float("nan")
    problem = analysis_fps_problem(fps, bin_seconds or get_settings().bin_seconds)
    if problem:
        raise ValueError(f"analysis fps {analysis_fps!r}: {problem}")
    return fps


def check_upload_group(url: str, actor: Actor, group_id: int, kind: SessionKind | str) -> None:
    """Refuse (before an upload is written) a group that is missing, hidden, or of the other kind."""
    require(actor, "upload")
    kind = SessionKind(kind)
    with scope(url) as s:
        group = s.get(Group, group_id)
        if group is None or not actor.sees(group_id):
            raise LookupError(f"group {group_id} does not exist or is not visible to you")
        if SessionKind(group.kind) is not kind:
            raise ValueError(f"group {group.name!r} is a {SessionKind(group.kind).value} group, not {kind.value}")


def create_analysis(
    url: str, actor: Actor, video_path: str | Path, kind: SessionKind | str, group_id: int, analysis_fps: float,
    title: str | None = None, audit_action: str = "analyse", bin_seconds: float | None = None, **audit_detail,
) -> tuple[int, int]:  # fmt: skip
    """Commit a session for ``video_path`` in a visible group of the right kind and a queued job.

    Returns (session id, job id); nothing is enqueued yet (see ``send_analysis``). An analysis rate
    that leaves bins without a frame (``affectline.settings.analysis_fps_problem``) is refused."""
    require(actor, "upload")
    check_fps(analysis_fps, bin_seconds)
    check_upload_group(url, actor, group_id, kind)
    kind = SessionKind(kind)
    with scope(url) as s:
        path = Path(video_path)
        rec = repo.create_recording(s, str(path.resolve()), kind, title=title or path.stem, group_id=group_id)
        job = repo.create_job(s, ANALYZE_TASK, session_id=rec.id, params={"analysis_fps": float(analysis_fps)})
        repo.audit(s, actor.audit_name, audit_action, f"session:{rec.id}", job=job.id, **audit_detail)
        return rec.id, job.id


def enqueue(url: str, settings: Settings, session_id: int, job_id: int, wait_s: float = 0.0,
            say: Callable[[str], None] | None = None) -> None:  # fmt: skip
    """Send the committed job to the workers. An unreachable broker is retried for ``wait_s`` seconds
    (``say`` tells the user); if it still refuses, or refuses for good (a full disk under the embedded
    broker's file), the job is marked failed with why, in one line, and ``RuntimeError`` says the same."""
    try:  # only after the commit: the worker must find the row
        outage.retrying(lambda: send_analysis(settings, job_id), "broker", wait_s, say or (lambda _msg: None))
    except Exception as e:
        why = e.reason if isinstance(e, outage.Unreachable) else outage.reason(e)  # "database or disk is full"
        if isinstance(e, outage.Unreachable) and e.waited_s >= 1:
            why += f" (the broker was unreachable for {e.waited_s:.0f} s)"
        with scope(url) as s:
            repo.update_job(s, job_id, status=JobStatus.failed, error=f"could not queue the analysis: {why}",
                            message="failed")  # fmt: skip
        raise RuntimeError(f"session {session_id} saved, but the analysis could not be queued: {why}; job {job_id} "
                           f"is failed ('affectline jobs retry {job_id}' sends it again)") from e  # fmt: skip


def save_upload(settings: Settings, filename: str, video: bytes | BinaryIO) -> Path:
    """Store an uploaded video under ``data_dir/uploads`` with a unique, safe name."""
    if Path(filename).suffix.lower().lstrip(".") not in VIDEO_TYPES:
        raise ValueError(f"{filename}: not a video file type the analysis reads ({', '.join(VIDEO_TYPES)})")
    dest_dir = settings.data_dir / "uploads"
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}_{uuid.uuid4().hex[:8]}_{safe_filename(filename)}"
    with open(dest, "wb") as f:  # stream in chunks: a lesson video can be gigabytes
        if isinstance(video, (bytes, bytearray, memoryview)):
            f.write(video)
        else:
            while chunk := video.read(1 << 20):
                f.write(chunk)
    return dest
