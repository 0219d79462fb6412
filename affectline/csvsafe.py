"""CSV that a spreadsheet cannot be attacked through (OWASP "CSV Injection").

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` (and, after a tab
or carriage return, whatever follows) as a formula: a person renamed
``=HYPERLINK("http://x","y")`` would become a link in the exported file. As OWASP
recommends, every text cell that starts with one of those characters gets a leading single
quote (shown as text, not run), and every text cell is written in double quotes (so a
semicolon-separated locale cannot split a cell into a new one that starts a formula).
Numbers stay numbers: numeric values are written bare, ``-0.5`` as ``-0.5``; so is text
that is nothing but a number (``-3``).

Every CSV the product writes goes through :func:`frame_to_csv` (a DataFrame) or
:func:`writer_row` (rows for ``csv.writer``).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_BARE_HEADER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def neutralise(text: str) -> str:
    """``text`` as a spreadsheet will show it, never run it: a leading ``'`` before a formula start."""
    if text and text.startswith(TRIGGERS) and not _PLAIN_NUMBER.match(text):
        return "'" + text
    return text


def restore(text: str) -> str:
    """Undo :func:`neutralise` when a file we wrote is read back (tags import)."""
    if len(text) > 1 and text[0] == "'" and text[1:].startswith(TRIGGERS) and not _PLAIN_NUMBER.match(text[1:]):
        return text[1:]
    return text


def _quoted(text: str) -> str:
    return '"' + neutralise(text).replace('"', '""') + '"'


def cell(value: object, float_format: str | None = "%.6g") -> str:
    """One CSV field: numbers bare (``float_format``; None: the shortest text that reads back
    the same float), missing values empty, anything else quoted text."""
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if math.isnan(value):
            return ""
        return repr(float(value)) if float_format is None else float_format % value
    return _quoted(value if isinstance(value, str) else str(value))


def writer_row(values: Iterable[object], float_format: str | None = "%.6g") -> str:
    """One CSV line (without the line end), every field made safe by :func:`cell`."""
    return ",".join(cell(v, float_format) for v in values)


def header_row(names: Iterable[object]) -> str:
    """A header line: plain identifiers bare (``session_id``), anything else as a text cell."""
    return ",".join(_header(n) for n in names)


def _column(series: pd.Series, float_format: str) -> list[str]:
    dt = series.dtype
    if pd.api.types.is_bool_dtype(dt) and not series.isna().any():
        return np.where(series.to_numpy(dtype=bool), "True", "False").tolist()
    if pd.api.types.is_integer_dtype(dt) and not series.isna().any():
        return series.astype("int64").astype(str).tolist()
    if pd.api.types.is_float_dtype(dt):
        return ["" if v != v else float_format % v for v in series.to_numpy(dtype=float)]
    return [cell(v, float_format) for v in series.astype(object).tolist()]


def _header(name: object) -> str:
    text = str(name)
    return text if _BARE_HEADER.match(text) else _quoted(text)


def frame_to_csv(df: pd.DataFrame, float_format: str = "%.6g") -> str:
    """``df`` as CSV text (no index, ``\\n`` line ends), every text cell neutralised and quoted."""
    cols = [_column(df.iloc[:, i], float_format) for i in range(df.shape[1])]
    lines = [",".join(_header(c) for c in df.columns)]
    lines += [",".join(row) for row in zip(*cols)]
    return "\n".join(lines) + "\n"
