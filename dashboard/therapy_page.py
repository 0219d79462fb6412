"""The session page of a therapy session: one child, in therapy words (no class curve, no ranked students).

Called by ``views/session.py`` for a therapy session after its header; wires widgets to tested modules:
the child's timelines (``charts.child_figure``), the review copy (``review_player``), and what was tagged:
counts and total durations of each behaviour in this session and week over week (``services.therapy``).
Tagging itself is on the "Review & tags" page.
"""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, export_box, plot, safe, therapy_charts, viewcache
from dashboard.review_player import review_player
from dashboard.review_route import review_url
from dashboard.safe import md_text
from services import review as review_copy
from services import summaries as sm
from services import checkins, therapy


def behaviours(url: str, viewer, pid: int, sid: int | None, duration: float | None, key: str) -> None:
    """This session's behaviour counts (when ``sid``), then the child's weeks: a table and a chart."""
    try:
        hist = therapy.child_history(url, viewer, pid)
    except (LookupError, PermissionError) as e:
        st.caption(md_text(e))
        return
    if sid is not None:
        here = therapy.session_table(hist.per_session, sid, duration)
        if here.empty:
            st.caption("No behaviour tagged in this session yet (tag on the Review & tags page).")
        else:
            st.dataframe(here, hide_index=True, key=f"{key}_session")
    if hist.per_week.empty:
        st.caption("No tagged behaviour in any session of this child yet: the week-over-week counts start with the "
                   "first tags.")  # fmt: skip
        return
    st.markdown("**Week over week**: tags · total time of each behaviour, over the analysed sessions of each week")
    st.dataframe(hist.table, hide_index=True, key=f"{key}_weeks")
    plot.chart(safe.figure(therapy_charts.behaviour_figure(hist.per_week)), key=f"{key}_chart")
    with st.expander("Session by session"):
        st.dataframe(hist.by_session, hide_index=True, key=f"{key}_sessions")


SEEK = "therapy_seek"


def _seek(t: float) -> None:
    nonce = (st.session_state.get(SEEK) or (0, 0))[1] + 1
    st.session_state[SEEK] = (t, nonce)


def _checkins(bins, step: float, sid: int, pid: int, video: bool) -> None:
    """The child's runs well above their own usual level (``services.checkins``), in therapy words."""
    found = checkins.checkins(bins, step)
    st.markdown(f"**Worth a look ({len(found)})**")
    st.caption(md_text(checkins.intro(True)) + (" A time plays the video from there." if video else ""))
    if not found:
        st.caption(md_text(checkins.none_found(True)))
    for j, c in enumerate(found):
        a, b = st.columns([1, 5], vertical_alignment="center")
        a.button(f"{sm.format_clock(c.t_start)}-{sm.format_clock(c.t_end)}", key=f"therapy_checkin_{sid}_{pid}_{j}",
                 icon=":material/play_arrow:", on_click=_seek, args=(c.t_start,), disabled=not video)  # fmt: skip
        b.markdown(md_text(checkins.line(c)))


def show(url: str, settings, viewer, info, sid: int) -> None:
    gids = viewer.group_ids
    st.info(md_text(charts.model_caption(info.academic_model, info.expression_model)), icon=":material/science:")
    st.caption(charts.accuracy_caption(info.expression_model))
    persons = data.session_persons(url, gids, sid)
    if not persons:
        st.info("No timeline is stored for this session: no child was seen, or their consent does not allow "
                "storing one.")  # fmt: skip
        return
    step = info.bin_seconds
    for i, (pid, label) in enumerate(persons):
        st.subheader(md_text(label))
        bins = data.child_bins(url, gids, sid, pid)
        tags = data.list_tags(url, viewer, sid, pid) if viewer.can("review") else None
        end = float(max(info.duration or 0.0, (bins["t_end"].max() if len(bins) else step)))
        value_cols = ["engagement", *sm.ACADEMIC, *charts.EXPRESSION_COLUMNS, "personal_confidence"]
        frame = bins[["t_start", *value_cols]].copy()
        frame.loc[~bins["face_visible"].astype(bool), value_cols] = float("nan")
        series = sm.resample(frame, 0.0, end, 900, step)
        fig = charts.child_figure(series, charts.label_runs(bins, step), tags,
                                  viewcache.chart_title(True) if i == 0 else md_text(label), (0.0, end), end)  # fmt: skip
        plot.chart(safe.figure(fig), key=f"therapy_chart_{sid}_{pid}")
        st.caption("Top: the label the child's model gave and its confidence; then academic emotions with engagement, "
                   "and expressions. Navy: tags; green: baseline ranges; grey: face not visible or the model "
                   "uncertain.")  # fmt: skip
        video = i == 0 and review_copy.copy_available(url, settings.data_dir, viewer, sid)
        if video:
            st.markdown("**Video**")
            paused = review_player(key=f"review_player_{sid}", src=review_url(sid), t0=0.0, t1=end,
                                   curve=zip(series["t_start"], series["engagement"]), seek=st.session_state.get(SEEK),
                                   caption="engagement of the child; click to play from there")  # fmt: skip
            if paused:
                st.caption(f"Paused at {sm.format_clock(paused['t'])}.")
        _checkins(bins, step, sid, pid, video)
        if viewer.can("review"):
            st.markdown("**Tagged behaviours in this session**")
            behaviours(url, viewer, pid, sid, info.duration, key=f"behaviours_{sid}_{pid}")

    if viewer.can("export"):
        export_box.show(url, viewer, sid, "One row per time bin of the child.")

