"""What the dashboard's buttons change: each a ``services`` call (permission, visibility, audit row,
the consent guard), then ``dashboard.data.invalidate`` so no cached read shows the old state."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from affectline.kinds import SessionKind
from affectline.settings import Settings
from dashboard.data import Viewer, invalidate
from services import analyses, exports, people, sessions
from services import tags as tag_service
from services.exports import Export, ExportFormat


def enqueue_analysis(
    url: str, settings: Settings, viewer: Viewer, filename: str, video: bytes | BinaryIO, kind: SessionKind | str,
    group_id: int, title: str | None = None, analysis_fps: float | None = None,
) -> tuple[int, int]:  # fmt: skip
    """Save an uploaded video under ``data_dir/uploads``, commit a session and a queued job, then enqueue it.

    Returns (session id, job id). If the broker refuses, the job is marked failed with the reason and the
    error is raised.
    """
    analyses.check_upload_group(url, viewer, group_id, kind)  # refuse before writing gigabytes to disk
    fps = analyses.check_fps(analysis_fps or settings.analysis_fps, settings.bin_seconds)  # before the file is written
    dest = analyses.save_upload(settings, filename, video)
    sid, jid = analyses.create_analysis(
        url, viewer, dest, kind, group_id, fps, title=title or Path(filename).stem,
        audit_action="upload", file=analyses.safe_filename(filename), bytes=dest.stat().st_size,
    )  # fmt: skip
    invalidate()
    analyses.enqueue(url, settings, sid, jid)
    return sid, jid


def export_session(url: str, viewer: Viewer, session_id: int, fmt: ExportFormat) -> Export:
    """The session's export (``services.exports``: the same bytes as the CLI's), audited."""
    out = exports.export_session(url, viewer, session_id, fmt)
    invalidate()
    return out


def enroll_track(url: str, viewer: Viewer, session_id: int, track_id: int, name: str) -> int:
    """Enrol a visible session's track as a named person."""
    pid = people.enroll_track(url, viewer, session_id, track_id, name).id
    invalidate()
    return pid


def rename_person(url: str, viewer: Viewer, person_id: int, label: str) -> None:
    """Rename a person of a visible group (this also enrols an 'Unknown N')."""
    people.rename(url, viewer, person_id, label)
    invalidate()


def merge_persons(url: str, viewer: Viewer, keep_id: int, other_id: int) -> None:
    """Make ``other`` part of ``keep``; both must be visible."""
    people.merge(url, viewer, keep_id, other_id)
    invalidate()


def delete_person(url: str, viewer: Viewer, person_id: int) -> None:
    """Delete a person with embeddings, timelines and tags (audited by id only)."""
    people.delete(url, viewer, person_id)
    invalidate()


def add_tag(url: str, viewer: Viewer, session_id: int, person_id: int, t_start: float, t_end: float, label: str,
            note: str = "", is_baseline: bool = False) -> str:  # fmt: skip
    """Tag a time range of a person in a visible session (audited as the CLI's ``add_tag``); returns the tag's uid."""
    return tag_service.add(url, viewer, session_id, person_id, t_start, t_end, label, note, is_baseline).uid


def edit_tag(url: str, viewer: Viewer, session_id: int, uid: str, **changes) -> None:
    """Change a current tag of a visible session (t_start, t_end, label, note, is_baseline): a new version."""
    tag_service.edit(url, viewer, uid, session_id=session_id, **changes)


def delete_tag(url: str, viewer: Viewer, session_id: int, uid: str) -> None:
    """Delete a current tag of a visible session (a new, deleted version; history and audit kept)."""
    tag_service.delete(url, viewer, uid, session_id=session_id)


def add_tag_label(url: str, viewer: Viewer, name: str) -> str:
    """Add a clinic label to the tag vocabulary (audited)."""
    return tag_service.add_label(url, viewer, name)


def admin_create_group(url: str, viewer: Viewer, name: str, kind: SessionKind | str) -> int:
    gid = sessions.create_group(url, viewer, name, kind)
    invalidate()
    return gid


def admin_delete_session(url: str, viewer: Viewer, session_id: int) -> None:
    """Delete a session with everything analysed from it (audited), then its review copy."""
    from affectline.settings import get_settings

    sessions.delete_session(url, viewer, session_id, get_settings().data_dir)
    invalidate()
