"""A clinician's view of one child's therapy session: timelines with uncertain spans shaded and the cues
behind each estimate on hover, tags on every chart; tagging by brushing the chart or typing mm:ss,
editing and deleting tags, baseline ranges; personalising the child, activating and rolling back
model versions (work queued by task name, progress shown here); the therapy export.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from affectline.settings import get_settings
from dashboard import auth, charts, confirm, data, safe
from dashboard.safe import md_text
from services import clinic, columns, deletions, exports
from services import summaries as sm

settings = get_settings()
url = settings.resolved_database_url
viewer = auth.require_viewer()
auth.require(viewer, "review")
gids = viewer.group_ids

st.title("Child session review")
table = data.sessions_frame(url, gids, "therapy")
table = table[table["persons"] > 0]
if table.empty:
    st.info("No analysed therapy sessions you can see yet.")
    st.stop()

labels = dict(zip(table["id"].astype(int), table["title"]))
wanted = st.query_params.get("session", "")
if wanted.isdigit() and int(wanted) in labels and "review_session" not in st.session_state:
    st.session_state["review_session"] = int(wanted)
c1, c2 = st.columns(2)
sid = c1.selectbox("Therapy session", list(labels), format_func=lambda i: f"{labels[i]} (#{i})", key="review_session")
info = data.session_info(url, gids, sid)
persons = dict(data.session_persons(url, gids, sid))
pid = c2.selectbox("Child", list(persons), format_func=persons.get, key="review_person")
if pid is None:
    st.info("Nobody was seen in this session.")
    st.stop()
st.caption(md_text(charts.model_caption(info.academic_model, info.expression_model)) + " Hover the expression row to see the "
           "cue model's inputs (blendshapes, head pose): the academic estimate is an interpretable rule over them.")  # fmt: skip
st.caption(charts.accuracy_caption(info.expression_model))

CUE_DOC = Path(__file__).resolve().parents[2] / "docs" / "cue_model.md"
if "cue" in (info.academic_model or "") and CUE_DOC.is_file():
    with st.expander("How the cue model decides (every rule and threshold)"):
        st.markdown(CUE_DOC.read_text())

bins = data.child_bins(url, gids, sid, pid)
cues = data.child_cues(url, gids, sid, pid)
tags = data.list_tags(url, viewer, sid, pid)
step = info.bin_seconds
full = (0.0, float(max(info.duration or 0.0, (bins["t_end"].max() if len(bins) else step))))

# --- the view range (zoom) and the tag range (brush) ------------------------------------------
VIEW = f"review_view_{sid}_{pid}"
view = st.session_state.get(VIEW, full)
if bins["personal_label"].isna().all():
    st.info("No personalised model has scored this child yet: the label row is empty; expressions and academic "
            "emotions are the population models'.")  # fmt: skip
else:
    vis = bins["face_visible"].astype(bool)
    share = (bins.loc[vis, "personal_label"] == charts.UNCERTAIN).mean() if vis.any() else 0.0
    unread = sm.unreadable(bins).mean() / max(vis.mean(), 1e-9) if vis.any() else 0.0
    st.caption(f"{share:.0%} of visible bins are 'uncertain' (grey): the model's confidence was below "
               f"{settings.uncertain_threshold:.2f}, so it does not guess; {unread:.0%} are 'not readable' (violet): "
               "no label is given for them.")  # fmt: skip

t0, t1 = view
inside = bins[(bins["t_start"] >= t0) & (bins["t_start"] < t1)]
value_cols = ["engagement", *sm.ACADEMIC, *charts.EXPRESSION_COLUMNS, "personal_confidence"]
frame = inside[["t_start", *value_cols]].copy()
frame.loc[~inside["face_visible"].astype(bool), value_cols] = float("nan")
frame["not_readable"] = sm.unreadable(inside).astype(float)
series = sm.resample(frame, t0, t1, 900, step)
cue_series = sm.resample(cues[(cues["t_start"] >= t0) & (cues["t_start"] < t1)], t0, t1, 900, step) if len(cues) else None
runs = charts.label_runs(inside, step)
fig = charts.child_figure(series, runs, tags, persons[pid], (t0, t1), full[1], cues=cue_series)
event = st.plotly_chart(safe.figure(fig), key=f"child_chart_{sid}_{pid}", on_select="rerun", selection_mode="box",
                        config={"displaylogo": False})  # fmt: skip
st.caption("Yellow: tags; green: baseline ranges; grey bands: face not visible or the model uncertain; violet: face "
           "visible but not readable (too small, turned away or blurred: no expression given). Drag across the chart "
           "to pick a range for a tag.")  # fmt: skip

boxes = (event or {}).get("selection", {}).get("box", []) if event else []
if boxes and len(boxes[0].get("x", [])) == 2:
    brush = tuple(sorted(charts.axis_seconds(x) for x in boxes[0]["x"]))
    if st.session_state.get("review_brush") != (sid, pid, brush):  # a brush fills the range once
        st.session_state["review_brush"] = (sid, pid, brush)
        st.session_state["tag_from"] = sm.format_clock(max(full[0], brush[0]))
        st.session_state["tag_to"] = sm.format_clock(min(full[1], brush[1]))


def _zoom(a: float, b: float) -> None:
    st.session_state[VIEW] = (max(full[0], a), min(full[1], b))


def _range_or(default: tuple[float, float]) -> tuple[float, float]:
    try:
        a, b = sm.parse_clock(st.session_state.get("tag_from", "")), sm.parse_clock(st.session_state.get("tag_to", ""))
        return (a, b) if b > a else default
    except ValueError:
        return default


def _zoom_to_tag_range() -> None:
    _zoom(*_range_or(full))


z1, z2, z3 = st.columns([1, 1, 3])
z1.button("Zoom to the range below", key="review_zoom", on_click=_zoom_to_tag_range)
z2.button("Whole session", key="review_whole", on_click=_zoom, args=full, disabled=view == full)


# --- add a tag ---------------------------------------------------------------------------------
if viewer.can("tag"):
    st.subheader("Tag a range")
    st.session_state.setdefault("tag_from", "00:00")
    st.session_state.setdefault("tag_to", sm.format_clock(min(full[1], 5.0)))
    a, b, c, d = st.columns([1, 1, 2, 1], vertical_alignment="bottom")
    a.text_input("From (mm:ss)", key="tag_from")
    b.text_input("To (mm:ss)", key="tag_to")
    vocab = data.tag_vocabulary(url)
    label = c.selectbox("Label", vocab + ["other…"], key="tag_label")
    baseline = d.checkbox("Baseline range", key="tag_baseline",
                          help="A calm stretch of this child, used to calibrate the model to them.")
    other = st.text_input("New clinic label (when 'other…' is chosen)", key="tag_other")
    note = st.text_area("Note", key="tag_note", height=68)
    if st.button("Add tag", key="add_tag", type="primary"):
        try:
            ts, te = sm.parse_clock(st.session_state["tag_from"]), sm.parse_clock(st.session_state["tag_to"])
            if te <= ts:
                raise ValueError(f"the tag ends ({sm.format_clock(te)}) before it starts ({sm.format_clock(ts)})")
            chosen = data.add_tag_label(url, viewer, other) if label == "other…" else label
            data.add_tag(url, viewer, sid, pid, ts, te, chosen, note, is_baseline=baseline)
        except (ValueError, LookupError, PermissionError) as e:
            st.error(md_text(e))
        else:
            st.session_state["review_flash"] = f"Tagged {sm.format_clock(ts)}-{sm.format_clock(te)} as {chosen}."
            st.rerun()
if flash := st.session_state.pop("review_flash", None):
    st.success(md_text(flash))

# --- the tags, edit and delete ---------------------------------------------------------------
st.subheader(f"Tags ({len(tags)})")
if tags.empty:
    st.caption("No tags on this child in this session yet.")
else:
    shown = tags.assign(start=tags["t_start"].map(sm.format_clock), end=tags["t_end"].map(sm.format_clock))
    st.dataframe(shown[["start", "end", "label", "is_baseline", "note", "author", "created_at"]], hide_index=True,
                 key="tags_table", column_config=columns.config(shown.columns, label={"label": "Label"}))  # fmt: skip
    if viewer.can("tag"):
        text = {r.uid: f"{r.label} {sm.format_clock(r.t_start)}-{sm.format_clock(r.t_end)} ({r.author})"
                for r in tags.itertuples()}  # fmt: skip
        uid = st.selectbox("Tag to change", list(text), format_func=text.get, key="tag_pick")
        row = tags.set_index("uid").loc[uid]
        if st.session_state.get("edit_uid") != uid:  # the edit fields follow the picked tag
            st.session_state.update(edit_uid=uid, edit_from=sm.format_clock(row.t_start), edit_to=sm.format_clock(row.t_end),
                                    edit_note=row.note or "", edit_baseline=bool(row.is_baseline),
                                    edit_label=row.label if row.label in vocab else vocab[0])  # fmt: skip
        a, b, c, d = st.columns([1, 1, 2, 1], vertical_alignment="bottom")
        a.text_input("From", key="edit_from")
        b.text_input("To", key="edit_to")
        c.selectbox("Label", vocab, key="edit_label")
        d.checkbox("Baseline", key="edit_baseline")
        st.text_input("Note", key="edit_note")
        e1, e2, _ = st.columns([1, 1, 4])
        if e1.button("Save changes", key="edit_tag"):
            try:
                ts, te = sm.parse_clock(st.session_state["edit_from"]), sm.parse_clock(st.session_state["edit_to"])
                if te <= ts:
                    raise ValueError(f"the tag ends ({sm.format_clock(te)}) before it starts ({sm.format_clock(ts)})")
                data.edit_tag(url, viewer, sid, uid, t_start=ts, t_end=te, label=st.session_state["edit_label"],
                              note=st.session_state["edit_note"], is_baseline=st.session_state["edit_baseline"])  # fmt: skip
            except (ValueError, LookupError, PermissionError) as e:
                st.error(md_text(e))
            else:
                st.session_state.pop("edit_uid", None)
                st.rerun()
        def _delete_tag() -> None:
            data.delete_tag(url, viewer, sid, uid)
            st.session_state.pop("edit_uid", None)
            st.rerun()

        confirm.ask("delete_tag", "Delete tag", uid, lambda: deletions.tag_impact(url, viewer, sid, uid).sentence(),
                    _delete_tag, container=e2)  # fmt: skip

# --- personalise this child --------------------------------------------------------------------
st.subheader("Personalise this child")
st.caption("Fits a model to this child from their tags (baseline ranges calibrate it) and compares it with the "
           "population model on the same cross-validation folds. It runs in the analysis worker; progress shows here.")  # fmt: skip
models = clinic.models_frame(url, viewer, pid)


def _jobs() -> None:
    jobs = clinic.person_jobs(url, viewer, pid)
    for j in jobs[:3]:
        if j.active:
            st.progress(min(max(j.progress, 0.0), 1.0), text=md_text(j.phrase()))
        elif j.status.value == "failed":
            st.error(md_text(j.phrase()))
        else:
            st.caption(md_text(j.phrase()))
    was = st.session_state.get(f"jobs_active_{pid}", False)
    now = any(j.active for j in jobs)
    st.session_state[f"jobs_active_{pid}"] = now
    if was and not now:  # finished: the labels and versions changed
        data.invalidate()
        st.rerun(scope="app")


# Poll while a job runs (or was just queued); otherwise draw once.
polling = st.session_state.get(f"jobs_active_{pid}") or any(j.active for j in clinic.person_jobs(url, viewer, pid))
st.fragment(_jobs, run_every=2 if polling else None)()
if viewer.can("tag"):
    p1, p2 = st.columns([2, 1], vertical_alignment="bottom")
    policy = p1.radio("Activate the new model", ["if not worse than the population model", "always", "never"],
                      horizontal=True, key="personalise_policy")  # fmt: skip
    if p2.button("Personalise this child", key="personalise", type="primary"):
        activate = {"always": True, "never": False}.get(policy)
        try:
            jid = clinic.request_personalisation(url, settings, viewer, pid, activate)
        except (LookupError, PermissionError, RuntimeError) as e:
            st.error(md_text(e))
        else:
            st.session_state[f"jobs_active_{pid}"] = True
            st.session_state["review_flash"] = f"Personalisation job #{jid} queued."
            st.rerun()
if models.empty:
    st.caption("No personal model yet: the population model labels this child.")
else:
    st.markdown("**Population vs personal** (cross-validated macro-F1 on the child's tagged bins, newest first)")
    st.dataframe(models, hide_index=True, key="models_table",
                 column_config={c: st.column_config.NumberColumn(c.replace("_", " "), format="%.2f")
                                for c in ("personal_f1", "population_f1", "calibrated_f1", "personal_coverage")})  # fmt: skip
    if viewer.can("tag"):
        active = models.loc[models["active"], "version"]
        m1, m2, m3 = st.columns([2, 1, 1], vertical_alignment="bottom")
        version = m1.selectbox("Version", models["version"].tolist(), key="model_version",
                               format_func=lambda v: f"v{v}" + (" (active)" if v in set(active) else ""))  # fmt: skip
        try:
            if m2.button("Activate", key="model_activate", disabled=version in set(active)):
                clinic.activate_version(url, settings, viewer, pid, int(version))
                st.session_state[f"jobs_active_{pid}"] = True
                st.rerun()
            if m3.button("Roll back", key="model_rollback", disabled=active.empty or int(active.iloc[0]) == models["version"].min()):
                v, _ = clinic.rollback(url, settings, viewer, pid)
                st.session_state["review_flash"] = f"Rolled back to v{v}; re-scoring queued."
                st.session_state[f"jobs_active_{pid}"] = True
                st.rerun()
        except (LookupError, PermissionError, RuntimeError, ValueError) as e:
            st.error(md_text(e))

# --- export ------------------------------------------------------------------------------------
if viewer.can("export"):
    st.subheader("Export this child's session")
    st.caption("One row per bin: personalised label, confidence, the model version that gave it, tags and baseline "
               "ranges, expressions and academic emotions. Recorded in the audit log with your name.")  # fmt: skip
    x1, x2 = st.columns([1, 3], vertical_alignment="bottom")
    fmt = x1.radio("Format", ["csv", "parquet"], horizontal=True, key="therapy_format")
    key = f"therapy_export_{sid}_{pid}_{fmt}"
    if x2.button("Prepare export", key="therapy_export"):
        try:
            st.session_state[key] = exports.export_therapy(url, viewer, sid, fmt, person_id=pid)
        except (LookupError, PermissionError) as e:
            st.error(md_text(e))
    if (out := st.session_state.get(key)) is not None:
        st.download_button(f"Download {md_text(out.file_name)} ({out.n_rows} rows)", out.data, file_name=out.file_name,
                           mime=out.mime, key="therapy_download")  # fmt: skip
