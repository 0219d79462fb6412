"""Admin: users and roles, group grants, sessions, and the audit log."""

from __future__ import annotations

import streamlit as st

from affectline.settings import get_settings
from dashboard import auth, data
from storage.models import Role, SessionKind

settings = get_settings()
url = settings.resolved_database_url
viewer = auth.require_viewer()
auth.require(viewer, "manage_users")

st.title("Admin")
if flash := st.session_state.pop("admin_flash", None):
    st.success(flash)


def _do(fn, *args, ok: str) -> None:
    """Run an admin write; show its error in one line, or remember the success message and rerun."""
    try:
        fn(url, viewer, *args)
    except (ValueError, LookupError, PermissionError) as e:
        st.error(str(e))
    else:
        st.session_state["admin_flash"] = ok
        st.rerun()


users_tab, groups_tab, sessions_tab, audit_tab = st.tabs(["Users", "Groups & grants", "Sessions", "Audit log"])
roles = [r.value for r in Role]

with users_tab:
    users = data.users_frame(url, viewer)
    st.dataframe(users, hide_index=True, key="users_table")
    with st.form("new_user", clear_on_submit=True):
        st.markdown("**New user**")
        c1, c2, c3 = st.columns(3)
        name = c1.text_input("Username")
        role = c2.selectbox("Role", roles)
        pw = c3.text_input("Password (empty: cannot log in yet)", type="password")
        if st.form_submit_button("Create user"):
            _do(data.admin_create_user, name, role, pw or None, ok=f"User {name.strip()} created.")
    unames = dict(zip(users["id"].astype(int), users["username"]))
    if unames:
        c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        uid = c1.selectbox("User", list(unames), format_func=unames.get, key="edit_user")
        new_role = c2.selectbox("Role", roles, key="edit_role")
        if c3.button("Set role", key="set_role"):
            _do(data.admin_set_role, uid, new_role, ok=f"{unames[uid]} is now {new_role}.")
        c1, c3 = st.columns([4, 1], vertical_alignment="bottom")
        new_pw = c1.text_input("New password (empty: remove it)", type="password", key="edit_password")
        if c3.button("Set password", key="set_password"):
            _do(data.admin_set_password, uid, new_pw or None, ok=f"Password of {unames[uid]} updated.")

with groups_tab:
    groups = data.groups_frame(url, None)
    st.dataframe(groups, hide_index=True, key="groups_table")
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    gname = c1.text_input("New group (a class or a child's caseload)", key="new_group")
    gkind = c2.selectbox("Kind", [k.value for k in SessionKind], key="new_group_kind")
    if c3.button("Create group", key="create_group"):
        _do(data.admin_create_group, gname, gkind, ok=f"Group {gname.strip()} created.")
    st.markdown("**Grants**: teachers see only classroom groups, clinicians only therapy groups.")
    gnames = {int(r.id): f"{r.name} ({r.kind})" for r in groups.itertuples()}
    unames = dict(zip(users["id"].astype(int), users["username"] + " (" + users["role"] + ")"))
    if gnames and unames:
        c1, c2, c3, c4 = st.columns([2, 2, 1, 1], vertical_alignment="bottom")
        uid = c1.selectbox("User", list(unames), format_func=unames.get, key="grant_user")
        gid = c2.selectbox("Group", list(gnames), format_func=gnames.get, key="grant_group")
        if c3.button("Grant", key="grant"):
            _do(data.admin_grant, uid, gid, True, ok=f"Granted {gnames[gid]} to {unames[uid]}.")
        if c4.button("Revoke", key="revoke"):
            _do(data.admin_grant, uid, gid, False, ok=f"Revoked {gnames[gid]} from {unames[uid]}.")

with sessions_tab:
    table = data.sessions_frame(url, None)
    st.dataframe(table.drop(columns=["job_id", "progress"]), hide_index=True, key="admin_sessions")
    if not table.empty:
        titles = dict(zip(table["id"].astype(int), table["title"]))
        c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        sid = c1.selectbox("Session", list(titles), format_func=lambda i: f"{titles[i]} (#{i})", key="del_session")
        sure = c2.checkbox("Delete its video record, timelines and tags", key="del_session_sure")
        if c3.button("Delete session", disabled=not sure, key="del_session_button"):
            _do(data.admin_delete_session, sid, ok=f"Session #{sid} deleted.")

with audit_tab:
    st.caption("Who exported, deleted or changed what, newest first. Entries are never edited or removed.")
    st.dataframe(data.audit_frame(url, viewer), hide_index=True, key="audit_table")
