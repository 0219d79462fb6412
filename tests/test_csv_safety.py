"""CSV exports cannot attack a spreadsheet: formula-like text is neutralised (OWASP) in the session
export (CLI and dashboard), the tags export and the audit export; numbers stay numbers; labels
with control characters are refused where they are typed."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

from affectline import csvsafe
from services.exports import Export
from storage import access, people, repo, tags
from storage.db import session_scope
from storage.models import Role, SessionKind
from tests.dashboard_factories import add_analysed_session

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ('=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3+cmd|' /C calc'!A0")


def test_formula_cells_are_quoted_and_prefixed_numbers_are_not():
    df = pd.DataFrame({
        "label": [*ATTACKS, "Ada", "-3", "plain, with comma", 'say "hi"'] + ["\t=1+1", "\r=1+1"],
        "value": [-0.5, 1.0, float("nan"), -1e-7, 2.5, -3.0, 0.0, 1 / 3, -42.0, 7.0],
        "count": list(range(-5, 5)),
        "flag": [True, False] * 5,
    })  # fmt: skip
    text = csvsafe.frame_to_csv(df)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["label", "value", "count", "flag"] and text.startswith("label,value,count,flag\n")
    labels = [r[0] for r in rows[1:]]
    assert labels[:4] == ["'" + a for a in ATTACKS]
    assert labels[4:8] == ["Ada", "-3", "plain, with comma", 'say "hi"']  # a plain number is left alone
    assert labels[8:] == ["'\t=1+1", "'\r=1+1"]
    # Every text cell is in double quotes (a ';' locale cannot split one into a formula cell) ...
    lines = text.split("\n")
    assert lines[1].startswith("\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",")
    # ... and numbers are bare: negative ones are not touched.
    assert lines[1].endswith(",-0.5,-5,True") and lines[4].split(",")[-3:] == ["-1e-07", "-2", "False"]
    back = pd.read_csv(io.StringIO(text))
    assert back["value"].dtype == float and back["value"].iloc[0] == -0.5 and back["count"].tolist() == list(range(-5, 5))
    assert [csvsafe.restore(v) for v in labels[:4]] == list(ATTACKS)


@pytest.fixture()
def attacked(db_url):
    """A class session whose persons are named as formulas (names a teacher could type)."""
    with session_scope(db_url) as s:
        gid = repo.get_or_create_group(s, "Room 5", SessionKind.classroom).id
        access.grant(s, access.create_user(s, "teacher", Role.teacher).id, gid)
    sid, pids = add_analysed_session(db_url, gid, SessionKind.classroom, "maths", 3, n_bins=5, seed=1)
    with session_scope(db_url) as s:
        for pid, name in zip(pids, ATTACKS):
            people.rename(s, pid, name, "os:tina")
    return sid, pids


def _labels_in(data: bytes) -> set[str]:
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert rows and all(float(r["t_start"]) >= 0 for r in rows)  # numbers read back as numbers
    assert all(not any(v.startswith(tuple("=+-@\t\r")) and not _number(v) for v in r.values()) for r in rows)
    return {r["person_label"] for r in rows}


def _number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def test_cli_session_export_neutralises_formula_names(attacked, settings, tmp_path):
    from affectline.settings import get_settings
    from cli.main import main

    sid, _ = attacked
    out = tmp_path / "x.csv"
    get_settings.cache_clear()
    r = CliRunner().invoke(main, ["export", str(sid), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert _labels_in(out.read_bytes()) == {"'" + a for a in ATTACKS[:3]}
    assert b'"\'=HYPERLINK(""http://x"",""y"")"' in out.read_bytes()


def test_dashboard_session_export_neutralises_formula_names(attacked, db_url):
    from dashboard import auth, data

    sid, _ = attacked
    data.invalidate()
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    with session_scope(db_url) as s:
        at.session_state[auth.USER_KEY] = access.get_user(s, "teacher").id
    at.run()
    at.switch_page("views/session.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.button(key="export_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    export = at.session_state[f"export_{sid}_csv"]  # what the page's download button serves
    assert isinstance(export, Export)
    assert _labels_in(export.data) == {"'" + a for a in ATTACKS[:3]}


def test_tags_export_neutralises_and_imports_back_unchanged(attacked, db_url, tmp_path):
    from cli.clinic import tags as tags_cli

    sid, pids = attacked
    with session_scope(db_url) as s:
        tags.add_label(s, "@label", "os:tina")
        tags.add_tag(s, session_id=sid, person_id=pids[0], t_start=1.25, t_end=3.5, label="@label",
                     note='=HYPERLINK("http://x","y")', author="+dr")  # fmt: skip
    out = tmp_path / "tags.csv"
    r = CliRunner().invoke(tags_cli, ["export", "-o", str(out)])
    assert r.exit_code == 0, r.output
    (row,) = list(csv.DictReader(out.open(newline="")))
    assert (row["label"], row["note"], row["author"]) == ("'@label", "'=HYPERLINK(\"http://x\",\"y\")", "'+dr")
    assert (row["t_start"], row["t_end"]) == ("1.25", "3.5")
    r = CliRunner().invoke(tags_cli, ["import", str(out)])
    assert r.exit_code == 0, r.output
    assert "0 added, 0 updated, 1 unchanged" in r.output  # read back as typed, not as "'@label"


@pytest.mark.parametrize("bad", ["\t=1+1", "Ada\nLovelace", "Ada\x1b[31m", "Ada\u202eecilA", "x" * 201, "   "])
def test_labels_with_control_characters_or_too_long_are_refused(attacked, db_url, bad):
    sid, pids = attacked
    with session_scope(db_url) as s:
        with pytest.raises(ValueError, match="control character|at most 200|cannot be empty"):
            people.rename(s, pids[0], bad, "os:tina")
        with pytest.raises(ValueError, match="control character|at most|cannot be empty"):
            repo.get_or_create_group(s, bad, SessionKind.classroom)
        with pytest.raises(ValueError, match="control character|at most|cannot be empty"):
            tags.add_label(s, bad, "os:tina")
        with pytest.raises(ValueError, match="control character|at most|cannot be empty"):
            access.create_user(s, bad, Role.teacher)


def test_cli_refuses_a_group_name_with_a_control_character(db_url, settings, tmp_path):
    from affectline.settings import get_settings
    from cli.main import main

    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    get_settings.cache_clear()
    r = CliRunner().invoke(main, ["analyze", str(video), "--group", "Room\t5", "--eager"])
    assert r.exit_code == 1 and "group name 'Room\\t5' contains a control character (U+0009" in r.output
