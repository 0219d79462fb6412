"""Starting an analysis: a session row, a queued job, and the task enqueued by name after the commit."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from affectline.queue import ANALYZE_TASK, make_celery
from affectline.settings import Settings
from services import jobs
from services.actor import Actor, require
from services.db import scope
from storage import repo
from storage.models import Group, SessionKind

VIDEO_TYPES = ("mp4", "mov", "avi", "mkv", "webm", "m4v")


def safe_filename(name: str) -> str:
    """A file name that cannot escape the uploads folder or carry odd characters."""
    base = Path(name).name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "video"
    return stem[-120:]


def send_analysis(settings: Settings, job_id: int) -> None:
    """Enqueue the analysis task by name (the worker imports torch; we do not)."""
    make_celery(settings).send_task(ANALYZE_TASK, args=[job_id])


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
    title: str | None = None, audit_action: str = "analyse", **audit_detail,
) -> tuple[int, int]:  # fmt: skip
    """Commit a session for ``video_path`` in a visible group of the right kind and a queued job.

    Returns (session id, job id); nothing is enqueued yet (see ``send_analysis``)."""
    check_upload_group(url, actor, group_id, kind)
    kind = SessionKind(kind)
    with scope(url) as s:
        path = Path(video_path)
        rec = repo.create_recording(s, str(path.resolve()), kind, title=title or path.stem, group_id=group_id)
        job = repo.create_job(s, ANALYZE_TASK, session_id=rec.id, params={"analysis_fps": float(analysis_fps)})
        repo.audit(s, actor.audit_name, audit_action, f"session:{rec.id}", job=job.id, **audit_detail)
        return rec.id, job.id


def enqueue(url: str, settings: Settings, session_id: int, job_id: int) -> None:
    """Send the committed job to the workers (``services.jobs.enqueue``: a refusing broker fails the job with why)."""
    # only after the commit: the worker must find the row; send_analysis looked up here, so tests can replace it
    jobs.enqueue(url, settings, ANALYZE_TASK, job_id, f"session {session_id} saved, but the analysis",
                 send=lambda st, jid: send_analysis(st, jid))  # fmt: skip


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
