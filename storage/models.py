"""SQLAlchemy 2.0 ORM models.

Privacy: no face images are stored unless ``Settings.store_thumbnails``; timelines
and features only. Tags and enrolled persons belong to the group, not the analysis,
so re-analysing a session never loses them.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from affectline.kinds import ConsentPurpose, JobStatus, Role, SessionKind  # noqa: F401  (stored as columns here)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Group(Base):
    """A class (teacher) or a child's caseload (clinician): the unit of access."""

    __tablename__ = "groups"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (issue 12)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[SessionKind] = mapped_column(Enum(SessionKind, native_enum=False, length=20))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Whether analyses keep a browser-playable review copy of the video (storage.review): None = the
    # kind's default (on for therapy, off for classrooms until the school turns it on).
    video_review: Mapped[bool | None] = mapped_column(Boolean)


class User(Base):
    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (issue 12)
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=20))
    password_hash: Mapped[str | None] = mapped_column(String(300))  # argon2id (or legacy pbkdf2); None = cannot log in
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")  # cannot log in; kept for the audit trail
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UserGroup(Base):
    __tablename__ = "user_groups"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)


class Person(Base):
    """Someone seen on video. Unmatched tracks become unenrolled persons labelled 'Unknown N'."""

    __tablename__ = "persons"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (issue 12)
    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="SET NULL"), index=True)
    label: Mapped[str] = mapped_column(String(200))
    enrolled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The session whose analysis created this (unenrolled) person; re-analysis replaces them.
    origin_session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    embeddings: Mapped[list["PersonEmbedding"]] = relationship(cascade="all, delete-orphan", passive_deletes=True)


class PersonEmbedding(Base):
    """A 128-d dlib face descriptor (float32 blob) that identifies an enrolled person."""

    __tablename__ = "person_embeddings"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (issue 12)
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    source: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdentityOverride(Base):
    """A human correction (split/reassign) keyed by appearance, so it survives re-analysis."""

    __tablename__ = "identity_overrides"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (issue 12)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    t_start: Mapped[float] = mapped_column(Float)
    t_end: Mapped[float] = mapped_column(Float)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    created_by: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Recording(Base):
    """An uploaded video and what was learnt from it (a 'session' to users)."""

    __tablename__ = "sessions"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (issue 12)
    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="SET NULL"), index=True)
    kind: Mapped[SessionKind] = mapped_column(Enum(SessionKind, native_enum=False, length=20))
    title: Mapped[str] = mapped_column(String(300))
    video_path: Mapped[str] = mapped_column(Text)
    fps: Mapped[float | None] = mapped_column(Float)
    n_frames: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    duration: Mapped[float | None] = mapped_column(Float)
    analysis_fps: Mapped[float | None] = mapped_column(Float)
    bin_seconds: Mapped[float | None] = mapped_column(Float)
    academic_model: Mapped[str | None] = mapped_column(String(200))
    expression_model: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    analysed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The review copy (storage.review), relative to Settings.data_dir; None = none kept.
    review_path: Mapped[str | None] = mapped_column(Text)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (issue 12)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    task: Mapped[str] = mapped_column(String(100))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, native_enum=False, length=20), default=JobStatus.queued)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Chunked analyses (issue 10, storage/jobs.py): phase plan -> chunks -> link; a lease on
    # the job row covers plan and link, the chunk rows carry their own.
    phase: Mapped[str] = mapped_column(String(20), default="plan", server_default="plan")
    chunks_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    chunks_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobChunk(Base):
    """One time window of an analysis job: its lease and, once done, its ``ChunkResult`` bytes.

    Keyed by (job, chunk index, pipeline version): a retried chunk replaces its own row only."""

    __tablename__ = "job_chunks"
    __table_args__ = (UniqueConstraint("job_id", "idx", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(String(64))
    t_start: Mapped[float] = mapped_column(Float)
    t_end: Mapped[float] = mapped_column(Float)
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, native_enum=False, length=20), default=JobStatus.queued)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[bytes | None] = mapped_column(LargeBinary)  # pipeline.chunk.ChunkResult.to_bytes()


class Track(Base):
    """One person's continuous presence in a session, with per-sample face and context boxes."""

    __tablename__ = "tracks"
    __table_args__ = (UniqueConstraint("session_id", "track_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    track_key: Mapped[int] = mapped_column(Integer)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    match_score: Mapped[float | None] = mapped_column(Float)
    t_start: Mapped[float] = mapped_column(Float)
    t_end: Mapped[float] = mapped_column(Float)
    n_samples: Mapped[int] = mapped_column(Integer)
    # float32 blobs: times (n,), face boxes (n,4), context boxes (n,4), mean embedding (128,)
    times: Mapped[bytes] = mapped_column(LargeBinary)
    face_boxes: Mapped[bytes] = mapped_column(LargeBinary)
    context_boxes: Mapped[bytes] = mapped_column(LargeBinary)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary)  # JPEG, only if store_thumbnails


class TimeBin(Base):
    """One person, one time bin: the row the timelines, charts and exports are made of."""

    __tablename__ = "time_bins"
    __table_args__ = (Index("ix_time_bins_session_person_t", "session_id", "person_id", "t_start"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    track_id: Mapped[int | None] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    t_start: Mapped[float] = mapped_column(Float)
    t_end: Mapped[float] = mapped_column(Float)
    face_visible: Mapped[bool] = mapped_column(Boolean)
    engagement: Mapped[float | None] = mapped_column(Float)
    neutrality: Mapped[float | None] = mapped_column(Float)
    enjoyment: Mapped[float | None] = mapped_column(Float)
    confusion: Mapped[float | None] = mapped_column(Float)
    fatigue: Mapped[float | None] = mapped_column(Float)
    distraction: Mapped[float | None] = mapped_column(Float)
    angry: Mapped[float | None] = mapped_column(Float)
    disgust: Mapped[float | None] = mapped_column(Float)
    fear: Mapped[float | None] = mapped_column(Float)
    happy: Mapped[float | None] = mapped_column(Float)
    sad: Mapped[float | None] = mapped_column(Float)
    surprise: Mapped[float | None] = mapped_column(Float)
    neutral: Mapped[float | None] = mapped_column(Float)
    # The readability gate (issue 17, migration 0005): share of the bin's face-frames whose expression could be
    # read (the expression and academic columns are means over those only; NULL where no face was seen), why
    # not when none could, and the share whose head pose (and so engagement) was still reliable.
    readable: Mapped[float | None] = mapped_column(Float)
    unreadable_reason: Mapped[str | None] = mapped_column(String(40))
    pose_reliable: Mapped[float | None] = mapped_column(Float)
    # Clinician model output (issue 5): top label, its confidence, "uncertain" below threshold.
    personal_label: Mapped[str | None] = mapped_column(String(100))
    personal_confidence: Mapped[float | None] = mapped_column(Float)
    academic_model: Mapped[str] = mapped_column(String(200))
    expression_model: Mapped[str] = mapped_column(String(200))


class FeatureSeries(Base):
    """Per-bin feature matrix of one track (float32 (n, d) blob) for re-scoring without the video."""

    __tablename__ = "feature_series"
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    track_id: Mapped[int] = mapped_column(ForeignKey("tracks.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    grid_start: Mapped[float] = mapped_column(Float)
    grid_step: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    names: Mapped[list] = mapped_column(JSON)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class TagLabel(Base):
    """The clinic's tag vocabulary: the 7 expressions plus the clinic's own labels."""

    __tablename__ = "tag_labels"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)


class VocabularyLabel(Base):
    """One behaviour label of a group's tag vocabulary (``services.vocabulary``): its keyboard key in the
    review player and whether it is a state (start and end) or a point event. A group with no rows
    uses its kind's default vocabulary."""

    __tablename__ = "vocabulary_labels"
    __table_args__ = (UniqueConstraint("group_id", "label", name="uq_vocabulary_group_label"),
                      UniqueConstraint("group_id", "key", name="uq_vocabulary_group_key"),
                      {"sqlite_autoincrement": True})  # fmt: skip
    id: Mapped[int] = mapped_column(primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(1))
    kind: Mapped[str] = mapped_column(String(10))  # "state" | "point"
    calm: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class TagEvent(Base):
    """A tagging message from the review player, applied once: a rerun that sends it again finds it
    here and gets the same answer (``services.tagging``). ``before_version``: the tag's version
    before this event, so the event can be undone."""

    __tablename__ = "tag_events"
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    op: Mapped[str] = mapped_column(String(10))
    tag_uid: Mapped[str | None] = mapped_column(String(36))
    target: Mapped[str | None] = mapped_column(String(64))  # the event an undo undid
    before_version: Mapped[int | None] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    message: Mapped[str] = mapped_column(Text, default="", server_default="")
    actor: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=utcnow)


class Tag(Base):
    """A clinician's label on a time range. Versioned: an edit adds a row with the same uid."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("uid", "version"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(primary_key=True)
    uid: Mapped[str] = mapped_column(String(36), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    t_start: Mapped[float] = mapped_column(Float)
    t_end: Mapped[float] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")
    is_baseline: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    author: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PersonModel(Base):
    """A per-child calibration or personalised model: versioned, one active per person and kind."""

    __tablename__ = "person_models"
    __table_args__ = (UniqueConstraint("person_id", "kind", "version"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(50))  # "baseline" | "personal"
    version: Mapped[int] = mapped_column(Integer)
    params: Mapped[bytes] = mapped_column(LargeBinary)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEntry(Base):
    """Who exported or deleted what, and when. Never updated, never deleted: database triggers
    refuse both (migration 0003), and ids are never handed out again."""

    __tablename__ = "audit_log"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(200))
    # The target's name when the row was written ("session:3" -> its title): the row must still
    # say who or what it was about after the target is renamed or deleted.
    target_label: Mapped[str] = mapped_column(String(300), default="", server_default="")
    detail: Mapped[dict] = mapped_column(JSON, default=dict)


# --- logins (issue 12, migration 0003) -----------------------------------------------------------


class LoginThrottle(Base):
    """Failed-login state of one account name or one client address (``storage.logins``)."""

    __tablename__ = "login_throttle"
    scope: Mapped[str] = mapped_column(String(20), primary_key=True)  # "user" | "client"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class LoginSession(Base):
    """A dashboard login: the browser holds the random token, the database only its SHA-256."""

    __tablename__ = "login_sessions"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    client: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# --- consent and retention (issue 12, migration 0002) ------------------------------------------


class Consent(Base):
    """A guardian's (or patient's) answer for one person and purpose: the current state, kept
    in place; every grant and withdrawal is also an audit row, which keeps the history."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("person_id", "purpose"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[ConsentPurpose] = mapped_column(Enum(ConsentPurpose, native_enum=False, length=20))
    granted: Mapped[bool] = mapped_column(Boolean)
    scope: Mapped[str] = mapped_column(String(200), default="")  # what was agreed, as on the form
    recorded_by: Mapped[str] = mapped_column(String(100))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    withdrawn_by: Mapped[str | None] = mapped_column(String(100))
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class GroupPolicy(Base):
    """A group's privacy policy; a group without a row requires no consent and keeps sessions forever."""

    __tablename__ = "group_policies"
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    consent_required: Mapped[bool] = mapped_column(Boolean, default=False)
    retention_days: Mapped[int | None] = mapped_column(Integer)  # None: keep forever
    updated_by: Mapped[str] = mapped_column(String(100), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ClassBin(Base):
    """Class-level aggregate of the faces whose per-person timelines were not stored (no valid
    consent, or matched to no enrolled person, in a group that requires consent): means over
    the visible ones, so the class curve still counts them without keeping anyone's timeline."""

    __tablename__ = "class_bins"
    __table_args__ = (UniqueConstraint("session_id", "t_start"), {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"))  # the unique key indexes it
    t_start: Mapped[float] = mapped_column(Float)
    t_end: Mapped[float] = mapped_column(Float)
    n_faces: Mapped[int] = mapped_column(Integer)  # withheld faces present in the bin
    n_visible: Mapped[int] = mapped_column(Integer)  # of which visible: the weight of the means
    engagement: Mapped[float | None] = mapped_column(Float)
    neutrality: Mapped[float | None] = mapped_column(Float)
    enjoyment: Mapped[float | None] = mapped_column(Float)
    confusion: Mapped[float | None] = mapped_column(Float)
    fatigue: Mapped[float | None] = mapped_column(Float)
    distraction: Mapped[float | None] = mapped_column(Float)
