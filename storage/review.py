"""Review copies: whether a group keeps one, where it lies, and who may fetch it.

A review copy is a browser-playable MP4 (H.264, AAC audio when the source has sound) written by
the analysis from the frames it decodes (``tasks.review_copy``). It is a video of the people in
the room, so it exists only where the group allows it (``Group.video_review``; None = the
kind's default: on for therapy, off for classrooms until the school turns it on), lies in the
session's folder of derived files (``storage.retention.session_files``: deleted with the session
and by retention), and is served only to viewers who may see the session
(``dashboard.review_route``).

``Recording.review_path`` is relative to ``Settings.data_dir``, so workers and the dashboard may
mount the shared data folder at different places.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy.orm import Session

from storage.models import Group, Recording, SessionKind
from storage.retention import session_files

REVIEW_NAME = "review.mp4"
PARTS_DIR = "review_parts"


def default_for(kind: SessionKind | str) -> bool:
    """The setting of a group that was never set: therapy sessions are watched back, classes are not."""
    return SessionKind(kind) is SessionKind.therapy


def group_allows(group: Group | None, kind: SessionKind | str) -> bool:
    """Whether sessions of ``group`` (None: a session in no group, by its ``kind``) keep a review copy."""
    if group is None or group.video_review is None:
        return default_for(group.kind if group is not None else kind)
    return bool(group.video_review)


def session_allows(s: Session, session_id: int) -> bool:
    rec = s.get(Recording, session_id)
    if rec is None:
        return False
    return group_allows(s.get(Group, rec.group_id) if rec.group_id is not None else None, rec.kind)


def set_group_setting(s: Session, group_id: int, allowed: bool | None, actor: str) -> bool:
    """Turn video review on or off for a group (None: back to the kind's default); audited.

    Turning it off stops new copies; copies already kept stay until their session is deleted or
    expires (``affectline sessions delete``, retention), as with consent changes. Returns the
    effective setting."""
    from storage.repo import audit

    g = s.get(Group, group_id)
    if g is None:
        raise LookupError(f"group {group_id} does not exist")
    before = g.video_review
    g.video_review = None if allowed is None else bool(allowed)
    s.flush()
    effective = group_allows(g, g.kind)
    audit(s, actor, "video_review_set", f"group:{group_id}", target_label=g.name, setting=g.video_review,
          before=before, effective=effective)  # fmt: skip
    return effective


def copy_path(data_dir: Path, session_id: int) -> Path:
    """Where a session's review copy is written."""
    return session_files(data_dir, session_id) / REVIEW_NAME


def parts_dir(data_dir: Path, session_id: int) -> Path:
    """Where the chunks of a job leave their parts of the copy until the link joins them."""
    return session_files(data_dir, session_id) / PARTS_DIR


def relative(data_dir: Path, path: Path) -> str:
    return Path(path).resolve().relative_to(Path(data_dir).resolve()).as_posix()


def resolve(data_dir: Path, stored: str | None) -> Path | None:
    """The file a ``Recording.review_path`` names, or None when there is none (or it leaves the data dir)."""
    if not stored:
        return None
    root = Path(data_dir).resolve()
    p = (root / stored).resolve()
    if not p.is_relative_to(root) or not p.is_file():
        return None
    return p


def remove_session_files(data_dir: Path, session_id: int) -> bool:
    """Remove a deleted session's folder of derived files (review copy, parts). Call after the commit."""
    folder = session_files(data_dir, session_id)
    if not folder.exists():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True
