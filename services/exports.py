"""Session exports: one row per person per time bin, the same bytes from the CLI and the dashboard."""

from __future__ import annotations

import io
from dataclasses import dataclass
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


def frame_bytes(df: pd.DataFrame, fmt: ExportFormat) -> bytes:
    """The export file's bytes (CSV or Parquet)."""
    if fmt == "csv":  # text cells neutralised against spreadsheet formulas (affectline.csvsafe)
        return frame_to_csv(df, FLOAT_FORMAT).encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()
    raise ValueError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")


def export_session(url: str, actor: Actor, session_id: int, fmt: ExportFormat, **audit_detail) -> Export:
    """A visible session's export (``storage.repo.EXPORT_COLUMNS``), audited (actor, session, format, rows)."""
    require(actor, "export")
    with scope(url) as s:
        visible_session(s, actor.group_ids, session_id)
        df = repo.export_frame(s, session_id)
        data = frame_bytes(df, fmt)
        repo.audit(s, actor.audit_name, "export", f"session:{session_id}", format=fmt, rows=len(df), **audit_detail)
    return Export(data, f"affectline_session_{session_id}.{fmt}", MIME[fmt], len(df), tuple(df.columns))
