"""Clinician tags: CRUD, versions, soft delete with audit, CSV round trip, vocabulary,
survival across re-analysis, and the ``affectline tags`` commands."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from affectline.features import FEATURE_NAMES
from recognition.personal.simulate import face_rows
from storage.db import session_scope
from storage.models import AuditEntry, FeatureSeries, Tag, TimeBin
from storage.repo import AnalysisResult, TrackRecord, replace_analysis
from storage.tags import (
    BUILTIN_LABELS,
    TagError,
    add_label,
    add_tag,
    delete_tag,
    edit_tag,
    export_csv,
    import_csv,
    latest_tags,
    resolve_person,
    tag_history,
    vocabulary,
)
from tests.clinic_factories import add_track_with_features, make_person, make_recording


@pytest.fixture()
def world(db_url):
    """One child in one 60 s session with stored features."""
    rng = np.random.default_rng(0)
    with session_scope(db_url) as s:
        p = make_person(s, "Child A")
        rec = make_recording(s, 60)
        add_track_with_features(s, rec.id, p.id, face_rows("rest", 60, rng))
        return db_url, rec.id, p.id


def test_vocabulary_has_the_seven_expressions_and_clinic_labels(db_url):
    with session_scope(db_url) as s:
        assert vocabulary(s) == list(BUILTIN_LABELS)
        add_label(s, "anxiety", "dr_lee")
        add_label(s, "Anxiety", "dr_lee")  # same label, different case: not a second entry
        add_label(s, "avoidance", "dr_lee")
        assert vocabulary(s) == list(BUILTIN_LABELS) + ["anxiety", "avoidance"]
        with pytest.raises(TagError, match="reserved"):
            add_label(s, "Uncertain", "dr_lee")
        assert s.scalar(
            select(AuditEntry).where(AuditEntry.action == "add_tag_label", AuditEntry.target == "tag_label:anxiety")
        )


def test_add_list_edit_delete_keeps_every_version(world):
    url, sid, pid = world
    with session_scope(url) as s:
        add_label(s, "anxiety", "dr_lee")
        a = add_tag(s, session_id=sid, person_id=pid, t_start=5, t_end=9, label="HAPPY", author="dr_lee", note="laughs")
        b = add_tag(s, session_id=sid, person_id=pid, t_start=20, t_end=24, label="anxiety", author="dr_lee")
        assert a.label == "happy"  # canonical spelling from the vocabulary
        uid_a, uid_b = a.uid, b.uid
    with session_scope(url) as s:
        e = edit_tag(s, uid_a[:8], "dr_kim", label="anxiety", t_end=10)
        assert (e.version, e.label, e.t_start, e.t_end, e.author, e.note) == (2, "anxiety", 5, 10, "dr_kim", "laughs")
        d = delete_tag(s, uid_b, "dr_kim", reason="wrong child")
        assert d.deleted and d.version == 2
    with session_scope(url) as s:
        live = latest_tags(s, person_id=pid)
        assert [(t.uid, t.version, t.label) for t in live] == [(uid_a, 2, "anxiety")]
        assert {t.uid for t in latest_tags(s, person_id=pid, include_deleted=True)} == {uid_a, uid_b}
        hist = tag_history(s, uid_a)
        assert [(t.version, t.label, t.author) for t in hist] == [(1, "happy", "dr_lee"), (2, "anxiety", "dr_kim")]
        assert all(t.created_at is not None for t in hist)
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "delete_tag"))
        assert entry.actor == "dr_kim" and entry.target == f"tag:{uid_b}" and entry.detail["reason"] == "wrong child"
        assert s.scalar(select(Tag).where(Tag.uid == uid_b, Tag.version == 1)) is not None  # never lost
        with pytest.raises(TagError, match="deleted"):
            edit_tag(s, uid_b, "dr_kim", label="happy")


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"label": "joy"}, "not in the vocabulary"),
        ({"t_start": 9, "t_end": 5}, "start < end"),
        ({"t_start": 70, "t_end": 75}, "after the end of session"),
        ({"session_id": 999}, "session 999 does not exist"),
        ({"person_id": 999}, "person 999 does not exist"),
        ({"author": ""}, "needs an author"),
    ],
)
def test_invalid_tags_are_refused_with_a_clear_message(world, kw, msg):
    url, sid, pid = world
    args = dict(session_id=sid, person_id=pid, t_start=1, t_end=3, label="happy", author="dr_lee") | kw
    with session_scope(url) as s, pytest.raises(TagError, match=msg):
        add_tag(s, **args)


def test_csv_export_import_round_trip_and_versioning(world):
    url, sid, pid = world
    with session_scope(url) as s:
        add_label(s, "anxiety", "dr_lee")
        for k in range(3):
            add_tag(s, session_id=sid, person_id=pid, t_start=10 * k, t_end=10 * k + 4, label="sad", author="dr_lee")
        buf = io.StringIO()
        assert export_csv(s, buf, "dr_lee", person_id=pid) == 3
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "export_tags")).detail["rows"] == 3
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [r["label"] for r in rows] == ["sad"] * 3 and float(rows[1]["t_start"]) == 10.0
    # Re-importing the export changes nothing; editing one row adds one version; a new row adds a tag.
    with session_scope(url) as s:
        r = import_csv(s, io.StringIO(buf.getvalue()), "dr_kim")
        assert (r.added, r.updated, r.unchanged) == (0, 0, 3)
    rows[0]["label"] = "anxiety"
    rows.append({"uid": "", "session_id": sid, "person": "Child A", "t_start": "40", "t_end": "44", "label": "fear"})
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=[*rows[0], "person"])
    w.writeheader()
    w.writerows(rows)
    with session_scope(url) as s:
        r = import_csv(s, io.StringIO(out.getvalue()), "dr_kim")
        assert (r.added, r.updated, r.unchanged) == (1, 1, 2)
        live = latest_tags(s, person_id=pid)
        assert sorted(t.label for t in live) == ["anxiety", "fear", "sad", "sad"]
        assert next(t for t in live if t.label == "anxiety").version == 2


def test_a_bad_csv_row_names_its_line_and_stores_nothing(world, tmp_path):
    url, sid, pid = world
    path = tmp_path / "tags.csv"
    path.write_text(f"session_id,person_id,t_start,t_end,label\n{sid},{pid},1,3,happy\n{sid},{pid},5,7,joy\n")
    with pytest.raises(TagError, match=r"tags.csv line 3: label 'joy' is not in the vocabulary"):
        with session_scope(url) as s:
            import_csv(s, path, "dr_lee")
    with session_scope(url) as s:
        assert latest_tags(s, person_id=pid) == []
    path.write_text(f"session_id,person_id,t_start,label\n{sid},{pid},1,happy\n")
    with pytest.raises(TagError, match="line 2: column 't_end' is missing"), session_scope(url) as s:
        import_csv(s, path, "dr_lee")


def test_tags_survive_reanalysis_of_their_session(world):
    """Re-analysis replaces tracks, bins and features; tags reference time, so they stay."""
    url, sid, pid = world
    with session_scope(url) as s:
        uid = add_tag(s, session_id=sid, person_id=pid, t_start=5, t_end=9, label="happy", author="dr_lee").uid
    rng = np.random.default_rng(1)
    n = 50
    bins = {"t_start": np.arange(n, dtype=float), "t_end": np.arange(1, n + 1, dtype=float), "face_visible": [True] * n}
    import pandas as pd

    track = TrackRecord(track_key=7, times=np.arange(n) + 0.5, face_boxes=np.zeros((n, 4)), context_boxes=np.zeros((n, 4)),
                        embedding=None, bins=pd.DataFrame(bins), features=face_rows("smile", n, rng),
                        feature_names=FEATURE_NAMES, person_id=pid)  # fmt: skip
    with session_scope(url) as s:
        replace_analysis(s, AnalysisResult(sid, 25.0, n * 25, 640, 480, 4.0, 1.0, "cues", "fer", [track]))
    with session_scope(url) as s:
        assert [t.uid for t in latest_tags(s, session_id=sid)] == [uid]
        assert s.scalar(select(FeatureSeries).where(FeatureSeries.session_id == sid)).n == n
        assert len(s.scalars(select(TimeBin).where(TimeBin.session_id == sid)).all()) == n


def test_resolve_person_by_id_or_label(world):
    url, _, pid = world
    with session_scope(url) as s:
        assert resolve_person(s, str(pid)).id == pid and resolve_person(s, "Child A").id == pid
        make_person(s, "Twin")
        make_person(s, "Twin")
        with pytest.raises(LookupError, match="2 persons are labelled 'Twin'"):
            resolve_person(s, "Twin")
        with pytest.raises(LookupError, match="no person is labelled 'Nobody'"):
            resolve_person(s, "Nobody")


def test_tags_cli(world, tmp_path, monkeypatch):
    from cli.clinic import tags

    _, sid, pid = world
    monkeypatch.setenv("USER", "dr_cli")
    run = CliRunner().invoke
    assert run(tags, ["vocab", "add", "anxiety"]).exit_code == 0
    r = run(tags, ["add", str(sid), "Child A", "0:05", "9.5", "anxiety", "--note", "hand flapping", "--baseline"])
    assert r.exit_code == 0, r.output
    uid = r.output.strip()
    r = run(tags, ["add", str(sid), "Child A", "12", "10", "happy"])
    assert r.exit_code != 0 and "start < end" in r.output
    r = run(tags, ["list", "--person", "Child A"])
    assert f"{uid[:8]}\tv1\tsession {sid}\tperson {pid}\t5.0-9.5s\tanxiety baseline\tdr_cli\thand flapping" in r.output
    assert run(tags, ["edit", uid[:8], "--label", "sad", "--author", "dr_b"]).exit_code == 0
    out = tmp_path / "t.csv"
    assert run(tags, ["export", "-o", str(out), "--session", str(sid)]).exit_code == 0
    with open(out, newline="") as f:
        assert next(csv.DictReader(f))["label"] == "sad"
    assert run(tags, ["delete", uid[:8], "--reason", "test"]).exit_code == 0
    assert run(tags, ["list"]).output == ""
    r = run(tags, ["import", str(out)])
    assert r.exit_code == 0 and "0 added, 1 updated" in r.output  # the deleted tag comes back as a new version
    r = run(tags, ["list", "--history", uid[:8]])
    assert [line.split("\t")[1] for line in r.output.splitlines()] == ["v1", "v2", "v3", "v4"]
    assert "DELETED" in r.output.splitlines()[2]
    r = run(tags, ["vocab", "list"])
    assert r.output.splitlines()[:7] == [f"{c}\t(built in)" for c in BUILTIN_LABELS] and "anxiety" in r.output
