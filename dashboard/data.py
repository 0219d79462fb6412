"""The dashboard's reads, cached: what the pages list and show, over ``services`` only.

Every read takes the viewer's ``group_ids`` (``None`` = all) and the services filter by it, so a page
cannot show what its user may not see. Reads are ``st.cache_data`` with a short TTL; every write
(``dashboard.actions``) calls ``invalidate``. The session page's chart views are cached apart, under
the session's fingerprint (``dashboard.viewcache``). The functions work outside a Streamlit run too
(tests call them directly). The dashboard never imports the worker code, torch, ``recognition``,
``pipeline``, ``tasks`` or ``storage``.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import viewcache
from services import people, sessions
from services import session_views as sv
from services import tags as tag_service
from services.actor import Actor, GroupIds, actor_for_user
from services.analyses import VIDEO_TYPES, safe_filename  # noqa: F401  (pages and tests use them from here)
from services.db import scope
from services.sessions import SESSION_COLUMNS, JobState, SessionInfo, job_phrase  # noqa: F401

Viewer = Actor  # the logged-in user, as the shared services know them
TAG_COLUMNS = tag_service.TAG_COLUMNS


def invalidate() -> None:
    """Forget cached query results and views (after any write)."""
    st.cache_data.clear()
    viewcache.clear()


def viewer_for(url: str, user_id: int) -> Viewer | None:
    """Re-read the user and their grants (never cached: a revoked grant takes effect at once)."""
    with scope(url) as s:
        return actor_for_user(s, user_id)


@st.cache_data(ttl=5, max_entries=64, show_spinner=False)
def sessions_frame(url: str, group_ids: GroupIds, kind: str | None = None) -> pd.DataFrame:
    """Visible sessions, newest first, with group name, person count and their latest job."""
    return sessions.sessions_frame(url, group_ids, kind)


@st.cache_data(ttl=30, max_entries=64, show_spinner=False)
def session_info(url: str, group_ids: GroupIds, session_id: int) -> SessionInfo:
    """One visible session's metadata; LookupError if it is missing or not visible."""
    return sessions.session_info(url, group_ids, session_id)


@st.cache_data(ttl=30, max_entries=32, show_spinner=False)
def session_bins(url: str, group_ids: GroupIds, session_id: int) -> pd.DataFrame:
    """All time bins of a visible session (``storage.repo.session_bins``)."""
    return sessions.session_bins(url, group_ids, session_id)


@st.cache_data(ttl=30, max_entries=32, show_spinner=False)
def groups_frame(url: str, group_ids: GroupIds, kind: str | None = None) -> pd.DataFrame:
    """Visible groups: id, name, kind."""
    return sessions.groups_frame(url, group_ids, kind)


@st.cache_data(ttl=10, max_entries=32, show_spinner=False)
def persons_frame(url: str, group_ids: GroupIds) -> pd.DataFrame:
    """Persons of visible groups: id, label, enrolled, group, sessions (seen in), bins."""
    return people.persons_frame(url, group_ids)


@st.cache_data(ttl=10, max_entries=32, show_spinner=False)
def session_tracks(url: str, group_ids: GroupIds, session_id: int) -> pd.DataFrame:
    """Tracks of a visible session: id, track_key, person_id, person, enrolled, t_start, t_end, samples, match."""
    return people.session_tracks(url, group_ids, session_id)


@st.cache_data(ttl=30, max_entries=32, show_spinner=False)
def child_bins(url: str, group_ids: GroupIds, session_id: int, person_id: int) -> pd.DataFrame:
    """One person's bins in a visible session, every score and the personalised label (``timelines.person_bins``)."""
    return sv.person_bins(url, group_ids, session_id, person_id)


@st.cache_data(ttl=300, max_entries=32, show_spinner=False)
def child_cues(url: str, group_ids: GroupIds, session_id: int, person_id: int) -> pd.DataFrame:
    """The cue model's inputs per bin (blendshapes, head pose) of one person in a visible session."""
    return sv.person_cues(url, group_ids, session_id, person_id)


@st.cache_data(ttl=10, max_entries=64, show_spinner=False)
def track_thumbnail(url: str, group_ids: GroupIds, session_id: int, track_id: int) -> bytes | None:
    """A track's stored face thumbnail (JPEG), or None (none stored: the setting is off by default)."""
    return sessions.track_thumbnail(url, group_ids, session_id, track_id)


def session_persons(url: str, group_ids: GroupIds, session_id: int) -> list[tuple[int, str]]:
    """(person id, label) of the persons with bins in a visible session, in label order (cheap: no bins read)."""
    return sessions.session_persons(url, group_ids, session_id)


def list_tags(url: str, viewer: Viewer, session_id: int, person_id: int | None = None) -> pd.DataFrame:
    """Current (latest, not deleted) tags of a visible session (not cached: a clinician edits them)."""
    return tag_service.frame(url, viewer, session_id, person_id)


def tag_vocabulary(url: str) -> list[str]:
    """Labels a clinician can pick: the 7 expressions plus the clinic's own."""
    return tag_service.vocabulary(url)


def count_audit(url: str, action: str, target: str | None = None) -> int:
    """How many audit entries of ``action`` (and ``target``) exist; used to show and test audited paths."""
    return sessions.count_audit(url, action, target)
