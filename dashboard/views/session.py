"""One session at a glance (a therapy session: ``dashboard.therapy_page``): the class curve over a students x time heat map on one mm:ss axis, the moments
found in it, the students worth a check-in (each against their own usual level), the students by name
(never ranked), their small multiples on the same range, this lesson over earlier ones and trends of the
group, naming unknown faces, the page as a PDF, and the audited export.

Everything drawn is reduced on the server to what the screen can show (``dashboard.data`` views over
``services.summaries``): brushing a range on the class chart, a moment's button or typed mm:ss
narrows the view, and every chart is redrawn at the finer resolution for that range.
"""

from __future__ import annotations

import streamlit as st

from affectline.settings import get_settings
from dashboard import actions, auth, charts, data, export_box, jobs_view, plot, safe, therapy_page, viewcache
from dashboard.review_player import review_player
from dashboard.review_route import review_url
from services import review as review_copy
from dashboard.safe import md_text
from services import checkins, columns, faces, lessons, progress, reports
from services import summaries as sm
from affectline.kinds import SessionKind

settings = get_settings()
url = settings.resolved_database_url
viewer = auth.require_viewer()
auth.require(viewer, "view_sessions")
gids = viewer.group_ids

table = data.sessions_frame(url, gids)
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
        st.warning(f"Session {md_text(wanted)} does not exist or is not visible to you.")
    if st.session_state.get("session_id") not in ids:
        ready = table[(table["status"] == "done") & (table["persons"] > 0)]  # never open on a failed or empty one
        st.session_state["session_id"] = int(ready["id"].iloc[0]) if len(ready) else ids[0]


def _sync_link() -> None:
    st.query_params["session"] = str(st.session_state["session_id"])


sid = st.sidebar.selectbox("Session", ids, format_func=lambda i: f"{labels[i]} (#{i})", key="session_id",
                           on_change=_sync_link)  # fmt: skip

info = data.session_info(url, gids, sid)
therapy = info.kind is SessionKind.therapy
st.title(md_text(info.title))
duration = f"{sm.format_clock(info.duration)}" if info.duration else "duration unknown"
st.caption(f"{info.kind.value} session · group {md_text(info.group)} · {duration} · {info.bin_seconds:g} s bins")

job = table.loc[table["id"] == sid].iloc[0]
if job["status"] in ("queued", "running"):

    @st.fragment(run_every=2)
    def _progress() -> None:
        mine = [j for j in progress.active_jobs(url, viewer) if j.id == int(job["job_id"])]
        if not mine:  # done or failed since the last tick: redraw the page with its result
            data.invalidate()
            st.rerun(scope="app")
        jobs_view.show_job(mine[0], title="")  # the job's bar and, for a long video, one per part

    _progress()
elif job["status"] == "failed":
    st.error(md_text(job["state"]))

if not info.analysed:
    st.info("This session has not been analysed yet: no timelines to show.")
    st.stop()
if therapy:  # one child: the child's timelines and tagged behaviours, in therapy words (dashboard.therapy_page)
    therapy_page.show(url, settings, viewer, info, sid)
    st.stop()

st.info(md_text(charts.model_caption(info.academic_model, info.expression_model)), icon=":material/science:")
st.caption(charts.accuracy_caption(info.expression_model))
overview = viewcache.class_overview(url, gids, sid)
summary = overview.summary
agg, withheld = viewcache.class_aggregates(url, gids, sid)
if summary.empty:
    if not len(agg):
        st.warning("No faces were found in this recording: the session has no persons.")
        st.stop()
    # Consent required and nobody's given: no per-person rows, but the class curve still counts them.
    st.info(md_text(withheld) or "No per-person timelines are stored for this session: faces count only toward the class curve.")
    whole = (overview.t0, overview.t1)
    curve = viewcache.class_curve_view(url, gids, sid, *whole)
    heat = viewcache.heatmap_view(url, gids, sid, "engagement", *whole, ())
    plot.chart(safe.figure(charts.class_overview_figure(curve, heat, overview.moments, whole, overview.t1,
                                                       title="Class engagement (class level only)")),
               key=f"class_chart_{sid}")  # fmt: skip
    st.stop()
if withheld:
    st.caption(md_text(withheld))

# --- the view range: one for every chart of this session ------------------------------------
VIEW = f"view_{sid}"
FOCUS = f"focus_{sid}"
full = (overview.t0, overview.t1)
view = st.session_state.get(VIEW, full)


def _set_view(t0: float, t1: float, focus: tuple[int, ...] | None = None) -> None:
    t0, t1 = max(full[0], t0), min(full[1], t1)
    if t1 - t0 < 10 * info.bin_seconds:  # a click, not a brush: show a little around it
        mid = (t0 + t1) / 2
        t0, t1 = max(full[0], mid - 30), min(full[1], mid + 30)
    st.session_state[VIEW] = (t0, t1)
    if focus is not None:
        st.session_state[FOCUS] = focus


def _whole() -> None:
    st.session_state[VIEW] = full
    st.session_state.pop(FOCUS, None)


def _typed() -> None:
    try:
        t0 = sm.parse_clock(st.session_state[f"from_{sid}"])
        t1 = sm.parse_clock(st.session_state[f"to_{sid}"])
        if t1 <= t0:
            raise ValueError(f"'to' ({sm.format_clock(t1)}) must be after 'from' ({sm.format_clock(t0)})")
    except ValueError as e:
        st.session_state["view_error"] = str(e)
        return
    _set_view(t0, t1)


if st.session_state.get(f"shown_{sid}") != view:  # the typed range follows brushes and moment clicks
    st.session_state[f"from_{sid}"], st.session_state[f"to_{sid}"] = sm.format_clock(view[0]), sm.format_clock(view[1])
    st.session_state[f"shown_{sid}"] = view
c1, c2, c3, c4 = st.columns([1, 1, 1, 2], vertical_alignment="bottom")
c1.text_input("From (mm:ss)", key=f"from_{sid}", on_change=_typed)
c2.text_input("To (mm:ss)", key=f"to_{sid}", on_change=_typed)
c3.button("Whole session", key="view_whole", on_click=_whole, disabled=view == full)
heat_value = c4.selectbox("Heat map shows", sm.HEATMAP_VALUES, key="heat_value",
                          format_func=lambda v: "engagement" if v == "engagement" else f"{v} (probability)")  # fmt: skip
if err := st.session_state.pop("view_error", None):
    st.error(md_text(err))

t0, t1 = view
order = tuple(int(p) for p in summary["person_id"])
curve = viewcache.class_curve_view(url, gids, sid, t0, t1)  # for the caption's step; the chart's own views are cached
title = viewcache.chart_title(therapy)
names = dict(zip(summary["person_id"].astype(int), summary["person_label"]))
focus = st.session_state.get(FOCUS) or tuple(order[: viewcache.DEFAULT_STUDENTS])
picked = st.multiselect("Students drawn under the heat map (a moment's button picks its students)", list(names),
                        format_func=names.get, default=[p for p in focus if p in names][:12],
                        key=f"students_{sid}_{hash(focus)}")  # fmt: skip
fig = viewcache.class_figure(url, gids, sid, t0, t1, heat_value, picked, title)
# Dragging is a box-select (the figure's dragmode), which comes back here and redraws finer; plotly's own
# zoom (wheel, modebar) only magnifies what was sent, so it stays for a quick look and every panel follows.
box = plot.chart(safe.figure(fig), key=f"class_chart_{sid}", select=True, config={"scrollZoom": True})
if box:
    brush = tuple(sorted(charts.axis_seconds(x) for x in box))
    if st.session_state.get("last_brush") != (sid, brush):  # a brush is applied once, not on every rerun
        st.session_state["last_brush"] = (sid, brush)
        _set_view(*brush)
        st.rerun()
step_text = sm.format_clock(float(curve["step"].iloc[0])) if len(curve) else ""
st.caption(f"{sm.format_clock(t0)}-{sm.format_clock(t1)} at {step_text} per point. Top: mean engagement of the visible "
           "faces (line) and how many were visible (bars); coloured bands are the moments below. Then each student "
           "(by name; blank = face not visible; violet = visible but not readable: too small, "
           "turned away or blurred, so no emotion is given), and the chosen students' academic emotions "
           "(stacked) with engagement (black). To see more detail, drag across the chart: every panel is redrawn "
           "finer for that range (or type the range, or click a moment). The scroll wheel and the toolbar's zoom "
           "only magnify what is drawn (all panels follow); 'Whole session' goes back.")  # fmt: skip

# --- the video (issue 19): the review copy beside the timeline, where the group keeps one ----------
SEEK = f"seek_{sid}"
if review_copy.copy_available(url, settings.data_dir, viewer, sid):
    st.subheader("Video")
    curve_all = viewcache.class_curve_view(url, gids, sid, *full)
    paused = review_player(key=f"review_player_{sid}", src=review_url(sid), t0=full[0], t1=full[1],
                           curve=zip(curve_all["t_start"], curve_all["engagement"]),
                           moments=[(m.t_start, m.t_end, sm.MOMENT_WORDS[m.kind]) for m in overview.moments],
                           seek=st.session_state.get(SEEK), caption="class engagement; click to play from there")  # fmt: skip
    if paused:
        st.caption(f"Paused at {sm.format_clock(paused['t'])}.")


def _open_moment(m) -> None:
    """A moment's button: the charts narrow to it and the video plays from its start."""
    _set_view(m.t_start - 60, m.t_end + 60, m.person_ids)
    nonce = (st.session_state.get(SEEK) or (0, 0))[1] + 1
    st.session_state[SEEK] = (m.t_start, nonce)


# --- moments ---------------------------------------------------------------------------------
st.subheader(f"Moments ({len(overview.moments)})")
if not overview.moments:
    st.caption("No class-wide dip, confusion or fatigue rise, or distraction spike stood out in this session.")
for i, m in enumerate(overview.moments):
    a, b = st.columns([1, 5], vertical_alignment="center")
    a.button(f"{sm.format_clock(m.t_start)}-{sm.format_clock(m.t_end)}", key=f"moment_{i}", icon=":material/zoom_in:",
             on_click=_open_moment, args=(m,))  # fmt: skip
    who = ", ".join(m.person_labels[:8]) + (f" and {len(m.person_labels) - 8} more" if len(m.person_labels) > 8 else "")
    b.markdown(f"**{sm.MOMENT_WORDS[m.kind].capitalize()}** for {m.duration / 60:.1f} min "
               f"({m.level:.2f} vs usual {m.usual:.2f}). Students: {md_text(who) or 'no single student stood out'}.")  # fmt: skip

# --- worth a check-in: each student against their own usual level -----------------------------------
found = overview.checkins
st.subheader(f"Worth a check-in ({len(found)})")
st.caption(md_text(checkins.intro(False)) + " A time plays the video from there.")
if not found:
    st.caption(md_text(checkins.none_found(False)))
SHOWN_CHECKINS = 12  # a class-wide event flags many students at once: the rest wait in an expander
more = st.expander(md_text(f"{len(found) - SHOWN_CHECKINS} more check-ins")) if len(found) > SHOWN_CHECKINS else None
for i, c in enumerate(found):
    a, b = (more if i >= SHOWN_CHECKINS else st).columns([1, 5], vertical_alignment="center")
    a.button(f"{sm.format_clock(c.t_start)}-{sm.format_clock(c.t_end)}", key=f"checkin_{i}", icon=":material/play_arrow:",
             on_click=_open_moment, args=(c,))  # fmt: skip
    b.markdown(f"**{md_text(c.person_label)}** looked {md_text(c.words)} for {c.duration / 60:.1f} min "
               f"({md_text(c.state)} {c.level:.2f} vs their usual {c.usual:.2f}).")  # fmt: skip

# --- students ----------------------------------------------------------------------------------
st.subheader(f"Students ({len(summary)}), by name")
st.caption("In name order, not ranked. The scores read behaviour on camera (a frown may be concentration, looking "
           "down may be writing): not a grade, and not for ranking or disciplining anyone.")  # fmt: skip
students_shown = summary.drop(columns=["person_id"])
st.dataframe(
    students_shown,
    hide_index=True,
    column_config=columns.config(
        students_shown.columns, person_label=st.column_config.TextColumn("Student"),
        mean_engagement=st.column_config.NumberColumn(format="%.2f"),
        **{c: st.column_config.NumberColumn(format="%.1f") for c in sm.SUMMARY_COLUMNS if c.startswith("minutes_")},
    ),  # fmt: skip
    key="student_summary",
)

# --- trends ----------------------------------------------------------------------------------
if info.group_id is not None:
    st.subheader("Trends")
    # Opt-in: trends read every session of the group once, which the first view of this one need not wait for.
    if st.toggle(f"Show trends across the sessions of {md_text(info.group)}", key="show_trends"):
        over = lessons.lesson_curves(url, viewer, sid)
        if over.earlier:
            plot.chart(safe.figure(charts.lesson_overlay_figure(over)), key="lesson_overlay_chart")
        else:
            st.caption("No earlier lesson of this group to compare this one with yet.")
        if over.note:
            st.caption(md_text(over.note))
        tr = viewcache.group_trends(url, gids, info.group_id)
        if tr.note:
            st.caption(md_text(tr.note))
        if len(tr.per_class) < 2:
            st.caption("Only one analysed session in this group so far: trends need two or more.")
        else:
            plot.chart(safe.figure(charts.trend_figure(tr.per_class, tr.per_student, picked)), key="trend_chart")
            pivot = tr.per_student.pivot_table(index="person_label", columns="title", values="mean_engagement",
                                               sort=False)  # fmt: skip
            st.dataframe(pivot[[t for t in tr.per_class["title"] if t in pivot.columns]].round(2), key="trend_table")

# --- naming unknown faces -------------------------------------------------------------------
if viewer.can("manage_people"):
    tracks = data.session_tracks(url, gids, sid)
    unknown = tracks[~tracks["enrolled"].fillna(False).astype(bool)] if len(tracks) else tracks
    if len(unknown):
        with st.expander(f"Name unknown faces ({unknown['person_id'].nunique()})"):
            st.caption("Naming a face enrols that person in the group: later sessions recognise them. Faces are cut "
                       "from the review copy (or a kept thumbnail) where the group and the person's thumbnails "
                       "consent allow; nothing is stored.")  # fmt: skip
            # an expander runs its body even when closed: cut faces only when asked, not on every page load
            show = st.toggle("Show their faces", key="show_faces")
            for r in unknown.drop_duplicates("person_id").itertuples():
                a, b, c = st.columns([1, 3, 1], vertical_alignment="bottom")
                face = faces.face_of(url, settings.data_dir, viewer, int(r.person_id), sid) if show else None
                if face is None:
                    a.markdown(f"**{md_text(r.person)}**")
                elif face.shown:
                    a.image(face.jpeg, width=64)
                else:
                    a.markdown(f"**{md_text(r.person)}**")
                    a.caption(md_text(face.reason))
                name = b.text_input(f"{md_text(r.person)}, seen {sm.format_clock(r.t_start)}-{sm.format_clock(r.t_end)}",
                                    key=f"enrol_name_{r.person_id}", placeholder="name")  # fmt: skip
                if c.button("Enrol", key=f"enrol_{r.person_id}", disabled=not name.strip()):
                    try:
                        actions.rename_person(url, viewer, int(r.person_id), name.strip())
                    except (ValueError, LookupError, PermissionError) as e:
                        st.error(md_text(e))
                    else:
                        st.rerun()

# --- this page on paper: the same content through the audited report service ------------------------
if viewer.can("export"):
    st.subheader("On paper")
    st.caption("Browser printing cannot draw the interactive charts: this PDF has the same curve, heat map, moments, "
               "check-ins, students and earlier lessons. Recorded in the audit log with your name.")  # fmt: skip
    pkey = f"page_pdf_{sid}"
    if st.button("Prepare this page as PDF", key="page_pdf_button", icon=":material/print:"):
        try:
            with st.spinner("Drawing the PDF..."):
                st.session_state[pkey] = reports.session_report(url, viewer, sid)
        except (LookupError, ValueError, PermissionError) as e:
            st.error(md_text(e))
    if (pdf := st.session_state.get(pkey)) is not None:
        st.download_button(md_text(f"Download this page as PDF ({pdf.pages} pages)"), pdf.data, file_name=pdf.file_name,
                           mime=pdf.mime, key="page_pdf_download")  # fmt: skip

# --- export ---------------------------------------------------------------------------------
if viewer.can("export"):
    export_box.show(url, viewer, sid, "One row per person per time bin.")
