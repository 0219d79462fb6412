"""Group reports for several groups at once, and the scheduled run that writes them to disk.

* ``groups_report``: one PDF with a part per group (the same content as ``services.reports.
  group_report``: sessions, trend, per-person figures) over one date range; one ``report`` audit
  row per group, so the trail of each group says who printed it.
* ``scheduled_reports``: what the beat runs (``affectline report scheduled``, sent by the worker's
  ``affectline.group_reports`` task): each group with analysed sessions in the period just ended
  (yesterday, last Monday-Sunday, or last calendar month) gets its report written under
  ``Settings.group_reports_dir`` (default ``data_dir/reports``) as
  ``<since>_<until>/affectline_group_report_<group id>_<since>_<until>.pdf``. A report already on
  disk is left alone, so a redelivered or doubled run writes nothing twice. The run itself is one
  ``scheduled_reports`` audit row (and each report its own ``report`` row) under ``system:reports``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from fpdf.enums import XPos, YPos
from sqlalchemy import func, select

from services import lessons
from services import reports as rp
from services.actor import Actor, require
from services.db import scope
from services.exports import FileSink, audited_delivery, deliver
from storage import repo
from storage.models import Group, Recording, Role, SessionKind

Every = Literal["daily", "weekly", "monthly"]
SCHEDULER = Actor(None, "system:reports", Role.admin, None)  # the audit trail's name for the schedule


def _recordings(s, group_id: int, since: date | None, until: date | None) -> list[Recording]:
    q = select(Recording).where(Recording.group_id == group_id, Recording.analysed_at.is_not(None))
    if since:
        q = q.where(Recording.created_at >= rp._day(since))
    if until:
        q = q.where(Recording.created_at < rp._day(until + timedelta(days=1)))
    return list(s.scalars(q.order_by(Recording.created_at, Recording.id)))


def groups_report(url: str, actor: Actor, groups: Sequence[int | str], since: date | None = None,
                  until: date | None = None, sink: FileSink | None = None,
                  min_minutes: float | None = None) -> rp.Report:  # fmt: skip
    """One PDF for ``groups`` (ids or names, each visible to ``actor``) over [since, until], UTC days
    included; audited per group. With one group it is that group's report. Recordings shorter than
    ``min_minutes`` (default ``Settings.trend_min_minutes``) are left out, each part saying how many."""
    require(actor, "export")
    if not groups:
        raise ValueError("choose at least one group")
    if since and until and until < since:
        raise ValueError(f"the range ends ({until}) before it starts ({since})")
    with audited_delivery(url, sink) as s:
        found = list(dict.fromkeys(rp.find_group(s, actor, g).id for g in groups))
        gs = [s.get(Group, gid) for gid in found]
        span = f"{since or 'the first session'} to {until or 'today'}"
        title = f"Group report: {gs[0].name}" if len(gs) == 1 else f"Group reports: {len(gs)} groups"
        doc = rp._Doc(title, f"{', '.join(g.name for g in gs)} · sessions recorded {span}\n{rp._stamp(actor)}")
        per_group: list[tuple[Group, list[Recording], list[Recording]]] = []
        minutes = lessons.trend_min_minutes(min_minutes)
        for i, g in enumerate(gs):
            recs, short = lessons.split_short(s, _recordings(s, g.id, since, until), minutes)
            if len(gs) > 1:
                if i:
                    doc.add_page()
                doc.set_font("dv", "B", 14)
                doc.multi_cell(rp.PAGE_W, 7, f"{g.name} ({SessionKind(g.kind).value} group #{g.id})",
                               new_x=XPos.LMARGIN, new_y=YPos.NEXT)  # fmt: skip
                doc.set_font("dv", "", 9)
            rp._group_report(doc, s, g, recs, lessons.left_out_note(len(short), minutes))
            per_group.append((g, recs, short))
        data = doc.render()
        for g, recs, short in per_group:
            repo.audit(s, actor.audit_name, "report", f"group:{g.id}", kind="group", sessions=[r.id for r in recs],
                       left_out_short=[r.id for r in short],
                       since=str(since) if since else None, until=str(until) if until else None,
                       pages=doc.pages_count, bytes=len(data), with_groups=found if len(found) > 1 else None)  # fmt: skip
        ids = "_".join(str(g) for g in found) if len(found) <= 6 else f"{len(found)}groups"
        name = f"affectline_group_report_{ids}_{since or 'start'}_{until or 'now'}.pdf"
        return deliver(rp.Report(data, name, doc.pages_count, "group"), sink)


# --- the schedule ------------------------------------------------------------------------------


def period(every: Every, today: date) -> tuple[date, date]:
    """The whole period that ended before ``today``: yesterday, last Monday-Sunday, or last month."""
    if every == "daily":
        d = today - timedelta(days=1)
        return d, d
    if every == "weekly":
        monday = today - timedelta(days=today.weekday())
        return monday - timedelta(days=7), monday - timedelta(days=1)
    if every == "monthly":
        last = today.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last
    raise ValueError(f"report schedule {every!r} is not one of daily, weekly, monthly")


@dataclass(frozen=True)
class ScheduledRun:
    since: date
    until: date
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # already on disk from an earlier (or doubled) run


def report_path(out_dir: Path, group_id: int, since: date, until: date) -> Path:
    return Path(out_dir) / f"{since}_{until}" / f"affectline_group_report_{group_id}_{since}_{until}.pdf"


def scheduled_reports(url: str, out_dir: Path, every: Every, today: date | None = None,
                      actor: Actor = SCHEDULER) -> ScheduledRun:  # fmt: skip
    """Write the period's report of every group with analysed sessions in it (see the module doc)."""
    since, until = period(every, today or date.today())
    with scope(url) as s:
        q = (select(Recording.group_id).where(Recording.group_id.is_not(None), Recording.analysed_at.is_not(None),
                                              Recording.created_at >= rp._day(since),
                                              Recording.created_at < rp._day(until + timedelta(days=1)))
             .group_by(Recording.group_id).having(func.count(Recording.id) > 0))  # fmt: skip
        gids = sorted(gid for gid in s.scalars(q) if actor.sees(gid))
    run = ScheduledRun(since, until)
    for gid in gids:
        path = report_path(out_dir, gid, since, until)
        if path.exists():
            run.skipped.append(path)
            continue
        tmp = path.with_suffix(".pdf.part")  # a crash mid-write leaves no file that looks finished
        groups_report(url, actor, [gid], since, until, sink=FileSink(tmp, "report"))
        tmp.replace(path)
        run.written.append(path)
    with scope(url) as s:
        repo.audit(s, actor.audit_name, "scheduled_reports", "reports", every=every, since=str(since), until=str(until),
                   written=[str(p) for p in run.written], skipped=[str(p) for p in run.skipped])  # fmt: skip
    return run
