"""Column headers in words: the dashboard's tables keep their data's column names (code and tests
read them) and show these labels instead of ``person_id`` or ``stored_per_person``.

``config(columns, **overrides)`` is what a page passes as ``st.dataframe(column_config=...)``:
every column gets its label, and an override (a Streamlit column type such as a checkbox or a
progress bar, a plain dict) keeps its own settings and gets the label unless it names one.
Plain dicts: this module does not import Streamlit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

LABELS: dict[str, str] = {
    # people, groups, users
    "id": "No.", "person_id": "Person no.", "person": "Person", "person_label": "Person", "label": "Name",
    "group": "Group", "group_id": "Group no.", "groups": "Groups", "kind": "Kind", "name": "Name",
    "username": "User", "user_id": "User no.", "role": "Role", "can_log_in": "Can log in", "disabled": "Disabled",
    "in_effect": "In effect", "password": "Password", "enrolled": "Named", "sessions": "Sessions",
    "embeddings": "Face embeddings", "tracks": "Tracks", "origin_session_id": "Found in session",
    # consent and retention
    "consent_required": "Consent required", "analysis": "Analysis consent", "thumbnails": "Thumbnails consent",
    "stored_per_person": "Stored per person", "scope": "Scope (as signed)", "recorded_by": "Recorded by",
    "recorded_at": "Recorded", "expires_at": "Expires", "withdrawn_by": "Withdrawn by", "withdrawn_at": "Withdrawn",
    # sessions and jobs
    "title": "Title", "created": "Added", "created_at": "Added", "duration_s": "Duration (s)", "persons": "Persons",
    "job_id": "Job no.", "status": "Status", "progress": "Progress", "state": "State", "analysed_at": "Analysed",
    # the audit log
    "at": "When", "actor": "Who", "what": "What happened", "action": "Action", "target": "Target",
    "target_label": "Target name", "detail": "Details",
    # tags
    "start": "From", "end": "To", "t_start": "From (s)", "t_end": "To (s)", "note": "Note", "is_baseline": "Baseline",
    "author": "Tagged by", "uid": "Tag id",
    # a session's students
    "mean_engagement": "Mean engagement", "minutes_visible": "Minutes visible", "minutes_confused": "Minutes confused",
    "minutes_fatigued": "Minutes fatigued", "minutes_distracted": "Minutes distracted",
    "minutes_not_readable": "Minutes not readable", "minutes_not_visible": "Minutes not visible",
    # a child's personal model versions
    "version": "Version", "active": "Active", "tags": "Tags", "bins": "Bins", "labels": "Labels",
    "personal_f1": "Personal macro-F1", "compared_on": "Compared on", "personal_f1_compared": "Personal macro-F1 (compared)",
    "population_f1": "Population macro-F1", "calibrated_f1": "Calibrated population macro-F1",
    "personal_coverage": "Personal coverage", "activation": "Activation",
}  # fmt: skip
_SNAKE = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)+$")


def label(column: str) -> str:
    """The header shown for ``column``: from ``LABELS``, else the words of its name ("minutes_not_visible" ->
    "Minutes not visible")."""
    if column in LABELS:
        return LABELS[column]
    words = str(column).replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def is_code_name(header: str) -> bool:
    """Whether a shown header looks like a code identifier (``person_id``) rather than words."""
    return bool(_SNAKE.match(header)) or "_" in header


def config(columns: Iterable[str], **overrides: Any) -> dict[str, Any]:
    """``column_config`` giving every column of ``columns`` its label (overrides keep their settings)."""
    out: dict[str, Any] = {}
    for c in columns:
        o = overrides.get(c)
        if o is None:
            out[c] = label(c)
        else:
            o = dict(o)
            if not o.get("label"):
                o["label"] = label(c)
            out[c] = o
    return out
