"""The audit trail in words: what each row changed, and when in the reader's local time.

Pure functions over a row's action, target, target name and detail dict (as ``storage.audit``
reads them): ``describe`` says what happened in one sentence; ``local_time`` turns the stored
UTC time into the zone of ``Settings.timezone`` (default: the machine's own zone). An action this
module does not know still reads: its detail as "key: value" pairs in words, never a raw dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from affectline.lines import one_line


def zone(name: str | None) -> tzinfo:
    """The named IANA zone (``Europe/Berlin``), or the machine's local zone for None / ''."""
    if not name:
        return datetime.now().astimezone().tzinfo or timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"time zone {name!r} is not an IANA zone name (like Europe/Berlin or UTC)") from None


def local_time(t: datetime | None, tz: tzinfo) -> str:
    """A stored time (UTC; SQLite hands it back without a zone) as ``2026-12-06 23:15:02 CET``."""
    if t is None:
        return ""
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    t = t.astimezone(tz)
    return f"{t:%Y-%m-%d %H:%M:%S} {t.tzname() or ''}".rstrip()


# --- what happened -------------------------------------------------------------------------------


def _name(target: str, label: str) -> str:
    """How the sentence names the target: its name with the id (``'maths lesson' (session 3)``)."""
    kind, _, ref = (target or "").partition(":")
    ident = f"{kind.replace('_', ' ')} {ref}" if ref else (target or "").replace("_", " ")
    return f"{one_line(label)!r} ({ident})" if label else ident


def _n(d: Mapping, key: str, word: str) -> str:
    v = d.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return ""
    v = int(v)
    return f"{v:,} {word}{'' if v == 1 or word.endswith('s') else 's'}"


def _counts(d: Mapping, keys: Mapping[str, str]) -> str:
    return ", ".join(x for x in (_n(d, k, w) for k, w in keys.items()) if x and not x.startswith("0 ")) or "nothing stored"


ROWS = {"time_bins": "time bin", "tracks": "track", "tags": "tag", "person_embeddings": "face embedding",
        "feature_series": "feature series", "person_models": "personal model", "jobs": "job",
        "identity_overrides": "identity correction", "thumbnails": "thumbnail", "job_chunks": "job chunk",
        "class_bins": "class bin", "persons": "person"}  # fmt: skip


def _value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v) or "none"
    if isinstance(v, Mapping):
        return "; ".join(f"{str(k).replace('_', ' ')} {_value(x)}" for k, x in v.items()) or "none"
    return one_line(v)


def _generic(d: Mapping) -> str:
    return "; ".join(f"{str(k).replace('_', ' ')}: {_value(v)}" for k, v in d.items())


def _onoff(v: Any) -> str:
    return "on" if v else "off"


def _clock(v: Any) -> str:
    if not isinstance(v, (int, float)):
        return "?"
    m, sec = divmod(int(round(v)), 60)
    return f"{m // 60}:{m % 60:02d}:{sec:02d}" if m >= 60 else f"{m}:{sec:02d}"


def _days(v: Any) -> str:
    return "forever" if v is None else f"{v} days"


def _span(d: Mapping) -> str:
    a, b = d.get("since") or d.get("t0"), d.get("until") or d.get("t1")
    return f" from {a or 'the start'} to {b or 'now'}" if (a or b) else ""


def _vocab_item(d: Mapping) -> str:
    """A vocabulary label as it is after the change: key, kind, calm."""
    label = d.get("label", "?")
    it = next((x for x in d.get("after") or () if isinstance(x, Mapping) and x.get("label") == label), None)
    if it is None:
        return f"{label!r}"
    kind = "one instant" if it.get("kind") == "point" else "start and end"
    return f"{label!r} on key {it.get('key', '?')} ({kind}{', the calm/none label' if it.get('calm') else ''})"


Describe = Callable[[str, Mapping], str]
_TEXT: dict[str, Describe] = {
    "create_user": lambda n, d: f"Created user {d.get('username', n)} as {d.get('role', '?')}",
    "set_role": lambda n, d: f"Changed the role of {d.get('username', n)} from {d.get('previous', '?')} to {d.get('role', '?')}",
    "set_password": lambda n, d: (f"Removed the password of {d.get('username', n)}" if d.get("removed")
                                  else f"Set a new password for {d.get('username', n)}"),  # fmt: skip
    "disable_user": lambda n, d: f"Disabled user {d.get('username', n)} (no login)",
    "enable_user": lambda n, d: f"Re-enabled user {d.get('username', n)}",
    "unlock_user": lambda n, d: f"Unlocked user {d.get('username', n)} after failed logins",
    "grant": lambda n, d: f"Let {d.get('username', n)} see group {d.get('group', d.get('group_id', '?'))}",
    "revoke": lambda n, d: f"Stopped {d.get('username', n)} seeing group {d.get('group', d.get('group_id', '?'))}",
    "create_group": lambda n, d: f"Created group {n}" + (f" ({d['kind']})" if d.get("kind") else ""),
    "login": lambda n, d: f"Logged in as {n}",
    "login_failed": lambda n, d: (f"Failed login for {n}" + (f" from {d['client']}" if d.get("client") else "")
                                  + ("; the account is now locked" if d.get("locked") else "")),  # fmt: skip
    "login_refused": lambda n, d: (f"Refused login for {n}" + (f" ({_value(d['reason'])})" if d.get("reason") else "")
                                   + (f", retry after {d['retry_after_s']} s" if d.get("retry_after_s") else "")),  # fmt: skip
    "consent_grant": lambda n, d: (f"Recorded {d.get('purpose', 'analysis')} consent for {n}"
                                   + (f", scope {d['scope']!r}" if d.get("scope") else "")
                                   + (f", valid until {str(d['expires_at'])[:10]}" if d.get("expires_at") else ", no expiry")),  # fmt: skip
    "consent_withdraw": lambda n, d: (f"Recorded a 'no' ({d.get('purpose', 'analysis')}) for {n}; deleted "
                                      + _counts(d, ROWS)),  # fmt: skip
    "consent_required": lambda n, d: (f"{'Required' if d.get('required') else 'Stopped requiring'} consent in {n}"
                                      f" (was {'required' if d.get('before') else 'not required'})"),  # fmt: skip
    "retention_set": lambda n, d: f"Set {n} to keep sessions {_days(d.get('days'))} (was {_days(d.get('before'))})",
    "retention_delete_session": lambda n, d: f"Deleted expired session {n}: " + _counts(d, ROWS),
    "retention_run": lambda n, d: (f"Retention run deleted {len(d.get('sessions') or [])} expired session(s), "
                                   f"{_n(d, 'rows', 'row') or '0 rows'}, {d.get('files_removed', 0)} file(s)"),  # fmt: skip
    "delete_session": lambda n, d: f"Deleted session {n}" + (f" ({d['title']!r})" if d.get("title") and d["title"] not in n else ""),
    "delete_person": lambda n, d: f"Deleted {n} with " + _counts(d, ROWS),
    "rename_person": lambda n, d: f"Renamed {n}" + (" (enrolled by it: recognised in later sessions)" if d.get("enrolled_now") else ""),
    "enroll_person": lambda n, d: f"Enrolled {n} as a named person",
    "merge_persons": lambda n, d: f"Merged person {d.get('merged', '?')} into {n}: {_n(d, 'tracks_moved', 'track') or '0 tracks'} moved",
    "split_person": lambda n, d: (f"Split {n}: their track in session {d.get('session_id', '?')} "
                                  f"from {_clock(d.get('t_start'))} to {_clock(d.get('t_end'))} became person {d.get('new_person', '?')}"),  # fmt: skip
    "export": lambda n, d: f"Exported {n} as {d.get('format', 'a file')}" + (f", {r}" if (r := _n(d, "rows", "row")) else ""),
    "export_summary": lambda n, d: f"Exported the per-person summary of {n}" + _span(d),
    "export_audit": lambda n, d: f"Exported {_n(d, 'rows', 'audit row') or 'the audit log'}"
                                 + (f" (filter: {_value(d['filter'])})" if d.get("filter") else ""),  # fmt: skip
    "report": lambda n, d: (f"Made a {d.get('kind', '')} report of {n}".replace("a  ", "a ")
                            + _span(d) + (f", {d['pages']} page(s)" if d.get("pages") else "")),  # fmt: skip
    "add_tag": lambda n, d: f"Tagged {d.get('label', '?')} on {n}",
    "edit_tag": lambda n, d: f"Changed the tag {n}",
    "delete_tag": lambda n, d: f"Deleted the tag {n}" + (f" ({d['label']})" if d.get("label") and d["label"] not in n else ""),
    "import_tags": lambda n, d: (f"Imported tags from {n}: {d.get('added', 0)} added, {d.get('updated', 0)} updated, "
                                 f"{d.get('unchanged', 0)} unchanged"),  # fmt: skip
    "export_tags": lambda n, d: f"Exported the tags of {n}",
    "add_tag_label": lambda n, d: f"Added the tag label {n}",
    "personalize_queued": lambda n, d: f"Asked for a personal model of {n}",
    "personalize": lambda n, d: f"Fitted a personal model of {n}",
    "personalise": lambda n, d: f"Fitted a personal model of {n}",
    "vocabulary_set": lambda n, d: f"Changed the tag vocabulary of {n}: {_vocab_item(d)}",
    "vocabulary_remove": lambda n, d: f"Removed {d.get('label', '?')!r} from the tag vocabulary of {n}",
    "vocabulary_reset": lambda n, d: f"Reset the tag vocabulary of {n} to its kind's default",
    "restore_tag": lambda n, d: (f"Undid a change of the tag {n}: version {d.get('restored', '?')} is back"
                                 + (" (deleted)" if d.get("deleted") else "")),  # fmt: skip
    "video_review_set": lambda n, d: (f"Set video review in {n} to "
                                      f"{'the default' if d.get('setting') is None else _onoff(d['setting'])} "
                                      f"(now {_onoff(d.get('effective'))})"),  # fmt: skip
    "upload": lambda n, d: f"Uploaded {d.get('file', 'a video')} as {n}" + (f" ({_n(d, 'bytes', 'byte')})" if "bytes" in d else ""),
    "consent_import": lambda n, d: (f"Imported consent answers from {d.get('file', 'a file')}: {d.get('rows', 0)} row(s), "
                                    f"{d.get('granted', 0)} consent(s), {d.get('refused', 0)} refusal(s), "
                                    f"{d.get('unchanged', 0)} unchanged"
                                    + (f"; deleted {_counts(d['deleted'], ROWS)}" if d.get("deleted") else "")),  # fmt: skip
    "consent_import_refused": lambda n, d: (f"Refused the consent file {d.get('file', '?')}: {d.get('problems', '?')} "
                                            f"bad row(s) of {d.get('rows', '?')}; nothing stored"),  # fmt: skip
    "consent_export": lambda n, d: f"Exported the consent register ({_n(d, 'rows', 'row') or 'all rows'})"
                                   + (f" of group {d['group']}" if d.get("group") else ""),  # fmt: skip
    "scheduled_reports": lambda n, d: (f"Scheduled group reports{_span(d)}: {len(d.get('written') or [])} written"
                                       + (f", {len(d['skipped'])} already there" if d.get("skipped") else "")),  # fmt: skip
}
KNOWN = frozenset(_TEXT)


def describe(action: str, target: str, target_label: str, detail: Mapping | None) -> str:
    """One sentence saying what the row did; unknown actions: the action and its detail in words."""
    d = detail if isinstance(detail, Mapping) else {}
    n = _name(target, target_label)
    fn = _TEXT.get(action)
    if fn is not None:
        try:
            return one_line(fn(n, d))
        except (KeyError, TypeError, ValueError, AttributeError):  # an old row with other detail keys
            pass
    words = (action or "?").replace("_", " ").capitalize()
    return one_line(f"{words}: {n}" + (f" ({_generic(d)})" if d else ""))


def readable(df, tz: tzinfo):
    """An audit table (``storage.audit.COLUMNS``) with ``at`` as local-time text and ``what`` (the sentence)
    in place of the detail dict; the raw columns stay for filters and the CSV export."""
    import pandas as pd

    if df.empty:
        return df.assign(what=pd.Series(dtype=str)).drop(columns=["detail"])
    what = [describe(a, t, lab, d) for a, t, lab, d in zip(df["action"], df["target"], df["target_label"], df["detail"])]
    at = [local_time(pd.Timestamp(x).to_pydatetime() if x is not None and not pd.isna(x) else None, tz) for x in df["at"]]
    out = df.assign(at=at, what=what).drop(columns=["detail"])
    return out[["id", "at", "actor", "what", "action", "target", "target_label"]]
