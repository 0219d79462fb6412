"""Printable PDF reports (fpdf2 + matplotlib: no browser on the server), audited like exports.

* A **class session** (the session page on paper): the class curve with the visible-face count, the
  students x time heat map, the automatic moments with who was involved, the students worth a
  check-in (``services.checkins``), this lesson over earlier lessons of the group, and the per-student
  table by name (never ranked).
* A **child (therapy) session**: per person, the expression and academic timelines with the
  clinician's tags and the uncertain spans, the tags as a table, and the models that produced the
  numbers with what they are not.
* A **group over a date range**: one line per session, the class trend, and per-student figures by
  name; recordings shorter than ``Settings.trend_min_minutes`` left out, with a note.

The figures come from ``services.summaries`` (the same as the dashboard shows).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from sqlalchemy import select
from sqlalchemy.orm import Session

from services import bins as bins_io
from services import checkins, lessons, model_report
from services import report_charts as charts
from services import report_fonts as fonts
from services import summaries, therapy
from services.actor import Actor, require
from services.db import visible_session
from services.exports import FileSink, audited_delivery, deliver
from storage import person_models, repo, tags
from storage.models import Group, Recording, SessionKind

PAGE_W = 190  # mm of text width on A4 with 10 mm margins
ACADEMIC = summaries.ACADEMIC
EXPRESSION = repo.EXPRESSION_COLUMNS

# Said on every report, in the README's words: what the numbers are, and what they are not.
CAVEAT = (
    "What these numbers are and are not. The academic emotions and engagement come from the model named "
    "above. The default cue model is a transparent rule set over measured cues (eye closure, yawns, head "
    "turned away, smiles, brow lowering, face not visible); it is not a trained classifier of academic emotion "
    "and has not been validated against labelled students: read its numbers as 'how much of each cue was seen', "
    "not as a diagnosis. The expression probabilities come from a network trained on posed faces (FER2013). "
    "It reads behaviour, not inner states, and must not be used to grade, rank or discipline anyone."
)
# A therapy report is about one child: the same caveat without the classroom's words.
CAVEAT_CHILD = CAVEAT.replace("labelled students", "labelled children")
MODEL_WORDS = (  # (substring of the model's normalised name, what it is)
    ("cue", "interpretable cue model, not a trained classifier"),
    ("caer", "CLIP-CAER academic-emotion network"),
    ("xception", "FER2013 mini-Xception expression network"),
)


@dataclass(frozen=True)
class Report:
    data: bytes
    file_name: str
    pages: int
    kind: str  # "class" | "child" | "group"
    mime: str = "application/pdf"


def describe_model(provenance: str | None) -> str:
    if not provenance:
        return "unknown model (not recorded)"
    family = "".join(ch for ch in provenance.split("@", 1)[0].lower() if ch.isalnum())
    what = next((d for key, d in MODEL_WORDS if key in family), None)
    return f"{provenance}: {what}" if what else provenance


# --- data -------------------------------------------------------------------------------------


load_bins = bins_io.load_bins
CLASS_COLUMNS = ("person_id", "t_start", "face_visible", "engagement", *ACADEMIC, "readable")


def _runs(mask: np.ndarray, t: np.ndarray, step: float) -> list[tuple[float, float]]:
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return [(float(t[a]), float(t[b - 1] + step)) for a, b in zip(edges[::2], edges[1::2])]


# --- the PDF ----------------------------------------------------------------------------------


class _Doc(FPDF):
    def __init__(self, title: str, subtitle: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        # Two faces, not three: parsing a DejaVu font is ~0.5 s of CPU per report; notes are set small and grey.
        self.add_font("dv", "", str(fonts.DEJAVU_DIR / "DejaVuSans.ttf"))
        self.add_font("dv", "B", str(fonts.DEJAVU_DIR / "DejaVuSans-Bold.ttf"))
        self._cjk_loaded = False
        self.set_text_shaping(True)  # HarfBuzz: Arabic joined, Hebrew and Arabic right to left
        self.set_margins(10, 12, 10)
        self.set_auto_page_break(True, margin=14)
        self.report_title, self.subtitle = title, subtitle
        self.set_title(title)
        self.set_creator("Affectline")
        self.alias_nb_pages()
        self.add_page()
        self.set_font("dv", "B", 16)
        self.multi_cell(PAGE_W, 8, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font("dv", "", 9)
        self.multi_cell(PAGE_W, 5, subtitle, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(2)

    def get_fallback_font(self, char: str, style: str = "") -> str | None:
        """A glyph DejaVu lacks: Noto Sans CJK, added the first time a report needs it (report_fonts)."""
        found = super().get_fallback_font(char, style)
        if found is None and not self._cjk_loaded and fonts.is_cjk(char):
            regular, bold = fonts.cjk_font(), fonts.cjk_font(bold=True)
            if regular is None:
                raise fonts.missing(char)
            self._cjk_loaded = True
            self.add_font("cjk", "", str(regular))
            self.add_font("cjk", "B", str(bold))
            self.set_fallback_fonts(["cjk"])
            found = super().get_fallback_font(char, style)
        return found

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font("dv", "", 7)
        self.set_text_color(110)
        self.cell(0, 4, f"{self.report_title} · page {self.page_no()}/{{nb}} · confidential: data about children",
                  align="C")  # fmt: skip
        self.set_text_color(0)

    def heading(self, text: str) -> None:
        if self.get_y() > 250:
            self.add_page()
        self.ln(2)
        self.set_font("dv", "B", 12)
        self.cell(PAGE_W, 7, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font("dv", "", 9)

    def para(self, text: str, size: float = 9, style: str = "") -> None:
        """A paragraph; ``style="note"``: a small grey note (captions, caveats), ``"B"``: bold."""
        note = style == "note"
        self.set_font("dv", "" if note else style, size)
        if note:
            self.set_text_color(80)
        self.multi_cell(PAGE_W, 4.6 * max(size, 7.5) / 9, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_text_color(0)
        self.set_font("dv", "", 9)

    def chart(self, png: bytes, caption: str | None = None, title: str | None = None) -> None:
        """A chart at full text width, its title kept on the same page."""
        from PIL import Image

        w, h = Image.open(io.BytesIO(png)).size
        height = PAGE_W * h / w
        if self.get_y() + height + (11 if title else 0) > self.h - 16:
            self.add_page()
        if title:
            self.heading(title)
        self.image(io.BytesIO(png), x=10, w=PAGE_W)
        if caption:
            self.para(caption, size=7.5, style="note")

    def grid(self, header: list[str], rows: list[list[str]], widths: list[float], size: float = 8) -> None:
        """A table with a repeated header row; numbers right-aligned."""
        if not rows:
            self.para("(none)", style="note")
            return
        self.set_font("dv", "", size)
        align = ["RIGHT" if all(_numeric(r[i]) for r in rows) else "LEFT" for i in range(len(header))]
        with super().table(col_widths=widths, text_align=align, line_height=4.2 * size / 8, first_row_as_headings=True,
                           headings_style=_HEAD, width=PAGE_W) as t:  # fmt: skip
            t.row(header)
            for r in rows:
                t.row(r)
        self.set_font("dv", "", 9)
        self.ln(1)

    def render(self) -> bytes:
        return bytes(self.output())


def _numeric(text: str) -> bool:
    try:
        float(text.replace(":", "").replace("-", "0") or "x")
        return True
    except ValueError:
        return False


def _head_style():
    from fpdf.fonts import FontFace

    return FontFace(emphasis="BOLD", fill_color=(230, 236, 242))


_HEAD = _head_style()


def _f(v: float, fmt: str = "{:.2f}") -> str:
    return "-" if v is None or not np.isfinite(v) else fmt.format(v)


def _models(doc: _Doc, rec: Recording) -> None:
    from affectline.model_cards import accuracy_line

    doc.para(f"Academic emotions and engagement: {describe_model(rec.academic_model)}.\n"
             f"Expressions: {describe_model(rec.expression_model)}.")  # fmt: skip
    doc.para(accuracy_line(rec.expression_model) + " " + GATE_WORDS, size=8)  # fmt: skip


GATE_WORDS = ("A face too small, turned away, blurred or without landmarks is 'not readable': it gets no expression "
              "and no academic emotion, and is counted apart from 'not visible'.")  # fmt: skip


def _stamp(actor: Actor) -> str:
    return f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC for {actor.audit_name}"


def _session_line(rec: Recording, group: Group | None, n_persons: int) -> str:
    dur = summaries.format_clock(rec.duration) if rec.duration else "unknown length"
    when = f"{rec.created_at:%Y-%m-%d %H:%M}" if rec.created_at else "-"
    return (f"{SessionKind(rec.kind).value} session #{rec.id} · group {group.name if group else '-'} · recorded {when} · "
            f"{dur} · {rec.bin_seconds or 1:g} s bins · {n_persons} persons")  # fmt: skip


# --- class session ----------------------------------------------------------------------------


def _class_report(doc: _Doc, s: Session, rec: Recording, bins: pd.DataFrame) -> None:
    step = float(rec.bin_seconds or 1.0)
    duration = float(rec.duration) if rec.duration else None
    summary = summaries.roster(summaries.student_summary(bins, step, duration))
    series = summaries.class_series(bins, step)
    found = summaries.moments(bins, step)
    doc.heading("Models")
    _models(doc, rec)

    t0, t1 = float(series["t_start"].min()), float(series["t_start"].max()) + step
    curve = summaries.resample(series[["t_start", "engagement", "n_visible"]], t0, t1, 900, step)
    doc.chart(charts.class_curve(curve["t_start"].to_numpy(float), curve["engagement"].to_numpy(float),
                                 curve["n_visible"].to_numpy(float), len(summary),
                                 [(m.t_start, m.t_end) for m in found]),
              "Mean engagement of the faces visible in each interval (top) and how many faces were visible (bottom); "
              "shaded: the moments listed below.", title="Class engagement over time")  # fmt: skip

    hm = summaries.heatmap(bins, "engagement", t0, t1, max_columns=180, bin_seconds=step,
                           order=summary["person_id"].tolist())  # fmt: skip
    doc.chart(charts.heat_map(hm.values, hm.person_labels, t0, hm.step,
                              f"engagement per student, {summaries.format_clock(hm.step)} columns, by name",
                              unreadable=hm.unreadable),
              "Grey: face not visible in that interval (no estimate, not a low score). Violet: face visible but "
              "not readable and no engagement either (head pose unreliable at that size).",
              title="Students x time: engagement")  # fmt: skip

    doc.heading(f"Moments ({len(found)})")
    doc.grid(["time", "length", "what", "class level (usual)", "students involved"],
              [[f"{summaries.format_clock(m.t_start)}-{summaries.format_clock(m.t_end)}",
                summaries.format_clock(m.duration), summaries.MOMENT_WORDS[m.kind], f"{m.level:.2f} ({m.usual:.2f})",
                ", ".join(m.person_labels) or "no single student stood out"] for m in found],
              [28, 14, 40, 24, 84])  # fmt: skip

    found_checkins = checkins.checkins(bins, step)
    doc.heading(f"Worth a check-in ({len(found_checkins)})")
    doc.para("Students whose own pattern stood out: a run of distraction (1 min or more) or tiredness (2 min or more) "
             "well above their own usual level in this lesson, over readable moments only; each student compared with "
             "themselves, never with the class. In time order.", size=7.5, style="note")  # fmt: skip
    doc.grid(["time to watch", "length", "student", "looked", "level (their usual)"],
              [[f"{summaries.format_clock(c.t_start)}-{summaries.format_clock(c.t_end)}", summaries.format_clock(c.duration),
                c.person_label, c.words, f"{c.level:.2f} ({c.usual:.2f})"] for c in found_checkins],
              [32, 16, 70, 30, 42])  # fmt: skip

    over = lessons.curves_for(s, rec)
    if over.earlier:
        doc.chart(charts.lesson_overlay([(c.key.title, c.minutes, c.engagement) for c in over.earlier],
                                        (over.current.key.title, over.current.minutes, over.current.engagement)),
                  "Class engagement of this lesson (blue) and of the earlier lessons of its group (grey, oldest "
                  "palest), in minutes from each lesson's start." + (f" {over.note}" if over.note else ""),
                  title="This lesson over earlier lessons")  # fmt: skip
    elif over.note:
        doc.para(over.note, size=7.5, style="note")

    doc.heading("Per student (by name)")
    doc.grid(["student", "mean engagement", "min visible", "min confused", "min fatigued", "min distracted",
               "min not readable", "min not visible"],
              [[r.person_label, _f(r.mean_engagement), _f(r.minutes_visible, "{:.1f}"),
                _f(r.minutes_confused, "{:.1f}"), _f(r.minutes_fatigued, "{:.1f}"), _f(r.minutes_distracted, "{:.1f}"),
                _f(r.minutes_not_readable, "{:.1f}"), _f(r.minutes_not_visible, "{:.1f}")] for r in summary.itertuples()],
              [46, 20, 19, 19, 19, 21, 24, 22])  # fmt: skip
    doc.para("Minutes confused (fatigued, distracted): visible minutes whose most probable academic emotion was that "
             "one. Minutes not readable: visible minutes of a face the model cannot read (too small, turned away, "
             "blurred): no emotion is given for them.", size=7.5, style="note")  # fmt: skip


# --- child session ----------------------------------------------------------------------------


def _child_report(doc: _Doc, s: Session, rec: Recording, bins: pd.DataFrame) -> None:
    step = float(rec.bin_seconds or 1.0)
    all_tags = tags.latest_tags(s, session_id=rec.id)
    doc.heading("Models that produced these numbers")
    _models(doc, rec)
    persons = bins[["person_id", "person_label"]].drop_duplicates("person_id").sort_values("person_label")
    for pid, label in persons.itertuples(index=False):
        pbins = bins[bins["person_id"] == pid].sort_values("t_start")
        models = [m for kind in ("baseline", "personal") if (m := person_models.active_model(s, int(pid), kind))]
        words = "; ".join(f"{m.kind} model v{m.version} (created {m.created_at:%Y-%m-%d}, active)" for m in models)
        doc.para(f"{label}: " + (words or "no baseline or personal model active: population models only."))
        personal = next((m for m in models if m.kind == "personal"), None)
        if personal is not None and _fit_rows(personal.metrics):
            doc.para(f"How personal v{personal.version} scored on this child's own tags (out of fold, "
                     f"{personal.metrics.get('n_folds', '?')} folds over {personal.metrics.get('n_bins', '?')} "
                     f"bins), and the population model where it can output the same labels:", size=8)  # fmt: skip
            doc.grid(["model", "macro F1", "balanced accuracy", "coverage", "accuracy when certain"],
                     _fit_rows(personal.metrics), [60, 30, 34, 30, 36])  # fmt: skip
            doc.para(model_report.comparison_note(personal.metrics) + ".", size=8)
            if str(rec.id) in (personal.metrics.get("shares") or {}):
                doc.para("Share of this session per label (as tagged | population model before | personal model "
                         "after, out of fold): " + model_report.shares_line(personal.metrics, rec.id) + ".", size=8)  # fmt: skip
    doc.para(CAVEAT_CHILD, size=7.5, style="note")

    for pid, label in persons.itertuples(index=False):
        pbins = bins[bins["person_id"] == pid].sort_values("t_start")
        t = pbins["t_start"].to_numpy(float)
        visible = pbins["face_visible"].fillna(False).astype(bool).to_numpy()
        uncertain = (pbins["personal_label"] == "uncertain").to_numpy()
        unread = summaries.unreadable(pbins)
        ptags = [tg for tg in all_tags if tg.person_id == pid]
        num = lambda c: pd.to_numeric(pbins[c], errors="coerce").to_numpy(float)  # noqa: E731
        doc.chart(charts.person_timeline(
            t, step, {c: num(c) for c in ACADEMIC}, num("engagement"), {c: num(c) for c in EXPRESSION},
            _runs(uncertain, t, step), _runs(~visible, t, step), [(tg.t_start, tg.t_end, tg.label) for tg in ptags],
            unreadable=_runs(unread, t, step),
        ), "Top: academic emotions (stacked) and engagement (black line). Bottom: expression probabilities. Coloured "
           "spans: the clinician's tags (labelled at their start). Hatched: the personal model was uncertain. "
           "Grey: face not visible. Violet: face visible but not readable (no expression given).",
           title=f"{label}: timelines")  # fmt: skip
        if unread.any():
            doc.para(f"Not readable: {unread.sum() * step / 60:.1f} min of visible face (counted apart from "
                     f"'uncertain' and 'not visible').", size=8)  # fmt: skip
        labels = pbins["personal_label"].dropna()
        if not labels.empty:
            counts = labels.value_counts()
            doc.para("Personal model labels (minutes): " + ", ".join(
                f"{k} {v * step / 60:.1f}" for k, v in counts.items()) + ".")  # fmt: skip
        doc.heading(f"{label}: tags ({len(ptags)})")
        doc.grid(["from", "to", "label", "baseline", "note", "by"],
                  [[summaries.format_clock(tg.t_start), summaries.format_clock(tg.t_end), tg.label,
                    "yes" if tg.is_baseline else "", tg.note or "", tg.author] for tg in ptags],
                  [18, 18, 32, 16, 78, 28])  # fmt: skip
        from storage.models import Person

        person = s.get(Person, int(pid))
        if person is not None:
            _behaviour_tables(doc, therapy.history_in(s, person, until=rec.created_at), label, rec.id,
                              float(rec.duration) if rec.duration else None)  # fmt: skip


WEEKS_SHOWN = 6  # columns that fit the page beside the behaviour's name


def _behaviour_tables(doc: _Doc, hist: therapy.History, label: str, session_id: int | None,
                      duration: float | None) -> None:  # fmt: skip
    """How often and how long each behaviour was tagged: in this session (when given), then week over week."""
    doc.heading(f"Tagged behaviours of {label}")
    if session_id is not None:
        here = therapy.session_table(hist.per_session, session_id, duration)
        doc.grid(["behaviour", "tags", "total time", "share of the session"],
                 [[str(v) for v in r] for r in here.values.tolist()], [80, 30, 40, 40])  # fmt: skip
    table = hist.table
    weeks = [c for c in table.columns if c != "behaviour"]
    if not weeks or table.empty:
        return
    shown = weeks[-WEEKS_SHOWN:]
    doc.grid(["behaviour", *shown], table[["behaviour", *shown]].values.tolist(),
             [46] + [(PAGE_W - 46) / len(shown)] * len(shown))  # fmt: skip
    doc.para("Week over week: each cell is tags · total time (mm:ss) of that behaviour over the week's analysed "
             "sessions (weeks start on Monday, UTC); overlapping tags of one behaviour count their time once; a "
             "point event adds to the count only." + (f" The {len(weeks) - len(shown)} earlier weeks are left out."
                                                       if len(weeks) > len(shown) else ""), size=7.5, style="note")  # fmt: skip


def _fit_rows(metrics: dict) -> list[list[str]]:
    """The population-vs-personal comparison a personalised model was saved with (``FitReport``), as rows."""
    names = {"population": "population", "population_calibrated": "population, calibrated to the child",
             "personal": "personal", "personal_compared": "personal, on the compared labels"}  # fmt: skip
    rows = []
    for key, name in names.items():
        m = metrics.get(key) if isinstance(metrics, dict) else None
        if isinstance(m, dict) and "macro_f1" in m:
            rows.append([name, _f(m.get("macro_f1")), _f(m.get("balanced_accuracy")), _f(m.get("coverage")),
                         _f(m.get("accuracy_when_certain"))])  # fmt: skip
    return rows


# --- group over a date range ------------------------------------------------------------------


def _day(d: date) -> datetime:
    return datetime.combine(d, time.min, tzinfo=timezone.utc)


def _group_report(doc: _Doc, s: Session, group: Group, recs: list[Recording], note: str = "") -> None:
    # Per-person sums from SQL, not every bin of every lesson into pandas: a term of 40 lessons stays quick.
    summ = bins_io.student_summaries(s, [r.id for r in recs], {r.id: float(r.bin_seconds or 1.0) for r in recs})
    tr = summaries.trends_from_summaries([(summaries.SessionKey(r.id, r.title, r.created_at), summ[r.id]) for r in recs])
    pc = tr.per_class
    doc.heading(f"Sessions ({len(pc)})")
    if note:
        doc.para(note, size=8)
    if pc.empty:
        doc.para("No analysed session of this group in the range.")
        return
    doc.chart(charts.trend([f"{a:%m-%d} #{i}" for a, i in zip(pc["at"], pc["session_id"])],
                           pc["mean_engagement"].to_numpy(float)),
              "Mean engagement per session over the visible faces, oldest first.")  # fmt: skip
    doc.grid(["date", "session", "persons", "mean engagement", "min confused", "min fatigued", "min distracted"],
              [[f"{r.at:%Y-%m-%d}", f"{r.title} (#{r.session_id})", str(r.persons), _f(r.mean_engagement),
                _f(r.minutes_confused, "{:.1f}"), _f(r.minutes_fatigued, "{:.1f}"), _f(r.minutes_distracted, "{:.1f}")]
               for r in pc.itertuples()],
              [22, 62, 16, 24, 22, 22, 22])  # fmt: skip
    child = SessionKind(group.kind) is SessionKind.therapy
    who = "child" if child else "student"
    doc.para(f"Minutes are per-{who} means in each session.", size=7.5, style="note")
    ps = tr.per_student
    doc.heading(f"Per {who} over the range (by name)")
    if ps.empty:
        doc.para("No person was seen.")
        return
    g = ps.groupby(["person_id", "person_label"], sort=False)
    agg = g.agg(sessions=("session_id", "nunique"), mean_engagement=("mean_engagement", "mean"),
                confused=("minutes_confused", "sum"), fatigued=("minutes_fatigued", "sum"),
                distracted=("minutes_distracted", "sum"), not_visible=("minutes_not_visible", "sum"))  # fmt: skip
    agg = summaries.roster(agg.reset_index())  # by name, never ranked
    doc.grid([who, "sessions", "mean engagement", "min confused", "min fatigued", "min distracted",
               "min not visible"],
              [[r.person_label, str(r.sessions), _f(r.mean_engagement), _f(r.confused, "{:.1f}"),
                _f(r.fatigued, "{:.1f}"), _f(r.distracted, "{:.1f}"), _f(r.not_visible, "{:.1f}")]
               for r in agg.itertuples()],
              [54, 18, 26, 22, 22, 24, 24])  # fmt: skip
    doc.para(f"Mean engagement: mean of the {who}'s per-session means; minutes: totals over the sessions.",
             size=7.5, style="note")  # fmt: skip
    if child:  # what a clinician counts: each tagged behaviour, week over week, over the report's sessions
        from storage.models import Person

        keep = [int(i) for i in pc["session_id"]]
        for r in agg.itertuples():
            if (person := s.get(Person, int(r.person_id))) is not None:
                _behaviour_tables(doc, therapy.history_in(s, person, session_ids=keep), r.person_label, None, None)
    doc.para(CAVEAT_CHILD if child else CAVEAT, size=7.5, style="note")


# --- entry points -----------------------------------------------------------------------------


def session_report(url: str, actor: Actor, session_id: int, sink: FileSink | None = None) -> Report:
    """A class report for a classroom session, a child report for a therapy one; audited.

    With ``sink`` (the CLI) the file is written before the audit row commits: a failed write
    leaves no row saying the report was made (``services.exports``)."""
    require(actor, "export")
    with audited_delivery(url, sink) as s:
        rec = visible_session(s, actor.group_ids, session_id)
        if rec.analysed_at is None:
            raise ValueError(f"session {session_id} has not been analysed yet: nothing to report")
        group = s.get(Group, rec.group_id) if rec.group_id is not None else None
        child = SessionKind(rec.kind) is SessionKind.therapy
        # A class report needs no expression or personal columns: half the columns, half the fetch.
        bins = load_bins(s, session_id, bins_io.DEFAULT_COLUMNS if child else CLASS_COLUMNS)
        n_persons = int(bins["person_id"].nunique()) if len(bins) else 0
        kind = "child" if child else "class"
        doc = _Doc(f"{'Therapy' if child else 'Class'} session report: {rec.title}",
                   f"{_session_line(rec, group, n_persons)}\n{_stamp(actor)}")  # fmt: skip
        if bins.empty:
            doc.para("No faces were found in this recording: the session has no persons.")
        elif child:
            _child_report(doc, s, rec, bins)
        else:
            _class_report(doc, s, rec, bins)
            doc.para(CAVEAT, size=7.5, style="note")
        data = doc.render()
        repo.audit(s, actor.audit_name, "report", f"session:{session_id}", kind=kind, pages=doc.pages_count,
                   bytes=len(data))  # fmt: skip
        return deliver(Report(data, f"affectline_{kind}_report_session_{session_id}.pdf", doc.pages_count, kind), sink)


def find_group(s: Session, actor: Actor, group: int | str) -> Group:
    """A visible group by id or name (same message whether missing or hidden)."""
    g = s.get(Group, int(group)) if str(group).isdigit() else s.scalar(select(Group).where(Group.name == str(group)))
    if g is None or not actor.sees(g.id):
        raise LookupError(f"group {group} does not exist or is not visible to you")
    return g


def group_report(url: str, actor: Actor, group: int | str, since: date | None = None, until: date | None = None,
                 sink: FileSink | None = None, min_minutes: float | None = None) -> Report:
    """The analysed sessions of a group recorded in [since, until] (whole UTC days, both included); audited
    (with ``sink``, as ``session_report``). Recordings shorter than ``min_minutes`` (default
    ``Settings.trend_min_minutes``) are left out, and the report says how many."""
    require(actor, "export")
    if since and until and until < since:
        raise ValueError(f"the range ends ({until}) before it starts ({since})")
    with audited_delivery(url, sink) as s:
        g = find_group(s, actor, group)
        q = select(Recording).where(Recording.group_id == g.id, Recording.analysed_at.is_not(None))
        if since:
            q = q.where(Recording.created_at >= _day(since))
        if until:
            q = q.where(Recording.created_at < _day(until + timedelta(days=1)))
        recs = list(s.scalars(q.order_by(Recording.created_at, Recording.id)))
        recs, short = lessons.split_short(s, recs, min_minutes)
        span = f"{since or 'the first session'} to {until or 'today'}"
        doc = _Doc(f"Group report: {g.name}",
                   f"{SessionKind(g.kind).value} group #{g.id} · sessions recorded {span}\n{_stamp(actor)}")  # fmt: skip
        _group_report(doc, s, g, recs, lessons.left_out_note(len(short), lessons.trend_min_minutes(min_minutes)))
        data = doc.render()
        repo.audit(s, actor.audit_name, "report", f"group:{g.id}", kind="group", sessions=[r.id for r in recs],
                   left_out_short=[r.id for r in short],
                   since=str(since) if since else None, until=str(until) if until else None, pages=doc.pages_count,
                   bytes=len(data))  # fmt: skip
        return deliver(Report(data, f"affectline_group_report_{g.id}_{since or 'start'}_{until or 'now'}.pdf",
                              doc.pages_count, "group"), sink)  # fmt: skip
