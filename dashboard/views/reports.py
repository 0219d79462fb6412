"""Reports & exports: PDF reports of a session or a group, and exports of part of a session (audited)."""

from __future__ import annotations

from datetime import date, timedelta

import streamlit as st

from affectline.settings import get_settings
from dashboard import auth, data
from dashboard.safe import md_text
from services import bins, exports, group_reports, reports, summaries

settings = get_settings()
url = settings.resolved_database_url
viewer = auth.require_viewer()
auth.require(viewer, "export")

st.title("Reports & exports")
st.caption("Every report and export is recorded in the audit log with your name. The files are about children: "
           "keep them where only the people who need them can read them.")  # fmt: skip


def _prepare(key: str, fn, *args) -> None:
    """Build a file and keep it for the download button; one-line errors."""
    try:
        st.session_state[key] = fn(url, viewer, *args)
    except (LookupError, ValueError, PermissionError) as e:
        st.session_state.pop(key, None)
        st.error(md_text(e))
    else:
        data.invalidate()


def _download(key: str, button_key: str) -> None:
    if (out := st.session_state.get(key)) is not None:
        rows = f"{out.pages} pages" if hasattr(out, "pages") else f"{out.n_rows} rows"
        st.download_button(f"Download {md_text(out.file_name)} ({rows})", out.data, file_name=out.file_name, mime=out.mime,
                           key=button_key, type="primary")  # fmt: skip


table = data.sessions_frame(url, viewer.group_ids)
done = table[table["status"] == "done"] if not table.empty else table
session_tab, group_tab = st.tabs(["A session", "A group over time"])

with session_tab:
    if done.empty:
        st.info("No analysed session you can see yet.")
    else:
        titles = dict(zip(done["id"].astype(int), done["title"] + " · " + done["group"] + " · " + done["kind"]))
        wanted = st.query_params.get("session", "")
        ids = list(titles)
        sid = st.selectbox("Session", ids, index=ids.index(int(wanted)) if wanted.isdigit() and int(wanted) in ids else 0,
                           format_func=lambda i: f"{titles[i]} (#{i})", key="report_session")  # fmt: skip
        kind = done.set_index("id").loc[sid, "kind"]
        st.subheader("PDF report")
        st.caption("The class curve, the students x time heat map, the moments and the per-student table."
                   if kind == "classroom" else
                   "Timelines with the clinician's tags and uncertain spans, the models that produced them, and how often "
                   "and how long each behaviour was tagged, in this session and week over week.")  # fmt: skip
        if st.button("Prepare PDF report", key="report_button"):
            with st.spinner("Drawing the report..."):
                _prepare(f"report_{sid}", reports.session_report, sid)
        _download(f"report_{sid}", "report_download")

        st.subheader("Export part of the session")
        people = dict(bins.session_persons(url, viewer, sid))
        c1, c2, c3 = st.columns([1, 1, 3])
        t0_text = c1.text_input("From (mm:ss)", key="export_from", placeholder="start")
        t1_text = c2.text_input("To (mm:ss)", key="export_to", placeholder="end")
        chosen = c3.multiselect("Persons", list(people), format_func=people.get, key="export_persons",
                                placeholder="everyone")  # fmt: skip
        fmt = st.radio("Format", list(exports.FORMATS), horizontal=True, key="export_sel_format")
        try:
            sel = exports.Selection(summaries.parse_clock(t0_text) if t0_text.strip() else None,
                                    summaries.parse_clock(t1_text) if t1_text.strip() else None,
                                    tuple(int(p) for p in chosen) if chosen else None)  # fmt: skip
        except ValueError as e:
            st.error(md_text(e))
            sel = None
        c1, c2 = st.columns(2)
        if c1.button("Prepare timelines export", key="export_sel_button", disabled=sel is None,
                     help="One row per person per time bin, as the full export."):  # fmt: skip
            _prepare(f"export_sel_{sid}", exports.export_selection, sid, fmt, sel)
        if c2.button("Prepare per-person summary", key="export_sum_button", disabled=sel is None,
                     help="One row per person: mean engagement, minutes confused, fatigued, distracted, not visible."):  # fmt: skip
            _prepare(f"export_sum_{sid}", exports.export_summary, sid, fmt, sel)
        with c1:
            _download(f"export_sel_{sid}", "export_sel_download")
        with c2:
            _download(f"export_sum_{sid}", "export_sum_download")

with group_tab:
    groups = data.groups_frame(url, viewer.group_ids)
    if groups.empty:
        st.info("No group you can see yet.")
    else:
        gnames = {int(r.id): f"{r.name} ({r.kind})" for r in groups.itertuples()}
        gids = st.multiselect("Groups (one PDF, a part per group)", list(gnames), default=list(gnames)[:1],
                              format_func=gnames.get, key="report_groups")  # fmt: skip
        c1, c2 = st.columns(2)
        since = c1.date_input("From", value=date.today() - timedelta(days=30), key="report_since")
        until = c2.date_input("To (included)", value=date.today(), key="report_until")
        key = f"group_report_{'_'.join(map(str, gids))}_{since}_{until}"
        if st.button("Prepare group report", key="group_report_button", disabled=not gids):
            with st.spinner("Drawing the report..."):
                _prepare(key, group_reports.groups_report, gids, since, until)
        _download(key, "group_report_download")
        if settings.group_reports_every != "off":
            st.caption(md_text(f"Scheduled: every group's {settings.group_reports_every} report is also written by the "
                               "worker into the reports folder of the server (AFFECTLINE_GROUP_REPORTS_DIR)."))  # fmt: skip
