"""Tags to and from ELAN (.eaf) and BORIS (aggregated events CSV): round trips within 1 ms, a hand-written
ELAN file with several tiers, bad files named line by line with nothing half-imported, duplicates skipped,
times outside the session and persons without consent refused, CSV formulas neutralised, safe XML, the CLI."""

from __future__ import annotations

import csv
import io

import pytest
from click.testing import CliRunner

from dashboard import actions, data
from services import tag_formats as tf
from services.tag_formats import TagFileError, TagRecord
from storage import consent, repo, tags
from storage.db import session_scope
from storage.models import Person, Recording
from tests.dashboard_factories import copy_seeded, make_seeded_template

RECORDS = [
    TagRecord("Child X", "fear", 1.5, 3.25, "covered ears"),
    TagRecord("Child X", "fear", 2.0, 4.0),  # overlaps the first: ELAN needs a second tier
    TagRecord("Child X", "neutral", 5.0, 9.0, is_baseline=True),
    TagRecord("Child X", "=HYPERLINK(\"http://x\",\"y\")", 7.0, 7.0, "=1+1"),  # a point event; formula-like text
    TagRecord("Child Z", "happy", 10.0004, 12.9996),
]


def _key(r: TagRecord):
    return (r.person, r.label, round(r.t_start, 3), round(r.t_end, 3), r.note, r.is_baseline)


def _same(a, b) -> None:
    a, b = sorted(a, key=_key), sorted(b, key=_key)
    assert [(r.person, r.label, r.note, r.is_baseline, r.kind) for r in a] == \
        [(r.person, r.label, r.note, r.is_baseline, r.kind) for r in b]  # fmt: skip
    for x, y in zip(a, b):
        assert abs(x.t_start - y.t_start) <= 0.001 and abs(x.t_end - y.t_end) <= 0.001


@pytest.mark.parametrize("fmt", tf.FORMATS)
def test_pure_round_trip_keeps_every_field_within_a_millisecond(fmt):
    parsed = tf.read(tf.write(RECORDS, fmt), fmt)
    assert parsed.errors == []
    _same(parsed.records, RECORDS)


def test_a_boris_tsv_with_its_other_columns_is_read_by_name():
    cols = ["Observation id", "Observation date", "Description", "Observation type", "Source", "Media duration (s)",
            "FPS", "Subject", "Observation duration by subject by observation", "Behavior", "Behavioral category",
            "Behavior type", "Start (s)", "Stop (s)", "Duration (s)", "Media file name", "Image index start",
            "Comment start", "Comment stop"]  # fmt: skip
    rows = [["obs1", "2024-03-01", "", "Media file(s)", "player #1:/v/w2.mp4", "600.0", "25", "Child X", "600",
             "fear", "", "STATE", "12.040", "15.520", "3.480", "/v/w2.mp4", "301", "hid face", ""],
            ["obs1", "2024-03-01", "", "Media file(s)", "player #1:/v/w2.mp4", "600.0", "25", "", "600",
             "hand flapping", "motor", "POINT", "20.000", "NA", "NA", "/v/w2.mp4", "500", "", ""]]  # fmt: skip
    text = "\ufeff" + "\n".join("\t".join(r) for r in [cols, *rows]) + "\n"
    parsed = tf.read(text.encode(), name="obs1.tsv")
    assert parsed.errors == []
    assert [(r.person, r.label, r.t_start, r.t_end, r.note, r.kind) for r in parsed.records] == [
        ("Child X", "fear", 12.04, 15.52, "hid face", "state"), ("", "hand flapping", 20.0, 20.0, "", "point")]


def test_eaf_is_elan_shaped_sorted_slots_and_no_overlap_on_a_tier():
    from defusedxml.ElementTree import fromstring

    root = fromstring(tf.write_eaf(RECORDS, author="dr"))
    assert root.tag == "ANNOTATION_DOCUMENT" and root.get("FORMAT") == "3.0"
    assert [c.tag for c in root][:2] == ["HEADER", "TIME_ORDER"]
    assert root.find("HEADER").get("TIME_UNITS") == "milliseconds"
    values = [int(t.get("TIME_VALUE")) for t in root.iterfind("TIME_ORDER/TIME_SLOT")]
    assert values == sorted(values) and 1500 in values and 3250 in values
    slot = {t.get("TIME_SLOT_ID"): int(t.get("TIME_VALUE")) for t in root.iterfind("TIME_ORDER/TIME_SLOT")}
    types = {lt.get("LINGUISTIC_TYPE_ID") for lt in root.iter("LINGUISTIC_TYPE")}
    for tier in root.iter("TIER"):
        assert tier.get("LINGUISTIC_TYPE_REF") in types
        spans = sorted((slot[a.get("TIME_SLOT_REF1")], slot[a.get("TIME_SLOT_REF2")])
                       for a in tier.iter("ALIGNABLE_ANNOTATION"))  # fmt: skip
        assert all(b0 < b1 for b0, b1 in spans)  # ELAN draws nothing of length 0
        assert all(p[1] <= q[0] for p, q in zip(spans, spans[1:]))  # ELAN forbids overlap on one tier
    fear = [t for t in root.iter("TIER") if t.get("TIER_ID", "").startswith("Child X - fear")
            and t.get("PARENT_REF") is None]  # fmt: skip
    assert len(fear) == 2 and {t.get("PARTICIPANT") for t in fear} == {"Child X"}
    # the tags of the tier order in the document follow the schema: TIERs before LINGUISTIC_TYPEs
    kinds = [c.tag for c in root]
    assert kinds.index("LINGUISTIC_TYPE") > max(i for i, k in enumerate(kinds) if k == "TIER")


HAND_WRITTEN = """<?xml version="1.0" encoding="UTF-8"?>
<ANNOTATION_DOCUMENT AUTHOR="coder" DATE="2024-03-01T10:00:00+01:00" FORMAT="3.0" VERSION="3.0">
  <HEADER MEDIA_FILE="" TIME_UNITS="milliseconds">
    <MEDIA_DESCRIPTOR MEDIA_URL="file:///videos/week2.mp4" MIME_TYPE="video/mp4"/>
  </HEADER>
  <TIME_ORDER>
    <TIME_SLOT TIME_SLOT_ID="ts1" TIME_VALUE="1200"/>
    <TIME_SLOT TIME_SLOT_ID="ts2" TIME_VALUE="4850"/>
    <TIME_SLOT TIME_SLOT_ID="ts3"/>
    <TIME_SLOT TIME_SLOT_ID="ts4" TIME_VALUE="9000"/>
    <TIME_SLOT TIME_SLOT_ID="ts5" TIME_VALUE="15000"/>
    <TIME_SLOT TIME_SLOT_ID="ts6" TIME_VALUE="21500"/>
  </TIME_ORDER>
  <TIER LINGUISTIC_TYPE_REF="default-lt" TIER_ID="Behaviour" PARTICIPANT="Child X">
    <ANNOTATION><ALIGNABLE_ANNOTATION ANNOTATION_ID="a1" TIME_SLOT_REF1="ts1" TIME_SLOT_REF2="ts2">
      <ANNOTATION_VALUE>Fear</ANNOTATION_VALUE></ALIGNABLE_ANNOTATION></ANNOTATION>
    <ANNOTATION><ALIGNABLE_ANNOTATION ANNOTATION_ID="a2" TIME_SLOT_REF1="ts4" TIME_SLOT_REF2="ts5">
      <ANNOTATION_VALUE>happy</ANNOTATION_VALUE></ALIGNABLE_ANNOTATION></ANNOTATION>
  </TIER>
  <TIER LINGUISTIC_TYPE_REF="comment-lt" PARENT_REF="Behaviour" TIER_ID="Comments" PARTICIPANT="Child X">
    <ANNOTATION><REF_ANNOTATION ANNOTATION_ID="a3" ANNOTATION_REF="a2">
      <ANNOTATION_VALUE>laughing at the puppet</ANNOTATION_VALUE></REF_ANNOTATION></ANNOTATION>
  </TIER>
  <TIER LINGUISTIC_TYPE_REF="default-lt" TIER_ID="sad" PARTICIPANT="">
    <ANNOTATION><ALIGNABLE_ANNOTATION ANNOTATION_ID="a4" TIME_SLOT_REF1="ts5" TIME_SLOT_REF2="ts6">
      <ANNOTATION_VALUE></ANNOTATION_VALUE></ALIGNABLE_ANNOTATION></ANNOTATION>
  </TIER>
  <TIER LINGUISTIC_TYPE_REF="default-lt" TIER_ID="Gaze" PARTICIPANT="Child X">
    <ANNOTATION><ALIGNABLE_ANNOTATION ANNOTATION_ID="a5" TIME_SLOT_REF1="ts2" TIME_SLOT_REF2="ts3">
      <ANNOTATION_VALUE>neutral</ANNOTATION_VALUE></ALIGNABLE_ANNOTATION></ANNOTATION>
  </TIER>
  <LINGUISTIC_TYPE GRAPHIC_REFERENCES="false" LINGUISTIC_TYPE_ID="default-lt" TIME_ALIGNABLE="true"/>
  <LINGUISTIC_TYPE CONSTRAINTS="Symbolic_Association" GRAPHIC_REFERENCES="false" LINGUISTIC_TYPE_ID="comment-lt"
                   TIME_ALIGNABLE="false"/>
  <CONSTRAINT DESCRIPTION="1-1 association with a parent annotation" STEREOTYPE="Symbolic_Association"/>
</ANNOTATION_DOCUMENT>
"""


def test_a_hand_written_elan_file_with_several_tiers():
    parsed = tf.read(HAND_WRITTEN.encode(), name="week2.eaf")
    got = sorted((r.person, r.label, r.t_start, r.t_end, r.note) for r in parsed.records)
    assert got == [("", "sad", 15.0, 21.5, ""),  # empty value: the tier's name is the label
                   ("Child X", "Fear", 1.2, 4.85, ""),
                   ("Child X", "happy", 9.0, 15.0, "laughing at the puppet")]  # the dependent tier's comment
    (err,) = parsed.errors  # an unaligned slot: named, not guessed
    assert "annotation a5" in err and "'Gaze'" in err and "no time" in err


# --- through storage -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return make_seeded_template(tmp_path_factory.mktemp("tagfmt"))


@pytest.fixture()
def world(template, settings):
    ids = copy_seeded(template, settings)
    url = settings.resolved_database_url
    sid, (pid,) = ids.sessions["therapy"], ids.persons["therapy"]
    viewer = data.viewer_for(url, ids.users["clinician"])
    with session_scope(url) as s:
        duration = s.get(Recording, sid).duration
    return dict(url=url, ids=ids, sid=sid, pid=pid, viewer=viewer, duration=duration)


def _current(url, sid):
    with session_scope(url) as s:
        return [(t.person_id, t.label, t.t_start, t.t_end, t.note, t.is_baseline)
                for t in tags.latest_tags(s, session_id=sid)]  # fmt: skip


def _audits(url, action):
    with session_scope(url) as s:
        return [e for e in repo.audit_log(s) if e.action == action]


def _seed_tags(w):
    v, url, sid, pid = w["viewer"], w["url"], w["sid"], w["pid"]
    actions.add_tag(url, v, sid, pid, 1.25, 3.5, "fear", "covered ears")
    actions.add_tag(url, v, sid, pid, 2.0, 6.0, "fear", "")
    actions.add_tag(url, v, sid, pid, 10.0, 20.0, "neutral", "=cmd|' /C calc'!A0", is_baseline=True)
    actions.add_tag(url, v, sid, pid, 21.0004, 22.9996, "happy", "")


@pytest.mark.parametrize("fmt", tf.FORMATS)
def test_round_trip_through_storage_into_an_empty_copy(world, template, settings, tmp_path, fmt):
    w = world
    _seed_tags(w)
    before = _current(w["url"], w["sid"])
    out = tf.export_tags(w["url"], w["viewer"], w["sid"], fmt)
    assert out.n_tags == 4 and out.file_name.endswith(".eaf" if fmt == "eaf" else ".csv")
    (audit,) = _audits(w["url"], "export_tags")
    assert audit.actor == "clinician" and audit.detail["format"] == fmt and audit.detail["tags"] == 4
    copy_seeded(template, settings)  # the same world, no tags
    assert _current(w["url"], w["sid"]) == []
    r = tf.import_tags(w["url"], w["viewer"], w["sid"], out.data, out.file_name)
    assert (r.added, r.skipped_duplicates) == (4, 0)
    after = _current(w["url"], w["sid"])
    assert [x[:2] + x[4:] for x in after] == [x[:2] + x[4:] for x in before]
    assert all(abs(a[2] - b[2]) <= 0.001 and abs(a[3] - b[3]) <= 0.001 for a, b in zip(after, before))
    (audit,) = _audits(w["url"], "import_tags")
    assert audit.detail["added"] == 4 and audit.detail["file"] == out.file_name
    # the same file again: every tag is already there, so nothing is added and the skips are counted
    again = tf.import_tags(w["url"], w["viewer"], w["sid"], out.data, out.file_name)
    assert (again.added, again.skipped_duplicates) == (0, 4) and "4 skipped" in again.phrase()
    assert len(_current(w["url"], w["sid"])) == 4


def test_boris_export_neutralises_formulas(world):
    w = world
    _seed_tags(w)
    out = tf.export_tags(w["url"], w["viewer"], w["sid"], "boris")
    rows = list(csv.DictReader(io.StringIO(out.data.decode())))
    assert tuple(rows[0]) == tf.BORIS_COLUMNS
    cells = [c for r in rows for c in r.values()]
    assert "'=cmd|' /C calc'!A0" in cells and not any(c.startswith(("=", "+", "@")) for c in cells)
    base = next(r for r in rows if r["Behavior"] == "neutral")
    assert (base["Behavioral category"], base["Behavior type"], base["Start (s)"], base["Duration (s)"]) == \
        ("baseline", "STATE", "10.000", "10.000")  # fmt: skip
    assert {r["Subject"] for r in rows} == {"Child X"}


def _bad_file(w, text: str, name: str):
    before = _current(w["url"], w["sid"])
    with pytest.raises(TagFileError) as e:
        tf.import_tags(w["url"], w["viewer"], w["sid"], text.encode(), name)
    assert _current(w["url"], w["sid"]) == before and not _audits(w["url"], "import_tags")
    assert all("\n" not in line for line in e.value.lines)
    return e.value.lines


def test_bad_boris_rows_are_named_one_line_each_and_nothing_is_imported(world):
    w = world
    head = ",".join(f'"{c}"' for c in tf.BORIS_COLUMNS)
    good = '"","","","","","","Child X","fear","","STATE",1.0,2.0,1.0,"",""'
    rows = [
        good,
        '"","","","","","","Child X","fear","","STATE","soon",2.0,1.0,"",""',  # line 3: start not a number
        '"","","","","","","Child X","juggling","","STATE",1.0,2.0,1.0,"",""',  # line 4: not in the vocabulary
        '"","","","","","","Child X","fear","","STATE",30.0,99.0,69.0,"",""',  # line 5: past the session's end
        '"","","","","","","Nobody","fear","","STATE",1.0,2.0,1.0,"",""',  # line 6: not in this session
        '"","","","","","","Child X","fear","","EVENT",1.0,2.0,1.0,"",""',  # line 7: unknown type
        '"","","","","","","Child X","fear","","STATE",5.0,4.0,-1.0,"",""',  # line 8: ends before it starts
    ]
    lines = _bad_file(w, "\r\n".join([head, *rows]) + "\r\n", "coded.csv")
    assert [ln.split(":")[0] for ln in lines] == ["line 3", "line 4", "line 5", "line 6", "line 7", "line 8"]
    assert "'soon' is not a number" in lines[0] and "'juggling' is not in the vocabulary" in lines[1]
    assert "ends after the session" in lines[2] and "'Nobody' was not seen" in lines[3]
    assert "EVENT" in lines[4] and "start <= end" in lines[5]


def test_files_that_are_not_tag_files_get_one_line(world):
    w = world
    assert "not well-formed XML" in _bad_file(w, "<ANNOTATION_DOCUMENT><TIER>", "x.eaf")[0]
    assert "not an ELAN file" in _bad_file(w, "<html></html>", "x.eaf")[0]
    assert "'Behavior'" in _bad_file(w, "a,b\n1,2\n", "x.csv")[0]


def test_entity_tricks_are_refused_before_anything_expands(world, tmp_path):
    w = world
    secret = tmp_path / "secret.txt"
    secret.write_text("fear")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file://{secret}">]>'
           '<ANNOTATION_DOCUMENT><TIME_ORDER><TIME_SLOT TIME_SLOT_ID="t1" TIME_VALUE="0"/>'
           '<TIME_SLOT TIME_SLOT_ID="t2" TIME_VALUE="1000"/></TIME_ORDER><TIER TIER_ID="b" PARTICIPANT="Child X">'
           '<ANNOTATION><ALIGNABLE_ANNOTATION ANNOTATION_ID="a1" TIME_SLOT_REF1="t1" TIME_SLOT_REF2="t2">'
           '<ANNOTATION_VALUE>&x;</ANNOTATION_VALUE></ALIGNABLE_ANNOTATION></ANNOTATION></TIER></ANNOTATION_DOCUMENT>')  # fmt: skip
    assert "DTD or entities" in _bad_file(w, xxe, "x.eaf")[0]
    lol = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
           '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><ANNOTATION_DOCUMENT>&c;</ANNOTATION_DOCUMENT>')
    assert "DTD or entities" in _bad_file(w, lol, "x.eaf")[0]


def test_consent_guard_refuses_the_import_for_a_child_without_consent(world):
    w = world
    with session_scope(w["url"]) as s:
        s.get(Person, w["pid"]).enrolled = True  # the seeded child is named but not enrolled
        consent.set_consent_required(s, w["ids"].groups["child-x"], True, "t")
    text = tf.write_boris([TagRecord("Child X", "fear", 1.0, 2.0)])
    (line,) = _bad_file(w, text, "c.csv")
    assert line.startswith("line 2:") and "may not have data stored per person" in line
    with session_scope(w["url"]) as s:
        consent.grant(s, w["pid"], "analysis", "t")
    assert tf.import_tags(w["url"], w["viewer"], w["sid"], text.encode(), "c.csv").added == 1


def test_a_teacher_may_not_import_or_export_tags(world):
    w = world
    teacher = data.viewer_for(w["url"], w["ids"].users["teacher"])
    with pytest.raises(PermissionError):
        tf.import_tags(w["url"], teacher, w["sid"], b"", "x.csv")
    with pytest.raises(PermissionError):
        tf.export_tags(w["url"], teacher, w["sid"], "eaf")


def test_cli_exports_and_imports_elan_and_boris(world, template, settings, tmp_path, monkeypatch):
    from cli.clinic import tags as tags_cli

    w = world
    monkeypatch.setenv("USER", "dr_cli")
    _seed_tags(w)
    run = CliRunner().invoke
    eaf, boris = tmp_path / "t.eaf", tmp_path / "t.csv"
    r = run(tags_cli, ["export", str(w["sid"]), "--format", "eaf", "-o", str(eaf)])
    assert r.exit_code == 0 and "4 tags" in r.output, r.output
    assert run(tags_cli, ["export", str(w["sid"]), "--format", "boris", "-o", str(boris)]).exit_code == 0
    assert eaf.read_bytes().startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert len(_audits(w["url"], "export_tags")) == 2
    r = run(tags_cli, ["export", str(w["sid"]), "--format", "eaf", "-o", str(eaf / "x.eaf")])  # under a file
    assert r.exit_code != 0 and "cannot write the tag file" in r.output and len(r.output.strip().splitlines()) == 1
    assert len(_audits(w["url"], "export_tags")) == 2  # a failed write leaves no row saying it was exported
    r = run(tags_cli, ["export", str(w["sid"]), "--format", "boris", "--person", "Nobody"])
    assert r.exit_code != 0 and "'Nobody' was not seen in session" in r.output
    copy_seeded(template, settings)
    r = run(tags_cli, ["import", str(eaf)])
    assert r.exit_code != 0 and "give --session" in r.output
    r = run(tags_cli, ["import", str(eaf), "--session", str(w["sid"])])
    assert r.exit_code == 0 and "4 tags imported" in r.output, r.output
    r = run(tags_cli, ["import", str(boris), "--session", str(w["sid"])])  # BORIS guessed from its header
    assert r.exit_code == 0 and "0 tags imported, 4 skipped" in r.output, r.output
    with session_scope(w["url"]) as s:
        assert {t.author for t in tags.latest_tags(s, session_id=w["sid"])} == {"dr_cli"}
    bad = tmp_path / "bad.csv"
    bad.write_text(boris.read_text().replace('"fear"', '"juggling"', 1).replace("10.000", "x", 1))
    r = run(tags_cli, ["import", str(bad), "--session", str(w["sid"])])
    assert r.exit_code != 0 and "nothing imported" in r.output
    assert "bad.csv: line 2: label 'juggling' is not in the vocabulary" in r.output, r.output
    assert "bad.csv: line 4: Start (s) 'x' is not a number" in r.output and "2 problem(s)" in r.output


# --- the review page: download and upload (wiring) -----------------------------------------------


def _review(user_id: int, sid: int):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from dashboard import auth

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"), default_timeout=60)
    at.session_state[auth.USER_KEY] = user_id
    at.query_params["session"] = str(sid)
    at.run()
    at.switch_page("views/review.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_review_page_prepares_a_tag_file_and_imports_one(world, template, settings):
    from dashboard.safe import shown

    w = world
    _seed_tags(w)
    at = _review(w["ids"].users["clinician"], w["sid"])
    at.radio(key="tagfile_format").set_value("eaf").run()
    at.button(key="tagfile_export").click().run()
    out = at.session_state[f"tagfile_{w['sid']}_{w['pid']}_eaf"]
    assert out.n_tags == 4 and out.data.startswith(b"<?xml") and at.get("download_button")
    assert _audits(w["url"], "export_tags")[0].detail["person_id"] == w["pid"]
    copy_seeded(template, settings)  # an empty copy: import the file back from the page
    at = _review(w["ids"].users["clinician"], w["sid"])
    upload = f"tagfile_upload_{w['sid']}_{w['pid']}"
    at.file_uploader(key=upload).set_value((out.file_name, out.data, "application/xml")).run()
    at.button(key="tagfile_import").click().run()
    assert not at.exception
    assert len(_current(w["url"], w["sid"])) == 4
    assert any("4 tags imported" in shown(s.value) for s in at.success)
    bad = out.data.replace(b">fear<", b">juggling<", 1)
    at.file_uploader(key=upload).set_value(("bad.eaf", bad, "application/xml")).run()
    at.button(key="tagfile_import").click().run()
    assert any("nothing imported" in shown(e.value) for e in at.error)
    (code,) = at.code
    assert "label 'juggling' is not in the vocabulary" in code.value and len(_current(w["url"], w["sid"])) == 4


def test_a_point_event_is_stored_as_one_or_refused_by_name(world):
    """BORIS POINT events (start = stop): stored where storage takes zero-length tags (the group vocabularies'
    point labels), else the file is refused naming the event; either way never stretched into a range."""
    w = world
    try:
        with session_scope(w["url"]) as s:
            tags.add_tag(s, session_id=w["sid"], person_id=w["pid"], t_start=4.0, t_end=4.0, label="fear", author="t")
            s.rollback()
        points = True
    except ValueError:
        points = False
    text = tf.write_boris([TagRecord("Child X", "fear", 1.0, 3.0), TagRecord("Child X", "happy", 7.5, 7.5)])
    if points:
        assert tf.import_tags(w["url"], w["viewer"], w["sid"], text.encode(), "p.csv").added == 2
        assert (w["pid"], "happy", 7.5, 7.5, "", False) in _current(w["url"], w["sid"])
    else:
        (line,) = _bad_file(w, text, "p.csv")
        assert line.startswith("line 3: a point event at 7.500 s") and "only ranges" in line
