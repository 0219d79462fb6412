"""Sessions: what the viewer may see, live analysis progress, and upload + analyse."""

from __future__ import annotations

import streamlit as st

from affectline.settings import get_settings
from dashboard import auth, data
from storage.models import Role, SessionKind

settings = get_settings()
url = settings.resolved_database_url
viewer = auth.require_viewer()
auth.require(viewer, "view_sessions")

st.title("Sessions")
if flash := st.session_state.pop("flash", None):
    st.success(flash)


def _progress() -> None:
    """Queued and running analyses, re-read from their Job rows on every tick."""
    jobs = data.active_jobs(url, viewer.group_ids)
    before = st.session_state.get("active_job_ids", set())
    now = {j.id for _, j in jobs}
    st.session_state["active_job_ids"] = now
    if before - now:  # something finished: refresh the table outside this fragment too
        data.invalidate()
        st.rerun(scope="app")
    for title, job in jobs:
        st.progress(min(max(job.progress, 0.0), 1.0), text=f"**{title}**: {data.job_phrase(job)}")


has_active = bool(data.active_jobs(url, viewer.group_ids))
# Poll quickly while something runs; slowly otherwise, to notice work started elsewhere (CLI).
st.fragment(_progress, run_every=2 if has_active else 15)()

table = data.sessions_frame(url, viewer.group_ids)
if table.empty:
    st.info("No sessions you can see yet." + (" Upload a video below." if viewer.can("upload") else ""))
else:
    st.dataframe(
        table.drop(columns=["job_id"]),
        hide_index=True,
        column_config={
            "id": st.column_config.NumberColumn("id", width="small"),
            "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
            "duration_s": st.column_config.NumberColumn("duration (s)", format="%.0f"),
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "state": st.column_config.TextColumn("state", width="large"),
        },
        key="sessions_table",
    )
    failed = table[table["status"] == "failed"]
    for r in failed.itertuples():
        st.error(f"{r.title}: {r.state}")
    ids = table["id"].tolist()
    labels = dict(zip(table["id"], table["title"]))
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    chosen = c1.selectbox("Session to open", ids, format_func=lambda i: f"{labels[i]} (#{i})", key="open_session")
    if c2.button("Open session", key="open_button"):
        st.switch_page("views/session.py", query_params={"session": str(chosen)})

if viewer.can("upload"):
    st.subheader("Analyse a new video")
    kinds = [k.value for k in SessionKind]
    default_kind = {Role.teacher: "classroom", Role.clinician: "therapy"}.get(viewer.role, "classroom")
    kind = st.radio("Kind", kinds, index=kinds.index(default_kind), horizontal=True, key="upload_kind")
    groups = data.groups_frame(url, viewer.group_ids, kind)
    if groups.empty:
        st.warning(f"You have no {kind} group to upload into. An admin can create one and grant it to you.")
    else:
        gnames = dict(zip(groups["id"], groups["name"]))
        group_id = st.selectbox("Group", list(gnames), format_func=gnames.get, key="upload_group")
        video = st.file_uploader("Video", type=list(data.VIDEO_TYPES), key="upload_video")
        title = st.text_input("Title (optional)", key="upload_title")
        if st.button("Upload and analyse", type="primary", disabled=video is None, key="upload_button"):
            try:
                sid, jid = data.enqueue_analysis(url, settings, viewer, video.name, video, kind, int(group_id),
                                                 title.strip() or None)  # fmt: skip
            except (ValueError, LookupError, PermissionError, RuntimeError) as e:
                st.error(str(e))
            else:
                st.session_state["flash"] = f"Session #{sid} saved; analysis job #{jid} queued."
                st.rerun()
