"""Consent on every write path: in a group that requires consent, no way of writing per-person rows
(analysis, enrol, rename, merge, split, tags and tag import, personalisation) stores them for a
person without valid consent, on SQLite and on PostgreSQL.

The world: Class P with Ada (valid analysis consent), Ben (enrolled, never answered) and one
'Unknown 1' face, all stored by an analysis made before the group required consent (rows stored
then stay until withdrawn or expired). Then the group requires consent. Each path is tried for
someone it must refuse (one line, nothing stored) and, beside it, for Ada, whom it must allow.
"""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest
from sqlalchemy import create_engine, func, select, text

from services import clinic
from services.actor import operator
from storage import consent, people, person_models, repo, tags
from storage.db import get_engine, migrate, session_scope
from storage.models import (
    FeatureSeries,
    IdentityOverride,
    Job,
    Person,
    PersonEmbedding,
    PersonModel,
    SessionKind,
    Tag,
    TimeBin,
    Track,
)
from tests.dashboard_factories import make_bins

PER_PERSON = (Person, Track, TimeBin, FeatureSeries, PersonEmbedding, IdentityOverride, Tag, PersonModel, Job)


@pytest.fixture(scope="module")
def pg_server():
    from tests.services import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def url(request, settings):
    if request.param == "sqlite":
        u = settings.resolved_database_url
        migrate(u)
        yield u
        return
    server = request.getfixturevalue("pg_server")  # one cluster for the module, a fresh database per test
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    u = server.rsplit("/", 1)[0] + "/" + name
    migrate(u)
    yield u
    get_engine(u).dispose()


def _track(key: int, pid: int | None, rng, n: int = 20) -> repo.TrackRecord:
    times = np.arange(0, n, 0.5, dtype=np.float32)
    boxes = np.tile(np.array([[10 + 40 * key, 10, 40 + 40 * key, 40]], np.float32), (len(times), 1))
    return repo.TrackRecord(
        track_key=key, times=times, face_boxes=boxes, context_boxes=boxes, embedding=rng.normal(size=128),
        bins=make_bins(n, rng), features=np.zeros((n, 2), np.float32), feature_names=("a", "b"), person_id=pid,
    )  # fmt: skip


def _store(url: str, sid: int, tracks) -> dict[int, int]:
    with session_scope(url) as s:
        return repo.replace_analysis(s, repo.AnalysisResult(sid, 25.0, 500, 640, 360, 2.0, 1.0, "cues@x", "fer@y",
                                                             list(tracks)))  # fmt: skip


@pytest.fixture()
def world(url):
    rng = np.random.default_rng(3)
    with session_scope(url) as s:
        g = repo.get_or_create_group(s, "Class P", SessionKind.classroom).id
        sid = repo.create_recording(s, "/videos/p.mp4", SessionKind.classroom, group_id=g).id
        ada = people._new_person(s, g, "Ada", enrolled=True).id
        ben = people._new_person(s, g, "Ben", enrolled=True).id
    person_of = _store(url, sid, [_track(0, ada, rng), _track(1, ben, rng), _track(2, None, rng)])
    with session_scope(url) as s:
        consent.grant(s, ada, "analysis", "t")
        consent.set_consent_required(s, g, True, "t")
    return dict(url=url, group=g, session=sid, ada=ada, ben=ben, unknown=person_of[2], rng=rng)


def _counts(url: str) -> dict[str, int]:
    with session_scope(url) as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) for m in PER_PERSON}


def _refused(w, fn, match: str = "may not have data stored per person|requires consent"):
    """``fn(s)`` inside one transaction is refused with one line, and no per-person row changed."""
    before = _counts(w["url"])
    with pytest.raises(ValueError, match=match) as e:
        with session_scope(w["url"]) as s:
            fn(s)
    assert "\n" not in str(e.value)
    assert _counts(w["url"]) == before
    return str(e.value)


def test_analysis_stores_only_the_consented_person(world):
    w = world
    _store(w["url"], w["session"], [_track(0, w["ada"], w["rng"]), _track(1, w["ben"], w["rng"]),
                                    _track(2, None, w["rng"])])  # fmt: skip
    with session_scope(w["url"]) as s:
        assert set(s.scalars(select(TimeBin.person_id).where(TimeBin.session_id == w["session"]).distinct())) == {w["ada"]}


def test_enroll_refuses_a_new_person_and_one_without_consent(world):
    w = world
    msg = _refused(w, lambda s: people.enroll(s, w["session"], 2, "Cleo", "t"))
    assert "Class P" in msg and "requires consent" in msg
    msg = _refused(w, lambda s: people.enroll(s, w["session"], 2, "Ben", "t"))
    assert f"person {w['ben']}" in msg and "none is recorded" in msg
    with session_scope(w["url"]) as s:  # the consented child: allowed
        assert people.enroll(s, w["session"], 2, "Ada", "t").id == w["ada"]


def test_rename_that_enrols_an_unknown_face_is_refused(world):
    w = world
    _refused(w, lambda s: people.rename(s, w["unknown"], "Cleo", "t"))
    with session_scope(w["url"]) as s:
        assert s.get(Person, w["unknown"]).enrolled is False
        assert people.rename(s, w["ada"], "Ada L", "t").label == "Ada L"  # no new rows: allowed


def test_merge_into_a_person_without_consent_is_refused(world):
    w = world
    _refused(w, lambda s: people.merge(s, w["ben"], w["unknown"], "t"))
    with session_scope(w["url"]) as s:
        people.merge(s, w["ada"], w["unknown"], "t")
        assert s.get(Person, w["unknown"]) is None


def test_split_refuses_a_new_person_and_one_without_consent(world):
    w = world
    # The case: splitting the consented child's track created a new person without any consent.
    _refused(w, lambda s: people.split(s, w["session"], 0, "t", t_start=0.0, t_end=4.0))
    _refused(w, lambda s: people.split(s, w["session"], 0, "t", name="Ben", t_start=0.0, t_end=4.0))
    with session_scope(w["url"]) as s:  # Ben's track to Ada: she consented
        assert people.split(s, w["session"], 1, "t", name="Ada", t_start=0.0, t_end=4.0).id == w["ada"]


def test_tags_and_tag_import_are_refused_for_a_person_without_consent(world):
    w = world
    tag = dict(session_id=w["session"], t_start=1.0, t_end=3.0, label="happy", author="dr")
    _refused(w, lambda s: tags.add_tag(s, person_id=w["ben"], **tag))
    csv_text = ("session_id,person_id,t_start,t_end,label\r\n"
                f"{w['session']},{w['ada']},1,2,happy\r\n{w['session']},{w['ben']},1,2,sad\r\n")  # fmt: skip
    msg = _refused(w, lambda s: tags.import_csv(s, io.StringIO(csv_text), "dr"))
    assert "line 3" in msg  # Ada's row is not stored either: one bad row stores nothing
    with session_scope(w["url"]) as s:
        tags.add_tag(s, person_id=w["ada"], **tag)
        assert tags.import_csv(s, io.StringIO(csv_text.rsplit("\r\n", 2)[0] + "\r\n"), "dr").added == 1


def test_elan_and_boris_imports_are_refused_for_a_person_without_consent(world):
    from services import tag_formats as tf

    w = world
    recs = [tf.TagRecord("Ada", "happy", 1.0, 2.0), tf.TagRecord("Ben", "sad", 1.0, 2.0)]
    for fmt in tf.FORMATS:
        before = _counts(w["url"])
        with pytest.raises(tf.TagFileError) as e:
            tf.import_tags(w["url"], operator(), w["session"], tf.write(recs, fmt), f"coded.{fmt}", fmt)
        assert _counts(w["url"]) == before  # Ada's event is not stored either: the file is all or nothing
        (line,) = e.value.lines
        assert f"person {w['ben']} may not have data stored per person" in line and "\n" not in line
    assert tf.import_tags(w["url"], operator(), w["session"], tf.write(recs[:1], "boris"), "ada.csv").added == 1


def test_personalisation_is_refused_for_a_person_without_consent(world, settings):
    w = world
    before = _counts(w["url"])
    with pytest.raises(ValueError, match="may not have data stored per person"):
        clinic.request_personalisation(w["url"], settings, operator(), w["ben"])
    assert _counts(w["url"]) == before  # no job row, no audit of a request that did not happen
    _refused(w, lambda s: person_models.save_model(s, w["ben"], "personal", b"params", {}))
    _refused(w, lambda s: repo.create_job(s, "affectline.rescore", person_id=w["ben"]))
    with session_scope(w["url"]) as s:
        assert person_models.save_model(s, w["ada"], "personal", b"params", {}).version == 1


def test_a_recorded_no_is_honoured_where_consent_is_not_required(world):
    w = world
    with session_scope(w["url"]) as s:
        consent.set_consent_required(s, w["group"], False, "t")
        consent.withdraw(s, w["ada"], "analysis", "t")
        people.rename(s, w["unknown"], "Cleo", "t")  # no answer, not required: allowed
    msg = _refused(w, lambda s: tags.add_tag(s, person_id=w["ada"], session_id=w["session"], t_start=1.0, t_end=2.0,
                                             label="happy", author="dr"))  # fmt: skip
    assert "withdrawn" in msg


def test_cli_split_in_a_consent_required_group_fails_in_one_line(world, monkeypatch):
    from click.testing import CliRunner

    from affectline.settings import get_settings
    from cli.main import main as cli

    w = world
    monkeypatch.setenv("AFFECTLINE_DATABASE_URL", w["url"])
    get_settings.cache_clear()
    before = _counts(w["url"])
    res = CliRunner().invoke(cli, ["persons", "split", str(w["session"]), "0", "--from", "0", "--to", "4"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "requires consent" in res.output and len(res.output.strip().splitlines()) == 1
    assert _counts(w["url"]) == before
