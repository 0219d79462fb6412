"""services.audit_text: each kind of audit row in words, and stored UTC times in the reader's zone."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from services.audit_text import KNOWN, describe, local_time, readable, zone

CASES = [  # (action, target, target name, detail, the sentence)
    ("create_user", "user:4", "nurse", {"username": "nurse", "role": "clinician"}, "Created user nurse as clinician"),
    ("set_role", "user:4", "nurse", {"username": "nurse", "role": "teacher", "previous": "clinician"},
     "Changed the role of nurse from clinician to teacher"),
    ("set_password", "user:4", "nurse", {"username": "nurse", "removed": True}, "Removed the password of nurse"),
    ("set_password", "user:4", "nurse", {"username": "nurse", "removed": False}, "Set a new password for nurse"),
    ("disable_user", "user:4", "nurse", {"username": "nurse"}, "Disabled user nurse (no login)"),
    ("grant", "user:2", "tina", {"username": "tina", "group_id": 3, "group": "Class 4B"}, "Let tina see group Class 4B"),
    ("revoke", "user:2", "tina", {"username": "tina", "group_id": 3, "group": "Class 4B"}, "Stopped tina seeing group Class 4B"),
    ("consent_grant", "person:49", "Ada", {"purpose": "analysis", "group_id": 1, "scope": "form 12", "expires_at": "2027-07-31T23:59:59.999999+00:00"},
     "Recorded analysis consent for 'Ada' (person 49), scope 'form 12', valid until 2027-07-31"),
    ("consent_grant", "person:49", "Ada", {"purpose": "thumbnails", "scope": "", "expires_at": None},
     "Recorded thumbnails consent for 'Ada' (person 49), no expiry"),
    ("consent_withdraw", "person:49", "(deleted)", {"purpose": "analysis", "time_bins": 1200, "tracks": 3, "tags": 0, "sessions_folded": 2},
     "Recorded a 'no' (analysis) for '(deleted)' (person 49); deleted 1,200 time bins, 3 tracks"),
    ("consent_required", "group:1", "Class D", {"required": True, "before": False},
     "Required consent in 'Class D' (group 1) (was not required)"),
    ("retention_set", "group:1", "Class D", {"days": 30, "before": None},
     "Set 'Class D' (group 1) to keep sessions 30 days (was forever)"),
    ("retention_run", "retention", "", {"sessions": [3, 4], "rows": 1500, "files_removed": 2},
     "Retention run deleted 2 expired session(s), 1,500 rows, 2 file(s)"),
    ("delete_session", "session:7", "maths lesson", {"title": "maths lesson"}, "Deleted session 'maths lesson' (session 7)"),
    ("delete_person", "person:5", "", {"time_bins": 40, "tracks": 1, "person_embeddings": 2},
     "Deleted person 5 with 40 time bins, 1 track, 2 face embeddings"),
    ("export", "session:7", "maths lesson", {"format": "csv", "rows": 120}, "Exported 'maths lesson' (session 7) as csv, 120 rows"),
    ("export_audit", "audit_log", "", {"rows": 2, "filter": {"action": "export"}}, "Exported 2 audit rows (filter: action export)"),
    ("report", "group:2", "Class 4B", {"kind": "group", "since": "2026-11-01", "until": "2026-11-30", "pages": 3},
     "Made a group report of 'Class 4B' (group 2) from 2026-11-01 to 2026-11-30, 3 page(s)"),
    ("consent_import", "consent", "", {"file": "forms.csv", "rows": 30, "granted": 28, "refused": 1, "unchanged": 1, "deleted": {"time_bins": 40}},
     "Imported consent answers from forms.csv: 30 row(s), 28 consent(s), 1 refusal(s), 1 unchanged; deleted 40 time bins"),
    ("consent_import_refused", "consent", "", {"file": "forms.csv", "rows": 30, "problems": 2},
     "Refused the consent file forms.csv: 2 bad row(s) of 30; nothing stored"),
    ("consent_export", "consent", "", {"rows": 31, "group": None}, "Exported the consent register (31 rows)"),
    ("login_failed", "login:tina", "tina", {"client": "10.0.0.7", "locked": True},
     "Failed login for 'tina' (login tina) from 10.0.0.7; the account is now locked"),
    ("split_person", "person:5", "Ben", {"session_id": 3, "t_start": 65.0, "t_end": 3725.0, "new_person": 9},
     "Split 'Ben' (person 5): their track in session 3 from 1:05 to 1:02:05 became person 9"),
    ("video_review_set", "group:1", "Class D", {"setting": None, "before": True, "effective": False},
     "Set video review in 'Class D' (group 1) to the default (now off)"),
]


@pytest.mark.parametrize("action, target, label, detail, want", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_kind_in_words(action, target, label, detail, want):
    assert describe(action, target, label, detail) == want


def test_every_listed_kind_reads_without_a_dict_even_with_missing_detail():
    for action in KNOWN:
        text = describe(action, "session:3", "lesson", {})
        assert text and "{" not in text and "None" not in text, (action, text)


def test_unknown_actions_and_odd_detail_still_read():
    assert describe("reticulate_splines", "session:3", "lesson", {"count_of_things": 3, "ok": True, "ids": [1, 2]}) == (
        "Reticulate splines: 'lesson' (session 3) (count of things: 3; ok: yes; ids: 1, 2)")
    assert describe("export", "session:3", "lesson", {"rows": "many\nlines"}) == "Exported 'lesson' (session 3) as a file"
    assert "\n" not in describe("create_user", "user:1", "x\ny", {"username": "x\ny", "role": "admin"})


def test_times_in_the_reader_zone():
    t = datetime(2026, 12, 6, 22, 15, 2, tzinfo=timezone.utc)
    assert local_time(t, ZoneInfo("Europe/Berlin")) == "2026-12-06 23:15:02 CET"
    assert local_time(datetime(2026, 7, 1, 12, 0), ZoneInfo("Europe/Berlin")) == "2026-07-01 14:00:00 CEST"  # naive = UTC
    assert local_time(t, zone("UTC")) == "2026-12-06 22:15:02 UTC"
    assert local_time(None, zone("")) == ""
    assert zone("").utcoffset(datetime.now()) == datetime.now().astimezone().utcoffset()  # the machine's zone
    with pytest.raises(ValueError, match="not an IANA zone"):
        zone("Mars/Olympus")


def test_readable_table():
    df = pd.DataFrame([{"id": 2, "at": pd.Timestamp("2026-12-06 22:15:02"), "actor": "root", "action": "retention_set",
                        "target": "group:1", "target_label": "Class D", "detail": {"days": 30, "before": 365}}])
    out = readable(df, ZoneInfo("America/New_York"))
    assert list(out.columns) == ["id", "at", "actor", "what", "action", "target", "target_label"]
    assert out.iloc[0]["at"] == "2026-12-06 17:15:02 EST"
    assert out.iloc[0]["what"] == "Set 'Class D' (group 1) to keep sessions 30 days (was 365 days)"
    assert readable(df.iloc[:0], ZoneInfo("UTC")).empty


def test_the_setting_is_checked():
    from affectline.settings import Settings

    assert Settings(timezone="Europe/Berlin").timezone == "Europe/Berlin"
    with pytest.raises(ValueError, match="not an IANA time zone"):
        Settings(timezone="Mars/Olympus")


def test_cli_lists_the_trail_in_words(db_url, monkeypatch):
    from click.testing import CliRunner

    from affectline.settings import get_settings
    from cli.main import main
    from services import privacy
    from services.actor import operator
    from storage import repo
    from storage.db import session_scope
    from storage.models import SessionKind

    with session_scope(db_url) as s:
        g = repo.get_or_create_group(s, "Class D", SessionKind.classroom).id
    privacy.set_retention(db_url, operator(), g, 30)
    monkeypatch.setenv("AFFECTLINE_TIMEZONE", "Asia/Tokyo")
    get_settings.cache_clear()
    r = CliRunner().invoke(main, ["audit", "list", "--words", "--action", "retention_set"])
    assert r.exit_code == 0, r.output
    (line,) = r.output.splitlines()
    rid, when, who, what = line.split("\t")
    assert when.endswith(" JST") and who.startswith("os:")
    assert what == f"Set 'Class D' (group {g}) to keep sessions 30 days (was forever)"
    get_settings.cache_clear()
