"""storage.access: password hashing, users, grants, what each role may see and do."""

from __future__ import annotations

import pytest

from tests.dashboard_factories import seed
from storage import access, repo
from storage.db import session_scope
from storage.models import Role, SessionKind, User, UserGroup


def test_hash_is_salted_argon2id_and_verifies_only_the_right_password():
    h1, h2 = access.hash_password("s3cret passphrase"), access.hash_password("s3cret passphrase")
    assert h1 != h2  # different salts
    assert h1.startswith("$argon2id$v=19$")
    assert access.verify_password(h1, "s3cret passphrase") and access.verify_password(h2, "s3cret passphrase")
    assert not access.verify_password(h1, "s3cret passphrase ")
    assert not access.verify_password(h1, "")
    assert not access.needs_rehash(h1)


def test_legacy_pbkdf2_hashes_still_verify_and_need_a_rehash():
    old = access.legacy_pbkdf2_hash("s3cret", iterations=1000)
    assert old.startswith("pbkdf2_sha256$1000$")
    assert access.verify_password(old, "s3cret") and not access.verify_password(old, "s3cret ")
    assert access.needs_rehash(old)


@pytest.mark.parametrize("stored", [None, "", "garbage", "md5$1$00$00", "pbkdf2_sha256$x$zz$00"])
def test_malformed_or_missing_hash_never_matches(stored):
    assert access.verify_password(stored, "anything") is False


def test_empty_and_short_passwords_are_refused():
    with pytest.raises(ValueError, match="empty"):
        access.hash_password("")
    with pytest.raises(ValueError, match=f"11 characters long; at least {access.MIN_PASSWORD_LENGTH}"):
        access.hash_password("x" * 11)


def test_create_user_authenticate_and_set_password(db_url):
    with session_scope(db_url) as s:
        u = access.create_user(s, "  mme_dupont ", "teacher", "password one")
        nopw = access.create_user(s, "nopw", Role.clinician)
        uid, nid = u.id, nopw.id
    with session_scope(db_url) as s:
        assert access.authenticate(s, "mme_dupont", "password one").id == uid  # name is stripped on create
        assert access.authenticate(s, "mme_dupont", "password two") is None
        assert access.authenticate(s, "nobody", "password one") is None
        assert access.authenticate(s, "nopw", "") is None  # no password: cannot log in
        access.set_password(s, nid, "set later, long")
        access.set_password(s, uid, None)
    with session_scope(db_url) as s:
        assert access.authenticate(s, "nopw", "set later, long").id == nid
        assert access.authenticate(s, "mme_dupont", "password one") is None
        stored = s.get(User, nid).password_hash
        assert "set later, long" not in stored and stored.startswith("$argon2id$")


def test_create_user_errors_name_the_problem(db_url):
    with session_scope(db_url) as s:
        access.create_user(s, "a", "admin")
        with pytest.raises(ValueError, match="'a' already exists"):
            access.create_user(s, "a", "teacher")
        with pytest.raises(ValueError, match="role 'janitor'"):
            access.create_user(s, "b", "janitor")
        with pytest.raises(ValueError, match="username"):
            access.create_user(s, "   ", "teacher")
        with pytest.raises(LookupError, match="user 999"):
            access.set_password(s, 999, "x")


def test_visible_groups_follow_role_and_grants(db_url):
    ids = seed(db_url)
    with session_scope(db_url) as s:
        admin, teacher, clinician = (s.get(User, ids.users[n]) for n in ("admin", "teacher", "clinician"))
        assert access.visible_group_ids(s, admin) is None
        assert access.visible_group_ids(s, teacher) == [ids.groups["class-a"]]
        assert access.visible_group_ids(s, clinician) == [ids.groups["child-x"]]
        # A grant of the wrong kind is refused, and one left from an earlier role gives nothing.
        with pytest.raises(ValueError, match="a teacher sees only classroom groups, not therapy ones"):
            access.grant(s, teacher.id, ids.groups["child-x"])
        with pytest.raises(ValueError, match="a clinician sees only therapy groups"):
            access.grant(s, clinician.id, ids.groups["class-b"])
        with pytest.raises(ValueError, match="an administrator already sees every group"):
            access.grant(s, admin.id, ids.groups["class-b"])
        s.add_all([UserGroup(user_id=teacher.id, group_id=ids.groups["child-x"]),
                   UserGroup(user_id=clinician.id, group_id=ids.groups["class-b"])])  # fmt: skip
        s.flush()
        assert access.visible_group_ids(s, teacher) == [ids.groups["class-a"]]
        assert access.visible_group_ids(s, clinician) == [ids.groups["child-x"]]
        access.grant(s, teacher.id, ids.groups["class-b"])
        access.grant(s, teacher.id, ids.groups["class-b"])  # idempotent
        assert access.visible_group_ids(s, teacher) == [ids.groups["class-a"], ids.groups["class-b"]]
        access.revoke(s, teacher.id, ids.groups["class-a"])
        assert access.visible_group_ids(s, teacher) == [ids.groups["class-b"]]


def test_session_visibility_per_role(db_url):
    ids = seed(db_url)
    with session_scope(db_url) as s:
        teacher, clinician, admin = (s.get(User, ids.users[n]) for n in ("teacher", "clinician", "admin"))
        see = lambda u: {k for k, sid in ids.sessions.items() if access.can_see_session(s, u, sid)}  # noqa: E731
        assert see(teacher) == {"maths"}
        assert see(clinician) == {"therapy"}
        assert see(admin) == {"maths", "history", "therapy"}
        assert not access.can_see_session(s, admin, 12345)
        # The same rule through the repository query the pages use.
        titles = {r.title for r in repo.list_sessions(s, access.visible_group_ids(s, teacher))}
        assert titles == {"maths lesson"}


def test_grant_checks_both_ids(db_url):
    with session_scope(db_url) as s:
        u = access.create_user(s, "t", "teacher")
        g = repo.get_or_create_group(s, "c", SessionKind.classroom)
        with pytest.raises(LookupError, match="group 77"):
            access.grant(s, u.id, 77)
        with pytest.raises(LookupError, match="user 88"):
            access.grant(s, 88, g.id)


@pytest.mark.parametrize(
    "role, allowed",
    [
        (Role.teacher, {"view_sessions", "upload", "export", "manage_people"}),
        (Role.clinician, {"view_sessions", "upload", "export", "review", "tag", "manage_people"}),
        (Role.admin, set(access.ACTIONS)),
    ],
)
def test_permission_table(role, allowed):
    user = User(username="x", role=role)
    assert {a for a in access.ACTIONS if access.can(user, a)} == allowed


def test_unknown_action_is_an_error():
    with pytest.raises(KeyError, match="unknown action 'fly'"):
        access.can(User(username="x", role=Role.admin), "fly")
