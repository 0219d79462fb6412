"""The small enumerations every layer speaks: roles, kinds of session, job states, consent purposes.

Stored as their string values (``storage.models`` maps them to columns); the front ends use them
without importing storage.
"""

from __future__ import annotations

import enum


class Role(str, enum.Enum):
    teacher = "teacher"
    clinician = "clinician"
    admin = "admin"


class SessionKind(str, enum.Enum):
    classroom = "classroom"
    therapy = "therapy"


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"  # by an operator (affectline jobs cancel); retry re-queues it


class ConsentPurpose(str, enum.Enum):
    analysis = "analysis"  # per-person timelines, tracks, embeddings
    thumbnails = "thumbnails"  # small face images beside a track


# The one kind of group each non-admin role works with (an admin sees every group).
ROLE_KIND: dict[Role, SessionKind] = {Role.teacher: SessionKind.classroom, Role.clinician: SessionKind.therapy}
