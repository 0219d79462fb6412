"""One session: class engagement, one small multiple per person, model provenance, audited export."""

from __future__ import annotations

import streamlit as st

from affectline.settings import get_settings
from dashboard import auth, charts, data

settings = get_settings()
url = settings.resolved_database_url
viewer = auth.require_viewer()
auth.require(viewer, "view_sessions")

table = data.sessions_frame(url, viewer.group_ids)
if table.empty:
    st.title("Session view")
    st.info("No sessions you can see yet.")
    st.stop()

ids = [int(i) for i in table["id"]]
labels = dict(zip(ids, table["title"]))
wanted = st.query_params.get("session", "")
if wanted.isdigit() and int(wanted) in ids:  # a link (or the Open button) names the session
    st.session_state["session_id"] = int(wanted)
else:
    if wanted:  # hidden, deleted, or never existed: the same answer, so nothing leaks
        st.warning(f"Session {wanted} does not exist or is not visible to you.")
    if st.session_state.get("session_id") not in ids:
        st.session_state["session_id"] = ids[0]


def _sync_link() -> None:
    st.query_params["session"] = str(st.session_state["session_id"])


sid = st.sidebar.selectbox("Session", ids, format_func=lambda i: f"{labels[i]} (#{i})", key="session_id",
                           on_change=_sync_link)  # fmt: skip

info = data.session_info(url, viewer.group_ids, sid)
st.title(info.title)
duration = f"{info.duration:.0f} s" if info.duration else "duration unknown"
st.caption(f"{info.kind.value} session · group {info.group} · {duration} · {info.bin_seconds:g} s bins")

job = table.loc[table["id"] == sid].iloc[0]
if job["status"] in ("queued", "running"):

    @st.fragment(run_every=2)
    def _progress() -> None:
        state = data.job_state(url, viewer.group_ids, int(job["job_id"]))
        st.progress(min(max(state.progress, 0.0), 1.0) if state else 0.0, text=data.job_phrase(state))
        if state is not None and not state.active:
            data.invalidate()
            st.rerun(scope="app")

    _progress()
elif job["status"] == "failed":
    st.error(job["state"])

if not info.analysed:
    st.info("This session has not been analysed yet: no timelines to show.")
    st.stop()

st.info(charts.model_caption(info.academic_model, info.expression_model), icon=":material/science:")
bins = data.session_bins(url, viewer.group_ids, sid)
persons = data.persons_in(bins)
if not persons:
    st.warning("No faces were found in this recording: the session has no persons.")
    st.stop()

st.plotly_chart(charts.engagement_figure(data.class_engagement(bins), info.bin_seconds), key="engagement_chart")
st.caption("Engagement is the mean over the faces visible in each bin; grey bands mark bins with no visible face.")

st.subheader(f"Persons ({len(persons)})")
st.caption("Top: academic emotions (stacked, sum to 1) with engagement (black). Bottom: expression probabilities. "
           "Grey bands: face not visible, no estimate.")  # fmt: skip
cols = st.columns(2)
for i, (pid, label) in enumerate(persons):
    with cols[i % 2]:
        fig = charts.person_figure(bins[bins["person_id"] == pid], label, info.bin_seconds, show_legend=i == 0)
        st.plotly_chart(fig, key=f"person_chart_{pid}")

if viewer.can("export"):
    st.subheader("Export")
    st.caption("One row per person per time bin. Every export is recorded in the audit log with your name.")
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    fmt = c1.radio("Format", ["csv", "parquet"], horizontal=True, key="export_format")
    key = f"export_{sid}_{fmt}"
    if c2.button("Prepare export", key="export_button"):
        try:
            st.session_state[key] = data.export_session(url, viewer, sid, fmt)
        except (LookupError, PermissionError) as e:
            st.error(str(e))
    if (export := st.session_state.get(key)) is not None:
        st.download_button(f"Download {export.file_name} ({export.n_rows} rows)", export.data,
                           file_name=export.file_name, mime=export.mime, key="download_button")  # fmt: skip
