"""Admin: users (create, disable, re-enable, role, password), grants that take effect, sessions, the audit log."""

from __future__ import annotations

from datetime import date

import streamlit as st

from affectline.settings import get_settings
from dashboard import actions, auth, confirm, data
from dashboard.safe import md_text
from services import admin, audit_text, columns, deletions
from affectline.kinds import Role, SessionKind

settings = get_settings()
url = settings.resolved_database_url
viewer = auth.require_viewer()
auth.require(viewer, "manage_users")

st.title("Admin")
if flash := st.session_state.pop("admin_flash", None):
    st.success(md_text(flash))
if warn := st.session_state.pop("admin_warn", None):
    st.warning(md_text(warn))


def _do(fn, *args, ok: str) -> object:
    """Run an admin write; show its error in one line, or remember the success message and rerun."""
    try:
        out = fn(url, viewer, *args)
    except (ValueError, LookupError, PermissionError, RuntimeError) as e:
        st.error(md_text(e))
        return None
    data.invalidate()
    st.session_state["admin_flash"] = ok
    if isinstance(out, list) and out:  # set_role: grants the new role leaves without effect
        st.session_state["admin_warn"] = f"These grants no longer take effect under the new role: {', '.join(out)}."
    st.rerun()


users_tab, groups_tab, sessions_tab, audit_tab = st.tabs(["Users", "Groups & grants", "Sessions", "Audit log"])
roles = [r.value for r in Role]

with users_tab:
    users = admin.users(url, viewer)
    st.dataframe(users, hide_index=True, key="users_table",
                 column_config=columns.config(users.columns, can_log_in=st.column_config.CheckboxColumn(),
                                              disabled=st.column_config.CheckboxColumn()))  # fmt: skip
    with st.form("new_user", clear_on_submit=True):
        st.markdown("**New user**")
        c1, c2, c3 = st.columns(3)
        name = c1.text_input("Username")
        role = c2.selectbox("Role", roles)
        pw = c3.text_input("Password (empty: cannot log in yet)", type="password")
        if st.form_submit_button("Create user"):
            _do(admin.create_user, name, role, pw or None, ok=f"User {name.strip()} created.")
    unames = dict(zip(users["id"].astype(int), users["username"]))
    if unames:
        st.markdown("**Change a user**")
        uid = st.selectbox("User", list(unames), format_func=unames.get, key="edit_user")
        row = users.set_index("id").loc[uid]
        c1, c3 = st.columns([4, 1], vertical_alignment="bottom")
        new_role = c1.selectbox("Role", roles, index=roles.index(row["role"]), key="edit_role")
        if c3.button("Set role", key="set_role"):
            _do(admin.set_role, uid, new_role, ok=f"{unames[uid]} is now {new_role}.")
        c1, c3 = st.columns([4, 1], vertical_alignment="bottom")
        new_pw = c1.text_input("New password (empty: remove it)", type="password", key="edit_password")
        if c3.button("Set password", key="set_password"):
            _do(admin.set_password, uid, new_pw or None, ok=f"Password of {unames[uid]} updated.")
        if row["disabled"]:
            st.caption(f"{md_text(unames[uid])} is disabled: they cannot log in.")
            if st.button("Re-enable user", key="enable_user"):
                _do(admin.set_disabled, uid, False, ok=f"{unames[uid]} is enabled again.")
        elif st.button("Disable user", key="disable_user", help="No login; an open dashboard ends on its next click."):
            _do(admin.set_disabled, uid, True, ok=f"{unames[uid]} is disabled.")

with groups_tab:
    groups = data.groups_frame(url, None)
    st.dataframe(groups, hide_index=True, key="groups_table", column_config=columns.config(groups.columns))
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    gname = c1.text_input("New group (a class or a child's caseload)", key="new_group")
    gkind = c2.selectbox("Kind", [k.value for k in SessionKind], key="new_group_kind")
    if c3.button("Create group", key="create_group"):
        _do(actions.admin_create_group, gname, gkind, ok=f"Group {gname.strip()} created.")

    st.markdown("**Grants**: a teacher sees only classroom groups, a clinician only therapy groups; "
                "an administrator sees every group without a grant.")  # fmt: skip
    table = admin.grants(url, viewer)
    st.dataframe(table.drop(columns=["user_id", "group_id"]), hide_index=True, key="grants_table",
                 column_config=columns.config(table.columns, in_effect=st.column_config.CheckboxColumn()))  # fmt: skip
    stale = table[~table["in_effect"].astype(bool)]
    if not stale.empty:
        st.warning("Some grants have no effect under the user's current role (the role changed after the grant): "
                   + md_text(", ".join(f"{r.group} to {r.username}" for r in stale.itertuples())) + ".")  # fmt: skip
    grantees = users[users["role"] != Role.admin.value]
    if grantees.empty or groups.empty:
        st.info("Create a teacher or clinician and a group to grant.")
    else:
        gnames = dict(zip(grantees["id"].astype(int), grantees["username"] + " (" + grantees["role"] + ")"))
        c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        guid = c1.selectbox("User", list(gnames), format_func=gnames.get, key="grant_user")
        grole = Role(grantees.set_index("id").loc[guid, "role"])
        fitting = groups[groups["kind"].map(lambda k: admin.grant_problem(grole, k) is None)]
        options = {int(r.id): f"{r.name} ({r.kind})" for r in fitting.itertuples()}
        gid = c2.selectbox("Group", list(options), format_func=options.get, key="grant_group",
                           placeholder=f"no {grole.value} group yet", help="Only groups this role can see are listed.")  # fmt: skip
        if c3.button("Grant", key="grant", disabled=gid is None):
            _do(admin.grant, guid, gid, ok=f"Granted {options[gid]} to {gnames[guid]}.")
        mine = table[table["user_id"] == guid]
        if not mine.empty:
            held = dict(zip(mine["group_id"].astype(int), mine["group"]))
            c1, c3 = st.columns([4, 1], vertical_alignment="bottom")
            rid = c1.selectbox("Granted group", list(held), format_func=held.get, key="revoke_group")
            confirm.ask("revoke", "Revoke", (guid, rid), lambda: admin.revoke_impact(url, viewer, guid, rid),
                        lambda: _do(admin.revoke, guid, rid, ok=f"Revoked {held[rid]} from {gnames[guid]}."),
                        container=c3, yes="Yes, revoke")  # fmt: skip

with sessions_tab:
    table = data.sessions_frame(url, None)
    st.dataframe(table.drop(columns=["job_id", "progress"]), hide_index=True, key="admin_sessions",
                 column_config=columns.config(table.columns))
    if not table.empty:
        titles = dict(zip(table["id"].astype(int), table["title"]))
        c1, c3 = st.columns([4, 1], vertical_alignment="bottom")
        sid = c1.selectbox("Session", list(titles), format_func=lambda i: f"{titles[i]} (#{i})", key="del_session")
        confirm.ask("del_session_button", "Delete session", sid, lambda: deletions.session_impact(url, viewer, sid).sentence(),
                    lambda: _do(actions.admin_delete_session, sid, ok=f"Session #{sid} deleted."), container=c3)  # fmt: skip

with audit_tab:
    st.caption("Who exported, deleted or changed what, newest first. Entries are never edited or removed.")
    c1, c2, c3 = st.columns(3)
    f_actor = c1.text_input("User", key="audit_actor", placeholder="any")
    f_action = c2.selectbox("Action", admin.audit_actions(url, viewer), index=None, key="audit_action",
                            placeholder="any")  # fmt: skip
    f_target = c3.text_input("Target (id like session:3, or a name)", key="audit_target", placeholder="any")
    c1, c2, c3 = st.columns(3)
    f_since = c1.date_input("From", value=None, key="audit_since")
    f_until = c2.date_input("To", value=None, key="audit_until")
    f_limit = c3.number_input("At most", min_value=10, max_value=100_000, value=1000, step=100, key="audit_limit")
    filt = admin.AuditFilter(f_actor or None, f_action, f_target or None, f_since, f_until, int(f_limit))
    log = admin.audit_log(url, viewer, filt)
    st.caption(f"{len(log)} {'entry' if len(log) == 1 else 'entries'}" + (" (limit reached)" if len(log) >= filt.limit else ""))
    st.dataframe(audit_text.readable(log, audit_text.zone(settings.timezone)), hide_index=True, key="audit_table",
                 column_config=columns.config(["id", "at", "actor", "what", "action", "target", "target_label"]))
    if st.button("Prepare audit export (CSV)", key="audit_export"):
        st.session_state["audit_csv"] = admin.export_audit(url, viewer, filt)
    if (csv := st.session_state.get("audit_csv")) is not None:
        st.download_button("Download affectline_audit.csv", csv, file_name=f"affectline_audit_{date.today()}.csv",
                           mime="text/csv", key="audit_download")  # fmt: skip
