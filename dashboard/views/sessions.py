"""Sessions: what the viewer may see, live analysis progress, and upload + analyse."""

from __future__ import annotations

import streamlit as st

from affectline.settings import get_settings
from dashboard import actions, auth, data, jobs_view
from dashboard.safe import md_text
from services import columns, progress
from affectline.kinds import ROLE_KIND, SessionKind

settings = get_settings()
url = settings.resolved_database_url
viewer = auth.require_viewer()
auth.require(viewer, "view_sessions")

# "Open session" clicked: go at once. Building this page first (its queries, its table, its progress
# fragment) only to leave it cost the session page about 0.3 s of server time and a redraw of this list.
if st.session_state.get("open_button") and st.session_state.get("open_session") is not None:
    st.switch_page("views/session.py", query_params={"session": str(st.session_state["open_session"])})

st.title("Sessions")
if flash := st.session_state.pop("flash", None):
    st.success(md_text(flash))


def _progress() -> None:
    """Queued and running analyses, re-read from their Job (and chunk) rows on every tick."""
    jobs = progress.active_jobs(url, viewer)
    before = st.session_state.get("active_job_ids", set())
    now = {j.id for j in jobs}
    st.session_state["active_job_ids"] = now
    if before - now:  # something finished: refresh the table outside this fragment too
        data.invalidate()
        st.rerun(scope="app")
    for job in jobs:
        jobs_view.show_job(job)


has_active = bool(progress.active_jobs(url, viewer))
# Poll quickly while something runs; slowly otherwise, to notice work started elsewhere (CLI).
st.fragment(_progress, run_every=2 if has_active else 15)()

table = data.sessions_frame(url, viewer.group_ids)
if table.empty:
    st.info("No sessions you can see yet." + (" Upload a video below." if viewer.can("upload") else ""))
else:
    st.dataframe(
        table.drop(columns=["job_id"]),
        hide_index=True,
        column_config=columns.config(
            table.columns,
            id=st.column_config.NumberColumn(width="small"),
            created=st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
            duration_s=st.column_config.NumberColumn(format="%.0f"),
            progress=st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="percent"),
            state=st.column_config.TextColumn(width="large"),
        ),
        key="sessions_table",
    )
    failed = table[table["status"] == "failed"]
    for r in failed.itertuples():
        st.error(f"{md_text(r.title)}: {md_text(r.state)}")
    ids = table["id"].tolist()
    labels = dict(zip(table["id"], table["title"]))
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    ready = table.index[(table["status"] == "done") & (table["persons"] > 0)]  # a failed or empty one is never the default
    first = int(table.index.get_loc(ready[0])) if len(ready) else 0
    chosen = c1.selectbox("Session to open", ids, index=first, format_func=lambda i: f"{labels[i]} (#{i})",
                          key="open_session")  # fmt: skip
    if c2.button("Open session", key="open_button"):
        st.switch_page("views/session.py", query_params={"session": str(chosen)})

if viewer.can("upload"):
    st.subheader("Analyse a new video")
    st.caption("Choose the kind of session, the group it belongs to and how many frames a second to analyse: "
               "nothing is picked for you.")  # fmt: skip
    own_kind = ROLE_KIND.get(viewer.role)
    kinds = [k.value for k in SessionKind] if own_kind is None else [own_kind.value]
    kind = st.radio("Kind", kinds, index=None if len(kinds) > 1 else 0, horizontal=True, key="upload_kind",
                    captions=["a class (teacher)" if k == "classroom" else "one child (clinician)" for k in kinds])  # fmt: skip
    groups = data.groups_frame(url, viewer.group_ids, kind) if kind else None
    if kind is None:
        st.info("Choose the kind of session first.")
    elif groups.empty:
        st.warning(f"You have no {kind} group to upload into. An admin can create one and grant it to you.")
    else:
        gnames = dict(zip(groups["id"].astype(int), groups["name"]))
        group_id = st.selectbox("Group", list(gnames), index=None, format_func=gnames.get, key="upload_group",
                                placeholder=f"Choose a {'class' if kind == 'classroom' else 'caseload'}")  # fmt: skip
        fps = st.number_input("Analysis frames per second", min_value=1.0 / settings.bin_seconds, max_value=30.0,
                              value=float(settings.analysis_fps), step=0.5, key="upload_fps",
                              help="More frames: finer timelines and a slower analysis. "
                                   f"The server's default is {settings.analysis_fps:g}.")  # fmt: skip
        video = st.file_uploader("Video", type=list(data.VIDEO_TYPES), key="upload_video")
        title = st.text_input("Title (optional)", key="upload_title")
        missing = [w for w, v in (("a group", group_id), ("a video", video)) if v is None]
        if missing:
            st.caption("To start, choose " + " and ".join(missing) + ".")
        if st.button("Upload and analyse", type="primary", disabled=bool(missing), key="upload_button"):
            try:
                sid, jid = actions.enqueue_analysis(url, settings, viewer, video.name, video, kind, int(group_id),
                                                 title.strip() or None, analysis_fps=float(fps))  # fmt: skip
            except (ValueError, LookupError, PermissionError, RuntimeError) as e:
                st.error(md_text(e))
            else:
                st.session_state["flash"] = (f"Session #{sid} saved in {gnames[int(group_id)]}; analysis job #{jid} "
                                             f"queued at {fps:g} frames a second.")  # fmt: skip
                st.rerun()
