"""Session exports: one row per person per time bin, the same bytes from the CLI and the dashboard.

Every export writes an audit row. An export written to a file (``sink=FileSink(path)``: the CLI)
is written inside the transaction that adds its audit row, so an export that could not be
written (unwritable path, a full disk, a folder) leaves no row saying it was exported, and a
file whose audit row then failed to commit is removed again (when the export created it).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from affectline.csvsafe import frame_to_csv
from services.actor import Actor, require
from services.db import scope, visible_session
from storage import repo

ExportFormat = Literal["csv", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "parquet")
MIME = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
FLOAT_FORMAT = "%.6g"  # six significant digits: the models' outputs carry no more


@dataclass(frozen=True)
class Export:
    data: bytes
    file_name: str
    mime: str
    n_rows: int
    columns: tuple[str, ...]


class ExportWriteError(OSError):
    """The export file could not be written; the message is one line naming the path and why."""


class FileSink:
    """Writes an export's bytes to ``path`` (inside the export's transaction; see the module doc)."""

    def __init__(self, path: str | Path, what: str = "export"):
        self.path, self.what = Path(path), what  # ``what`` names the file in errors: "export", "report"
        self.created = False

    def __call__(self, out: Export) -> None:
        p = self.path
        if p.is_dir():
            raise ExportWriteError(f"{p}: is a folder; give a file name for the {self.what}")
        existed = p.exists()
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "wb") as f:  # not a temporary + rename: the target may be a device (/dev/stdout)
                f.write(out.data)
        except OSError as e:
            if not existed and p.is_file():
                p.unlink(missing_ok=True)  # a half-written file is no export
            raise ExportWriteError(f"{p}: cannot write the {self.what} ({e.strerror or e})") from None
        self.created = not existed

    def undo(self) -> None:
        """The audit row did not commit: the file must not outlive it (when we created it)."""
        if self.created and self.path.is_file():
            self.path.unlink(missing_ok=True)
            self.created = False


@contextmanager
def audited_delivery(url: str, sink: FileSink | None) -> Iterator:
    try:
        with scope(url) as s:
            yield s
    except BaseException:
        if sink is not None:
            sink.undo()
        raise


def deliver(out: Export, sink: FileSink | None) -> Export:
    if sink is not None:
        sink(out)  # raises before the commit: the audit row goes with the failed write
    return out


def frame_bytes(df: pd.DataFrame, fmt: ExportFormat) -> bytes:
    """The export file's bytes (CSV or Parquet)."""
    if fmt == "csv":  # text cells neutralised against spreadsheet formulas (affectline.csvsafe)
        return frame_to_csv(df, FLOAT_FORMAT).encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    raise ValueError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")


def export_session(url: str, actor: Actor, session_id: int, fmt: ExportFormat, sink: FileSink | None = None,
                   **audit_detail) -> Export:  # fmt: skip
    """A visible session's export (``storage.repo.EXPORT_COLUMNS``), audited (actor, session, format, rows)."""
    require(actor, "export")
    with audited_delivery(url, sink) as s:
        visible_session(s, actor.group_ids, session_id)
        df = repo.export_frame(s, session_id)
        data = frame_bytes(df, fmt)
        repo.audit(s, actor.audit_name, "export", f"session:{session_id}", format=fmt, rows=len(df), **audit_detail)
        out = Export(data, f"affectline_session_{session_id}.{fmt}", MIME[fmt], len(df), tuple(df.columns))
        return deliver(out, sink)


# --- selections and per-person summaries (issue 11) -------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which part of a session to export: bins overlapping [t0, t1) seconds, of these persons (None = all)."""

    t0: float | None = None
    t1: float | None = None
    person_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.t0 is not None and self.t1 is not None and self.t1 <= self.t0:
            raise ValueError(f"the time range ends ({self.t1:g} s) before it starts ({self.t0:g} s)")

    def audit(self) -> dict:
        return {k: v for k, v in (("t0", self.t0), ("t1", self.t1),
                                  ("persons", list(self.person_ids) if self.person_ids is not None else None))
                if v is not None}  # fmt: skip

    def suffix(self) -> str:
        from services.summaries import format_clock

        span = "" if self.t0 is None and self.t1 is None else \
            f"_{format_clock(self.t0 or 0).replace(':', '')}-{format_clock(self.t1).replace(':', '') if self.t1 else 'end'}"  # fmt: skip
        return span + (f"_{len(self.person_ids)}persons" if self.person_ids is not None else "")


def _selected_bins(s, session_id: int, sel: Selection, columns) -> pd.DataFrame:
    from services.bins import load_bins

    return load_bins(s, session_id, columns, sel.t0, sel.t1, sel.person_ids)


def export_selection(url: str, actor: Actor, session_id: int, fmt: ExportFormat, sel: Selection = Selection(),
                     sink: FileSink | None = None, **audit_detail) -> Export:  # fmt: skip
    """Part of a session (time range, persons) in the export's columns (``EXPORT_COLUMNS``), audited."""
    require(actor, "export")
    with audited_delivery(url, sink) as s:
        visible_session(s, actor.group_ids, session_id)
        cols = [c for c in repo.EXPORT_COLUMNS if c not in ("session_id", "person_label")]
        df = _selected_bins(s, session_id, sel, cols)
        df.insert(0, "session_id", session_id)
        df = df.reindex(columns=list(repo.EXPORT_COLUMNS))
        data = frame_bytes(df, fmt)
        repo.audit(s, actor.audit_name, "export", f"session:{session_id}", format=fmt, rows=len(df), **sel.audit(),
                   **audit_detail)  # fmt: skip
        out = Export(data, f"affectline_session_{session_id}{sel.suffix()}.{fmt}", MIME[fmt], len(df),
                     tuple(df.columns))  # fmt: skip
        return deliver(out, sink)


def export_summary(url: str, actor: Actor, session_id: int, fmt: ExportFormat, sel: Selection = Selection(),
                   sink: FileSink | None = None, **audit_detail) -> Export:  # fmt: skip
    """One row per person by name (``services.summaries.roster`` of ``student_summary``: mean engagement,
    minutes confused / fatigued / distracted / not readable / not visible; no rank) over the selection, audited."""
    from services.summaries import ROSTER_COLUMNS, roster, student_summary

    require(actor, "export")
    with audited_delivery(url, sink) as s:
        rec = visible_session(s, actor.group_ids, session_id)
        step = float(rec.bin_seconds or 1.0)
        bins = _selected_bins(s, session_id, sel, ("person_id", "t_start", "face_visible", "engagement",
                                                   *repo.ACADEMIC_COLUMNS, "readable"))  # fmt: skip
        t0 = sel.t0 if sel.t0 is not None else 0.0
        t1 = sel.t1 if sel.t1 is not None else (rec.duration or (bins["t_start"].max() + step if len(bins) else 0.0))
        df = roster(student_summary(bins, step, duration=max(float(t1) - float(t0), 0.0)))
        df.insert(0, "session_id", session_id)
        df["from_s"], df["to_s"] = float(t0), float(t1)
        data = frame_bytes(df, fmt)
        repo.audit(s, actor.audit_name, "export_summary", f"session:{session_id}", format=fmt, rows=len(df),
                   **sel.audit(), **audit_detail)  # fmt: skip
        cols = ("session_id", *ROSTER_COLUMNS, "from_s", "to_s")
        out = Export(data, f"affectline_summary_session_{session_id}{sel.suffix()}.{fmt}", MIME[fmt], len(df), cols)
        return deliver(out, sink)


# --- therapy sessions (issue 11): the personalised label, its confidence and the clinician's tags ---

THERAPY_COLUMNS: tuple[str, ...] = (
    "session_id", "person_id", "person_label", "t_start", "t_end", "face_visible", "personal_label",
    "personal_confidence", "personal_model", "tags", "baseline", *repo.EXPRESSION_COLUMNS, "engagement",
    *repo.ACADEMIC_COLUMNS, "readable", "unreadable_reason", "pose_reliable", "academic_model", "expression_model",
)  # fmt: skip


def therapy_frame(s, session_id: int, person_id: int | None = None) -> pd.DataFrame:
    """One row per bin of a therapy session: the label the child's active model gave (or "uncertain"), its
    confidence, which personal model version that was ("population" when none), the labels of the
    current tags covering the bin ("; "-joined) and whether it lies in a baseline tag."""
    import numpy as np

    from services.bins import load_bins
    from storage import person_models, tags
    from storage.models import Recording

    rec = s.get(Recording, session_id)
    cols = ("person_id", "t_start", "t_end", "face_visible", "personal_label", "personal_confidence",
            *repo.EXPRESSION_COLUMNS, "engagement", *repo.ACADEMIC_COLUMNS, "readable", "unreadable_reason",
            "pose_reliable")  # fmt: skip
    df = load_bins(s, session_id, cols, person_ids=None if person_id is None else [person_id])
    df.insert(0, "session_id", session_id)
    versions = {}
    for pid in df["person_id"].unique():
        m = person_models.active_model(s, int(pid), "personal")
        versions[int(pid)] = f"personal v{m.version}" if m is not None else "population"
    df["personal_model"] = df["person_id"].map(versions)
    df["tags"], df["baseline"] = "", False
    t0, t1 = df["t_start"].to_numpy(float), df["t_end"].to_numpy(float)
    pid_arr = df["person_id"].to_numpy()
    labels = [[] for _ in range(len(df))]
    for t in tags.latest_tags(s, session_id=session_id, person_id=person_id):
        hit = np.flatnonzero((pid_arr == t.person_id) & (t0 < t.t_end) & (t1 > t.t_start))
        for i in hit:
            labels[i].append(t.label)
        if t.is_baseline:
            df.loc[df.index[hit], "baseline"] = True
    df["tags"] = ["; ".join(x) for x in labels]
    df["academic_model"], df["expression_model"] = rec.academic_model, rec.expression_model
    return df.reindex(columns=list(THERAPY_COLUMNS))


def export_therapy(url: str, actor: Actor, session_id: int, fmt: ExportFormat, person_id: int | None = None,
                   sink: FileSink | None = None, **audit_detail) -> Export:  # fmt: skip
    """A therapy session's export with personalised label, confidence, model version and tags, audited."""
    require(actor, "export")
    with audited_delivery(url, sink) as s:
        visible_session(s, actor.group_ids, session_id)
        df = therapy_frame(s, session_id, person_id)
        data = frame_bytes(df, fmt)
        extra = {} if person_id is None else {"person": person_id}
        repo.audit(s, actor.audit_name, "export", f"session:{session_id}", format=fmt, rows=len(df), kind="therapy",
                   **extra, **audit_detail)  # fmt: skip
        name = f"affectline_therapy_{session_id}" + (f"_person{person_id}" if person_id is not None else "")
        return deliver(Export(data, f"{name}.{fmt}", MIME[fmt], len(df), tuple(df.columns)), sink)
