"""Clinician review of therapy sessions: personalised labels ("uncertain" when unsure) and time-range tags."""

from __future__ import annotations

import streamlit as st

from affectline.settings import get_settings
from dashboard import auth, charts, data

settings = get_settings()
url = settings.resolved_database_url
viewer = auth.require_viewer()
auth.require(viewer, "review")

st.title("Review & tags")
table = data.sessions_frame(url, viewer.group_ids, "therapy")
table = table[table["persons"] > 0]
if table.empty:
    st.info("No analysed therapy sessions you can see yet.")
    st.stop()

labels = dict(zip(table["id"].astype(int), table["title"]))
sid = st.selectbox("Therapy session", list(labels), format_func=lambda i: f"{labels[i]} (#{i})", key="review_session")
info = data.session_info(url, viewer.group_ids, sid)
bins = data.session_bins(url, viewer.group_ids, sid)
persons = dict(data.persons_in(bins))
pid = st.selectbox("Person", list(persons), format_func=persons.get, key="review_person")
st.caption(charts.model_caption(info.academic_model, info.expression_model))

pbins = bins[bins["person_id"] == pid]
tags = data.list_tags(url, viewer, sid, pid)
if pbins["personal_label"].isna().all():
    st.info("No personalised model has scored this person yet: only the population expressions are shown.")
else:
    share = (pbins["personal_label"] == charts.UNCERTAIN).sum() / max(pbins["face_visible"].sum(), 1)
    st.caption(f"{share:.0%} of visible bins are 'uncertain': the model's confidence was below "
               f"{settings.uncertain_threshold:.2f}, so it does not guess.")  # fmt: skip
st.plotly_chart(charts.personal_figure(pbins, tags, persons[pid], info.bin_seconds), key="review_chart")

st.subheader("Tags")
if tags.empty:
    st.caption("No tags on this person in this session yet.")
else:
    st.dataframe(tags.drop(columns=["person_id"]), hide_index=True, key="tags_table")

if viewer.can("tag"):
    end = float(info.duration or (pbins["t_end"].max() if len(pbins) else 1.0))
    with st.form("add_tag", clear_on_submit=True):
        t0, t1 = st.slider("Time range (s)", 0.0, end, (0.0, min(end, 5.0)), step=float(info.bin_seconds))
        vocab = data.tag_vocabulary(url)
        label = st.selectbox("Label", vocab + ["other…"], key="tag_label")
        other = st.text_input("New clinic label (when 'other…' is chosen)", key="tag_other")
        note = st.text_area("Note", key="tag_note")
        if st.form_submit_button("Add tag"):
            try:
                chosen = data.add_tag_label(url, viewer, other) if label == "other…" else label
                data.add_tag(url, viewer, sid, pid, t0, t1, chosen, note)
            except (ValueError, LookupError, PermissionError) as e:
                st.error(str(e))
            else:
                st.rerun()
    if not tags.empty:
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        tag_text = {r.uid: f"{r.label} {r.t_start:.0f}-{r.t_end:.0f} s ({r.author})" for r in tags.itertuples()}
        uid = c1.selectbox("Tag", list(tag_text), format_func=tag_text.get, key="tag_to_delete")
        if c2.button("Delete tag", key="delete_tag"):
            data.delete_tag(url, viewer, sid, uid)
            st.rerun()
