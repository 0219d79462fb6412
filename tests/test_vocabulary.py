"""Tag vocabularies per group (services.vocabulary): defaults by kind, edits by who manages the group,
audited, keys unique, the calm/none label kept, tags outside the vocabulary kept; the CLI."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from affectline.types import EXPRESSION_CLASSES
from services import vocabulary as vc
from services.actor import actor_for_user, operator
from services.tagging import add_range, player_tags
from storage.db import session_scope
from storage.models import AuditEntry, Group, Recording
from tests.dashboard_factories import seed


@pytest.fixture()
def world(db_url):
    ids = seed(db_url)
    with session_scope(db_url) as s:
        actors = {u: actor_for_user(s, ids.users[u]) for u in ("admin", "teacher", "clinician")}
    return db_url, ids, actors


def test_defaults_are_behaviours_with_a_calm_label_not_the_expressions(world):
    url, ids, who = world
    therapy = vc.group_vocabulary(url, who["clinician"], "child-x")
    labels = [it.label for it in therapy]
    assert not set(labels) & set(EXPRESSION_CLASSES)
    assert sum(it.calm for it in therapy) == 1 and therapy[0].label == "calm"
    assert {it.kind for it in therapy} == {vc.EventKind.state, vc.EventKind.point}
    assert len({it.key for it in therapy}) == len(therapy)  # one key per label
    classroom = vc.group_vocabulary(url, who["admin"], "class-a")
    assert any(it.calm for it in classroom) and classroom != therapy
    # The exported helper reads the same thing from a recording or a group in a transaction, or by session id.
    with session_scope(url) as s:
        assert vc.vocabulary_for_group(s.get(Recording, ids.sessions["therapy"])) == therapy
        assert vc.vocabulary_for_group(s.get(Group, ids.groups["child-x"])) == therapy
    assert vc.vocabulary_for_group(ids.sessions["therapy"], url) == therapy


def test_edits_are_audited_checked_and_limited_to_who_manages_the_group(world):
    url, ids, who = world
    c = who["clinician"]
    after = vc.set_label(url, c, "child-x", "hand flapping", "f", "state")
    assert after[-1] == vc.VocabItem("hand flapping", "f", vc.EventKind.state)
    assert len(after) == len(vc.DEFAULTS[vc.SessionKind.therapy]) + 1  # the default was stored with the edit
    after = vc.set_label(url, c, "child-x", "Hand Flapping", kind="point")  # matched without case
    assert after[-1].kind is vc.EventKind.point and after[-1].key == "f"
    with pytest.raises(ValueError, match="already 'calm'"):
        vc.set_label(url, c, "child-x", "hand flapping", "c")
    with pytest.raises(ValueError, match="not free"):
        vc.set_label(url, c, "child-x", "spinning", ",")
    with pytest.raises(ValueError, match="needs a key"):
        vc.set_label(url, c, "child-x", "spinning")
    with pytest.raises(ValueError, match="reserved"):
        vc.set_label(url, c, "child-x", "uncertain", "u")
    with pytest.raises(ValueError, match="calm/none label"):
        vc.remove_label(url, c, "child-x", "calm")
    # The calm mark moves to another label; the old one may then go.
    after = vc.set_label(url, c, "child-x", "settled", "z", calm=True)
    assert [it.label for it in after if it.calm] == ["settled"]
    after = vc.remove_label(url, c, "child-x", "calm")
    assert "calm" not in [it.label for it in after]
    # Teachers cannot edit; a clinician cannot see a classroom; nobody edits a group they do not see.
    with pytest.raises(PermissionError):
        vc.set_label(url, who["teacher"], "class-a", "x", "x")
    with pytest.raises(LookupError, match="not visible"):
        vc.set_label(url, c, "class-a", "x", "x")
    with session_scope(url) as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.target == f"group:{ids.groups['child-x']}")
                              .order_by(AuditEntry.id)))  # fmt: skip
    actions = [r.action for r in rows]
    assert actions == ["vocabulary_set", "vocabulary_set", "vocabulary_set", "vocabulary_remove"]
    assert all(r.actor == "clinician" for r in rows)
    detail = rows[1].detail if isinstance(rows[1].detail, dict) else json.loads(rows[1].detail)
    flapping = lambda items: next(i for i in items if i["label"] == "hand flapping")  # noqa: E731
    assert flapping(detail["before"])["kind"] == "state" and flapping(detail["after"])["kind"] == "point"
    assert vc.reset_vocabulary(url, c, "child-x") == vc.DEFAULTS[vc.SessionKind.therapy]
    with session_scope(url) as s:
        assert s.scalar(select(AuditEntry).where(AuditEntry.action == "vocabulary_reset")) is not None


def test_tags_outside_the_vocabulary_still_display(world):
    url, ids, who = world
    c, sid, pid = who["clinician"], ids.sessions["therapy"], ids.persons["therapy"][0]
    add_range(url, c, sid, pid, 3.0, 6.0, "stimming")
    vc.set_label(url, c, "child-x", "spinning", "p", "state")
    vc.set_label(url, c, "child-x", "stimming", "s")  # unchanged: no audit row
    vc.remove_label(url, c, "child-x", "stimming")
    assert [t["label"] for t in player_tags(url, c, sid, pid)] == ["stimming"]
    assert "stimming" not in [it.label for it in vc.group_vocabulary(url, c, "child-x")]


def test_the_cli_lists_sets_and_removes(world, settings):
    from cli.main import main as cli

    url, ids, _ = world
    r = CliRunner()
    out = r.invoke(cli, ["groups", "vocabulary", "list", "child-x"])
    assert out.exit_code == 0, out.output
    assert "calm\tc\tstate\tcalm" in out.output and "(default)" in out.output
    out = r.invoke(cli, ["groups", "vocabulary", "set", "child-x", "spinning", "--key", "p", "--kind", "point"])
    assert out.exit_code == 0, out.output
    out = r.invoke(cli, ["groups", "vocabulary", "list", "child-x"])
    assert "spinning\tp\tpoint" in out.output and "(default)" not in out.output
    out = r.invoke(cli, ["groups", "vocabulary", "set", "child-x", "twirl", "--key", "p"])
    assert out.exit_code != 0 and "already 'spinning'" in out.output and "Traceback" not in out.output
    out = r.invoke(cli, ["groups", "vocabulary", "remove", "child-x", "spinning"])
    assert out.exit_code == 0, out.output
    out = r.invoke(cli, ["groups", "vocabulary", "reset", "child-x"])
    assert out.exit_code == 0, out.output
    with session_scope(url) as s:
        actors = set(s.scalars(select(AuditEntry.actor).where(AuditEntry.action.like("vocabulary_%"))))
    assert actors and all(a.startswith("os:") for a in actors)
    assert operator().can("tag")


def test_vocabulary_changes_read_in_words_in_the_audit_log(world):
    from services.audit_text import describe

    url, ids, who = world
    vc.set_label(url, who["clinician"], "child-x", "spinning", "p", "point")
    vc.remove_label(url, who["clinician"], "child-x", "spinning")
    with session_scope(url) as s:
        rows = list(s.scalars(select(AuditEntry).where(AuditEntry.action.like("vocabulary_%")).order_by(AuditEntry.id)))
        text = [describe(r.action, r.target, r.target_label or "", r.detail) for r in rows]
    assert text[0].startswith("Changed the tag vocabulary of 'child-x'") and text[0].endswith("'spinning' on key p (one instant)")
    assert "Removed 'spinning' from the tag vocabulary of" in text[1] and "{" not in "".join(text)
