"""People of the viewer's groups: each unknown person's face (where consent and the group allow), the
frame at any moment; rename, enrol a track as a named person, delete (audited)."""

from __future__ import annotations

import streamlit as st

from affectline.settings import get_settings
from dashboard import actions, auth, confirm, data
from dashboard.safe import md_text
from services import columns, deletions, faces
from services import summaries as sm

settings = get_settings()
url = settings.resolved_database_url
viewer = auth.require_viewer()
auth.require(viewer, "manage_people")

st.title("People")
if flash := st.session_state.pop("people_flash", None):
    st.success(md_text(flash))
persons = data.persons_frame(url, viewer.group_ids)
if persons.empty:
    st.info("No persons in your groups yet: they appear when a session is analysed.")
else:
    st.dataframe(persons.drop(columns=["group_id"]), hide_index=True, key="persons_table",
                 column_config=columns.config(persons.columns))
st.caption("'Unknown N' persons were found by an analysis and not yet named; enrolled persons are recognised "
           "again in later sessions of the same group. No face images are stored unless the "
           "store_thumbnails setting is on: faces below are cut from the session's review copy when shown.")  # fmt: skip

unknown = faces.unknown_faces(url, settings.data_dir, viewer, limit=24)
if unknown:
    st.subheader("Unknown faces (newest first, at most 24)")
    st.caption("Each face is shown only where its group allows video review (or thumbnails are kept) and the "
               "person's thumbnails consent allows it; otherwise the reason is given.")  # fmt: skip
    cols = st.columns(4)
    for i, f in enumerate(unknown):
        box = cols[i % 4]
        when = f" at {sm.format_clock(f.t)} of session #{f.session_id}" if f.t is not None else ""
        if f.shown:
            box.image(f.jpeg, caption=md_text(f"{f.label}{when}"), width=120)
        else:
            box.markdown(f"**{md_text(f.label)}**")
            box.caption(md_text(f.reason))

names = dict(zip(persons["id"].astype(int), persons["label"] + " (" + persons["group"].fillna("-") + ")"))

if names:
    st.subheader("Rename")
    st.caption("Naming an 'Unknown N' person enrols them: they keep the name when the session is re-analysed "
               "and are recognised in later sessions of the group.")  # fmt: skip
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    pid = c1.selectbox("Person", list(names), format_func=names.get, key="rename_person")
    new = c2.text_input("New name", key="rename_label")
    if c3.button("Rename", key="rename_button"):
        try:
            actions.rename_person(url, viewer, pid, new)
        except (ValueError, LookupError, PermissionError) as e:
            st.error(md_text(e))
        else:
            st.session_state["people_flash"] = f"Renamed to {new.strip()}."
            st.rerun()

st.subheader("Enrol a track as a named person")
sessions = data.sessions_frame(url, viewer.group_ids)
sessions = sessions[sessions["persons"] > 0]
if sessions.empty:
    st.caption("No analysed sessions to enrol from.")
else:
    titles = dict(zip(sessions["id"].astype(int), sessions["title"]))
    sid = st.selectbox("Session", list(titles), format_func=lambda i: f"{titles[i]} (#{i})", key="enrol_session")
    tracks = data.session_tracks(url, viewer.group_ids, sid)
    info = data.session_info(url, viewer.group_ids, sid)
    at = st.slider("See the frame at (s)", 0.0, max(float(info.duration or 0.0), 0.1), 0.0, 0.5, key="frame_at")
    try:
        st.image(faces.frame_at(url, settings.data_dir, viewer, sid, at), caption=md_text(f"{sm.format_clock(at)}"))
    except LookupError:
        st.caption("No review copy of this session may be shown (video review is off for its group, or none was "
                   "written): no frame to show.")  # fmt: skip
    tlabel = {int(r.id): f"track {r.track_key}: {r.person} ({r.t_start:.0f}-{r.t_end:.0f} s)" for r in tracks.itertuples()}
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    tid = c1.selectbox("Track", list(tlabel), format_func=tlabel.get, key="enrol_track")
    name = c2.text_input("Name", key="enrol_name")
    if c3.button("Enrol", key="enrol_button", disabled=tid is None):
        try:
            actions.enroll_track(url, viewer, sid, tid, name)
        except (ValueError, LookupError, PermissionError) as e:
            st.error(md_text(e))
        else:
            st.session_state["people_flash"] = f"Enrolled {name.strip()}."
            st.rerun()

if len(names) > 1 and viewer.can("merge_people"):
    st.subheader("Merge two persons")
    st.caption("When one person was found as two: the second one's tracks, timelines and tags move to the first.")
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    keep = c1.selectbox("Keep", list(names), format_func=names.get, key="merge_keep")
    group_of = dict(zip(persons["id"].astype(int), persons["group_id"]))
    same = [i for i in names if i != keep and group_of[i] == group_of[keep]]  # only one group's persons merge
    other = c2.selectbox("Merge this one into it", same, format_func=names.get, key="merge_other")
    if c3.button("Merge", key="merge_button", disabled=other is None):
        try:
            actions.merge_persons(url, viewer, keep, other)
        except (ValueError, LookupError, PermissionError) as e:
            st.error(md_text(e))
        else:
            st.session_state["people_flash"] = f"Merged into {names[keep]}."
            st.rerun()

if names and viewer.can("delete_person"):
    st.subheader("Delete a person")
    st.caption("Deletes the person with their face embeddings and all their timelines. Recorded in the audit log.")
    c1, c3 = st.columns([4, 1], vertical_alignment="bottom")
    pid = c1.selectbox("Person", list(names), format_func=names.get, key="delete_person")

    def _delete_person() -> None:
        try:
            actions.delete_person(url, viewer, pid)
        except (LookupError, PermissionError) as e:
            st.error(md_text(e))
        else:
            st.session_state["people_flash"] = "Person deleted."
            st.rerun()

    confirm.ask("delete_button", "Delete", pid, lambda: deletions.person_impact(url, viewer, pid).sentence(),
                _delete_person, container=c3)  # fmt: skip
