"""The clinician's page through AppTest: the typed tag form never re-saves the previous range, a range
equal to an existing tag's is refused with a message, and the group's vocabulary is edited there."""

from __future__ import annotations

from dashboard import data
from dashboard.safe import shown
from services import vocabulary as vc
from tests.test_dashboard_clinician import db, open_review, template  # noqa: F401  (fixtures)


def _tags(url, ids, sid):
    return data.list_tags(url, data.viewer_for(url, ids.users["clinician"]), sid)


def test_the_form_is_emptied_after_a_tag_and_the_same_range_is_refused(db):  # noqa: F811
    url, ids, sid, pid = db
    at = open_review(ids.users["clinician"], sid)
    assert (at.text_input(key="tag_from").value, at.text_input(key="tag_to").value) == ("", "")
    assert at.selectbox(key="tag_label").options[0] == "calm"  # the group's vocabulary first, not the expressions
    at.text_input(key="tag_from").input("1:40")
    at.text_input(key="tag_to").input("2:05")
    at.selectbox(key="tag_label").set_value("anxious")
    at.button(key="add_tag").click().run()
    assert not at.exception and len(_tags(url, ids, sid)) == 1
    assert (at.text_input(key="tag_from").value, at.text_input(key="tag_to").value) == ("", "")
    at.button(key="add_tag").click().run()  # "Add tag" again: no range, nothing saved (it used to save a copy)
    assert any("type the range" in shown(e.value) for e in at.error) and len(_tags(url, ids, sid)) == 1
    at.text_input(key="tag_from").input("1:40")
    at.text_input(key="tag_to").input("2:05")
    at.button(key="add_tag").click().run()
    assert any("already tagged 'anxious'" in shown(e.value) for e in at.error) and len(_tags(url, ids, sid)) == 1


def test_the_vocabulary_is_edited_on_the_page_and_audited(db):  # noqa: F811
    url, ids, sid, pid = db
    at = open_review(ids.users["clinician"], sid)
    at.text_input(key="vocab_label").input("spinning")
    at.text_input(key="vocab_key").input("p")
    at.radio(key="vocab_kind").set_value("point")
    at.button(key="vocab_save").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    clinician = data.viewer_for(url, ids.users["clinician"])
    assert vc.VocabItem("spinning", "p", vc.EventKind.point) in vc.group_vocabulary(url, clinician, "child-x")
    assert "spinning" in at.selectbox(key="tag_label").options
    assert data.count_audit(url, "vocabulary_set") == 1
    at.text_input(key="vocab_label").input("calm")
    at.button(key="vocab_remove").click().run()
    assert any("calm/none label" in shown(e.value) for e in at.error)
