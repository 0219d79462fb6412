"""Consent & retention (administrators): the consent register, each group's policy, expiry now."""

from __future__ import annotations

from datetime import date, timedelta

import streamlit as st

from affectline.settings import get_settings
from dashboard import auth, confirm, data
from dashboard.safe import md_text
from services import columns, consent_csv, deletions, privacy

settings = get_settings()
url = settings.resolved_database_url
viewer = auth.require_viewer()
auth.require(viewer, "manage_privacy")

st.title("Consent & retention")
if flash := st.session_state.pop("privacy_flash", None):
    st.success(md_text(flash))
if warn := st.session_state.pop("privacy_warning", None):
    st.warning(md_text(warn))


def _do(fn, *args, ok, warn: str = "") -> None:
    """Run an audited change; show its error in one line, or remember the success (and a warning) and rerun."""
    try:
        out = fn(url, viewer, *args)
    except consent_csv.ConsentFileError as e:  # the file changed between the check and the import
        st.error(md_text(f"{e.name}: {len(e.problems)} problem(s); nothing was stored"))
        st.code("\n".join(p.line() for p in e.problems), language=None)
    except (ValueError, LookupError, PermissionError) as e:
        st.error(md_text(e))
    else:
        data.invalidate()  # timelines may have been deleted: no cached page may show them
        st.session_state["privacy_flash"] = ok(out) if callable(ok) else ok
        if warn:
            st.session_state["privacy_warning"] = warn
        st.rerun()


consent_tab, policy_tab = st.tabs(["Consent", "Groups: consent required, retention"])

with consent_tab:
    st.caption("In a group that requires consent, only persons with valid analysis consent get a per-person "
               "timeline; everyone else (and every face not enrolled) counts only toward the class curve. "
               "A recorded 'no' is honoured in every group. Withdrawing deletes the person's stored timelines, "
               "tracks, face embeddings, tags and thumbnails; it is recorded in the audit log.")  # fmt: skip
    table = privacy.consent_frame(privacy.consent_register(url, viewer))
    if table.empty:
        st.info("No enrolled persons yet: name a person on the People page first.")
    else:
        st.dataframe(table, hide_index=True, key="consent_table", column_config=columns.config(table.columns))
        names = dict(zip(table["person_id"].astype(int), table["person"] + " (" + table["group"] + ")"))
        st.subheader("Record consent")
        with st.form("grant_consent", clear_on_submit=True):
            c1, c2 = st.columns(2)
            pid = c1.selectbox("Person", list(names), format_func=names.get, key="grant_person")
            purpose = c2.radio("For", ["analysis", "thumbnails"], horizontal=True, key="grant_purpose")
            c1, c2 = st.columns(2)
            scope_text = c1.text_input("Scope (as on the signed form)", key="grant_scope")
            no_expiry = c2.checkbox("No expiry", value=True, key="grant_no_expiry")
            until = c2.date_input("Valid until", value=date.today() + timedelta(days=365), key="grant_until")
            if st.form_submit_button("Record consent"):
                _do(privacy.grant_consent, pid, purpose, scope_text, None if no_expiry else until,
                    ok=f"{purpose.capitalize()} consent recorded for {names.get(pid)}.")  # fmt: skip
        st.subheader("Withdraw consent")
        c1, c2, c4 = st.columns([3, 1, 1], vertical_alignment="bottom")
        wid = c1.selectbox("Person", list(names), format_func=names.get, key="withdraw_person")
        wpurpose = c2.radio("For", ["analysis", "thumbnails"], key="withdraw_purpose")

        def _withdraw() -> None:
            warn = privacy.withdrawal_warning(url, viewer, wid) if wpurpose == "analysis" else ""
            _do(privacy.withdraw_consent, wid, wpurpose, warn=warn,
                ok=lambda n: f"Consent withdrawn; deleted {deletions.counted(n)}.")

        confirm.ask("withdraw_button", "Withdraw", (wid, wpurpose),
                    lambda: deletions.withdrawal_impact(url, viewer, wid, wpurpose).sentence(), _withdraw, container=c4)

    st.subheader("Many forms at once: a spreadsheet (CSV)")
    st.caption("Columns: person_id (or group and person), purpose (analysis or thumbnails), answer (yes, no, or empty "
               "for no change), scope, expires (YYYY-MM-DD). The export below has the same columns: export, fill in, "
               "import. A file with any bad row is refused whole, with one line per bad row; a 'no' deletes what the "
               "consent covered. Imports and exports are in the audit log.")  # fmt: skip
    c1, c2 = st.columns(2)
    if c1.button("Prepare register export (CSV)", key="consent_export"):
        _csv, _n = consent_csv.export_csv(url, viewer)
        st.session_state["consent_csv"] = (_csv, _n)
    if (got := st.session_state.get("consent_csv")) is not None:
        c1.download_button(md_text(f"Download affectline_consent.csv ({got[1]} rows)"), got[0], mime="text/csv",
                           file_name=f"affectline_consent_{date.today()}.csv", key="consent_download")  # fmt: skip
    upload = c2.file_uploader("Import a filled-in file", type=["csv"], key="consent_upload")
    if upload is not None:
        raw = upload.getvalue()
        try:
            plan = consent_csv.preview(url, viewer, raw, upload.name)
        except consent_csv.ConsentFileError as e:
            st.error(md_text(f"{upload.name}: {len(e.problems)} problem(s); nothing will be stored:"))
            st.code("\n".join(p.line() for p in e.problems), language=None)
        except (ValueError, LookupError, PermissionError) as e:
            st.error(md_text(e))
        else:
            st.info(md_text(f"{upload.name}: {plan.sentence()}."))
            if st.button("Import these answers", key="consent_import", type="primary",
                         disabled=not (plan.grants or plan.refusals)):  # fmt: skip
                _do(lambda u, v: consent_csv.import_csv(u, v, raw, upload.name),
                    ok=lambda r: f"{upload.name} imported: {r.sentence()}.")  # fmt: skip

with policy_tab:
    rows = privacy.policies(url, viewer)
    st.dataframe(
        [{"Group": r.group, "Kind": r.kind, "Consent required": r.consent_required,
          "Keep sessions (days)": r.retention_days or "forever", "Sessions": r.sessions, "Expired now": r.expired}
         for r in rows],
        hide_index=True, key="policy_table",
    )  # fmt: skip
    groups = {r.group_id: r for r in rows}
    if groups:
        c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        gid = c1.selectbox("Group", list(groups), format_func=lambda i: groups[i].group, key="policy_group")
        req = c2.toggle("Consent required", value=groups[gid].consent_required, key=f"policy_required_{gid}")
        if c3.button("Save", key="policy_required_save"):
            _do(privacy.require_consent, gid, req,
                ok=f"{groups[gid].group}: consent {'required' if req else 'not required'}.")  # fmt: skip
        c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        forever = c1.checkbox("Keep sessions forever", value=groups[gid].retention_days is None, key=f"keep_{gid}")
        days = c2.number_input("Keep sessions (days)", min_value=1, max_value=36_500, step=1,
                               value=groups[gid].retention_days or 365, key=f"days_{gid}", disabled=forever)  # fmt: skip
        if c3.button("Save", key="policy_days_save"):
            _do(privacy.set_retention, gid, None if forever else int(days),
                ok=f"{groups[gid].group}: sessions kept {'forever' if forever else f'{int(days)} days'}.")  # fmt: skip
    st.subheader("Delete expired sessions now")
    st.caption("The worker's schedule does this every hour; expired sessions go with their timelines, tags, "
               "jobs and uploaded video, and can no longer be exported. Each deletion is in the audit log.")  # fmt: skip
    n = sum(r.expired for r in rows)
    confirm.ask("retention_run", f"Delete {n} expired session(s)", n,
                lambda: deletions.retention_impact(url, viewer, settings.data_dir).sentence(),
                lambda: _do(lambda u, v: privacy.run_retention(u, v, settings.data_dir),
                            ok=lambda r: f"Deleted {len(r.deleted)} session(s), {r.total_rows} rows, {len(r.files_removed)} file(s)."),
                disabled=n == 0)  # fmt: skip
