"""A clinician's view of one child's therapy session: timelines with uncertain spans shaded and the cues
behind each estimate on hover, tags on every chart; tagging by brushing the chart or typing mm:ss,
editing and deleting tags, baseline ranges; personalising the child, activating and rolling back
model versions (work queued by task name, progress shown here); the therapy export.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from affectline.settings import get_settings
from dashboard import actions, auth, charts, confirm, data, plot, safe, therapy_page
from dashboard.review_player import review_player, take_events
from dashboard.review_route import review_url
from dashboard.safe import md_text
from services import clinic, columns, deletions, exports, model_report, tag_formats, tagging
from services import review as review_copy
from services import vocabulary as vocab_service
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
box = plot.chart(safe.figure(fig), key=f"child_chart_{sid}_{pid}", select=True)
st.caption("Navy: tags; green: baseline ranges; grey bands: face not visible or the model uncertain; violet: face "
           "visible but not readable (too small, turned away or blurred: no expression given). Drag across the chart "
           "to pick a range for a tag.")  # fmt: skip

# --- the video, tagged while watching (issue 19): keys per label of the group's vocabulary -------
if review_copy.copy_available(url, settings.data_dir, viewer, sid):
    st.subheader("Video")
    ANSWERS = f"tag_answers_{sid}_{pid}"
    answers = st.session_state.setdefault(ANSWERS, {})
    copy = review_copy.review_file(url, settings.data_dir, viewer, sid)
    value = review_player(key=f"review_player_{sid}_{pid}", src=review_url(sid), t0=full[0], t1=full[1],
                          curve=zip(bins["t_start"], bins["engagement"].where(bins["face_visible"].astype(bool))),
                          caption=f"{persons[pid]}'s engagement", tags=tagging.player_tags(url, viewer, sid, pid),
                          vocabulary=vocab_service.session_vocabulary(url, viewer, sid), fps=tagging.copy_fps(copy),
                          coding=viewer.can("tag"), answers=answers, height=760)  # fmt: skip
    if viewer.can("tag") and take_events(value, answers, lambda ev: tagging.apply_events(url, viewer, sid, pid, ev)):
        st.rerun()
    st.caption("Click the video, then press a label's key to start a behaviour and the same key to end it "
               "(point labels: one press). , and . step one frame, the arrows one second, [ and ] change the "
               "speed, Backspace undoes the last coded action. Click a tag to change or delete it.")  # fmt: skip

if box:
    brush = tuple(sorted(charts.axis_seconds(x) for x in box))
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


def _labels() -> list[str]:
    """The group's vocabulary first, then the other labels the clinic has used."""
    own = [it.label for it in vocab_service.session_vocabulary(url, viewer, sid)]
    return own + [x for x in data.tag_vocabulary(url) if x not in own]


z1, z2, z3 = st.columns([1, 1, 3])
z1.button("Zoom to the range below", key="review_zoom", on_click=_zoom_to_tag_range)
z2.button("Whole session", key="review_whole", on_click=_zoom, args=full, disabled=view == full)


# --- add a tag ---------------------------------------------------------------------------------
if viewer.can("tag"):
    st.subheader("Tag a range")
    if st.session_state.pop("tag_clear", False):
        st.session_state.update(tag_from="", tag_to="")
    st.session_state.setdefault("tag_from", "")
    st.session_state.setdefault("tag_to", "")
    a, b, c, d = st.columns([1, 1, 2, 1], vertical_alignment="bottom")
    a.text_input("From (mm:ss)", key="tag_from")
    b.text_input("To (mm:ss)", key="tag_to")
    vocab = _labels()
    label = c.selectbox("Label", vocab + ["other…"], key="tag_label")
    baseline = d.checkbox("Baseline range", key="tag_baseline",
                          help="A calm stretch of this child, used to calibrate the model to them.")
    other = st.text_input("New clinic label (when 'other…' is chosen)", key="tag_other")
    note = st.text_area("Note", key="tag_note", height=68)
    if st.button("Add tag", key="add_tag", type="primary"):
        try:
            ts, te = tagging.form_range(st.session_state["tag_from"], st.session_state["tag_to"])
            chosen = actions.add_tag_label(url, viewer, other) if label == "other…" else label
            tagging.add_range(url, viewer, sid, pid, ts, te, chosen, note, is_baseline=baseline)
        except (ValueError, LookupError, PermissionError) as e:
            st.error(md_text(e))
        else:
            st.session_state["review_flash"] = f"Tagged {sm.format_clock(ts)}-{sm.format_clock(te)} as {chosen}."
            st.session_state["tag_clear"] = True  # the next tag needs its own range: never the last one again
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
        text = tagging.pick_texts(tags)
        uid = st.selectbox("Tag to change", list(text), format_func=text.get, key="tag_pick")
        row = tags.set_index("uid").loc[uid]
        if st.session_state.get("edit_uid") != uid:  # the edit fields follow the picked tag
            st.session_state.update(edit_uid=uid, edit_from=sm.format_clock(row.t_start), edit_to=sm.format_clock(row.t_end),
                                    edit_note=row.note or "", edit_baseline=bool(row.is_baseline),
                                    edit_label=row.label)  # fmt: skip
        a, b, c, d = st.columns([1, 1, 2, 1], vertical_alignment="bottom")
        a.text_input("From", key="edit_from")
        b.text_input("To", key="edit_to")
        c.selectbox("Label", vocab if row.label in vocab else [row.label, *vocab], key="edit_label")
        d.checkbox("Baseline", key="edit_baseline")
        st.text_input("Note", key="edit_note")
        e1, e2, _ = st.columns([1, 1, 4])
        if e1.button("Save changes", key="edit_tag"):
            try:
                ts, te = tagging.form_edit(st.session_state["edit_from"], st.session_state["edit_to"],
                                           (float(row.t_start), float(row.t_end)))  # fmt: skip
                tagging.edit_range(url, viewer, sid, pid, uid, t_start=ts, t_end=te, label=st.session_state["edit_label"],
                                   note=st.session_state["edit_note"], is_baseline=st.session_state["edit_baseline"])  # fmt: skip
            except (ValueError, LookupError, PermissionError) as e:
                st.error(md_text(e))
            else:
                st.session_state.pop("edit_uid", None)
                st.rerun()
        def _delete_tag() -> None:
            actions.delete_tag(url, viewer, sid, uid)
            st.session_state.pop("edit_uid", None)
            st.rerun()

        confirm.ask("delete_tag", "Delete tag", uid, lambda: deletions.tag_impact(url, viewer, sid, uid).sentence(),
                    _delete_tag, container=e2)  # fmt: skip

# --- the group's tag vocabulary (services.vocabulary: keys, kinds, the calm label; audited) -------
if viewer.can("tag") and info.group_id is not None:
    with st.expander(f"Tag vocabulary of {md_text(info.group or 'this group')} (labels and their keys)"):
        items = vocab_service.session_vocabulary(url, viewer, sid)
        st.dataframe([{"label": it.label, "key": it.key, "kind": it.kind.value, "calm/none": it.calm} for it in items],
                     hide_index=True, key="vocab_table")  # fmt: skip
        st.caption("state: the key starts the behaviour and the same key ends it; point: one press marks an instant. "
                   "Tags already made keep their label when it leaves the vocabulary.")  # fmt: skip
        v1, v2, v3, v4 = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
        v_label = v1.text_input("Label", key="vocab_label")
        v_key = v2.text_input("Key", key="vocab_key", max_chars=1)
        v_kind = v3.radio("Kind", ["state", "point"], horizontal=True, key="vocab_kind")
        v_calm = v4.checkbox("Calm/none", key="vocab_calm")
        w1, w2, _ = st.columns([1, 1, 3])
        try:
            if w1.button("Save label", key="vocab_save"):
                known = any(it.label.lower() == v_label.strip().lower() for it in items)
                vocab_service.set_label(url, viewer, info.group_id, v_label, v_key or (None if known else ""), v_kind,
                                        True if v_calm else None)  # fmt: skip
                st.rerun()
            if w2.button("Remove label", key="vocab_remove"):
                vocab_service.remove_label(url, viewer, info.group_id, v_label)
                st.rerun()
        except (ValueError, LookupError, PermissionError) as e:
            st.error(md_text(e))

# --- what was tagged: counts and durations per behaviour, this session and week over week ----------
st.subheader("Tagged behaviours")
therapy_page.behaviours(url, viewer, pid, sid, info.duration, key=f"review_behaviours_{sid}_{pid}")

# --- tags to and from the coders' tools (services.tag_formats) ---------------------------------
with st.expander("Tags as ELAN or BORIS files"):
    st.caption("Download this child's tags of this session for ELAN (.eaf) or BORIS (aggregated events CSV), or import "
               "a file coded there: every event is checked first and nothing is stored unless all are fine; events "
               "already tagged (same label and range) are skipped. Both are recorded in the audit log.")  # fmt: skip
    f1, f2 = st.columns([1, 3], vertical_alignment="bottom")
    tfmt = f1.radio("File format", list(tag_formats.FORMATS), horizontal=True, key="tagfile_format",
                    format_func={"eaf": "ELAN", "boris": "BORIS"}.get)  # fmt: skip
    tkey = f"tagfile_{sid}_{pid}_{tfmt}"
    if f2.button("Prepare tag file", key="tagfile_export", disabled=not viewer.can("export")):
        try:
            st.session_state[tkey] = tag_formats.export_tags(url, viewer, sid, tfmt, person_id=pid)
        except (ValueError, LookupError, PermissionError) as e:
            st.error(md_text(e))
    if (tf_out := st.session_state.get(tkey)) is not None:
        st.download_button(f"Download {md_text(tf_out.file_name)} ({tf_out.n_tags:d} tags)", tf_out.data,
                           file_name=tf_out.file_name, mime=tf_out.mime, key="tagfile_download")  # fmt: skip
    if viewer.can("tag"):
        up = st.file_uploader("ELAN (.eaf) or BORIS (.csv, .tsv) file to import", type=["eaf", "csv", "tsv"],
                              key=f"tagfile_upload_{sid}_{pid}")  # fmt: skip
        if st.button("Import tags", key="tagfile_import", disabled=up is None) and up is not None:
            try:
                got = tag_formats.import_tags(url, viewer, sid, up.getvalue(), up.name, person_id=pid)
            except tag_formats.TagFileError as e:
                st.error(md_text(f"{up.name}: nothing imported; {len(e.lines)} problem(s), one per line:"))
                st.code("\n".join(e.lines[:50]), language=None)  # plain text: no Markdown to neutralise
            except (ValueError, LookupError, PermissionError) as e:
                st.error(md_text(e))
            else:
                st.session_state["review_flash"] = got.phrase()
                st.rerun()

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
    st.markdown("**Personal model versions** (macro-F1 out of fold, grouped by time blocks; the population model "
                "only on the labels it can output too; newest first)")  # fmt: skip
    st.dataframe(models, hide_index=True, key="models_table",
                 column_config=columns.config(models.columns, **{c: st.column_config.NumberColumn(format="%.2f")
                                for c in ("personal_f1", "personal_f1_compared", "population_f1", "calibrated_f1",
                                          "personal_coverage")}))  # fmt: skip
    shown_v = st.session_state.get("model_version")
    shown_v = int(shown_v) if shown_v in set(models["version"]) else int(models["version"].iloc[0])
    metrics = clinic.model_metrics(url, viewer, pid, shown_v)
    st.caption(md_text(f"v{shown_v}: {model_report.comparison_note(metrics)}."))
    shares = model_report.shares_frame(metrics, sid)
    if shares.empty:
        st.caption(md_text(f"v{shown_v} has no before/after shares for this session (analysed after it was fitted)."))
    else:
        st.markdown(f"**Share of this session per label, v{shown_v:d}**: as tagged (untagged time = calm), as the "
                    "population model labelled it before, as the personal model labels it after (out of fold; a "
                    "session without tags was not trained on, so 'tagged' is empty)")  # fmt: skip
        st.dataframe(shares.drop(columns="session"), hide_index=True, key="shares_table",
                     column_config={c: st.column_config.NumberColumn(c, format="percent")
                                    for c in ("tagged", "before", "after")})  # fmt: skip
    if viewer.can("tag"):
        active = models.loc[models["active"], "version"]
        m1, m2, m3 = st.columns([2, 1, 1], vertical_alignment="bottom")
        version = m1.selectbox(md_text(model_report.picker_title(models)), models["version"].tolist(), key="model_version",
                               format_func=model_report.version_label)  # fmt: skip
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
