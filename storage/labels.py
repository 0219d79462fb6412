"""Names typed by people (person names, tag labels, group names, usernames), checked on input.

A label is shown in the dashboard, written into CSV exports and PDF reports, and compared
with other labels, so it must be one line of visible text: no control characters (a tab,
newline or escape sequence), no bidirectional overrides (which make a name display as
something else), and a bounded length. Runs of spaces collapse to one; surrounding spaces
go. Characters a spreadsheet reads as a formula (``=``, ``+``, ``-``, ``@``) are allowed
here: CSV writers neutralise them (``affectline.csvsafe``).
"""

from __future__ import annotations

import unicodedata

# U+202A..U+202E embeddings/overrides, U+2066..U+2069 isolates: text that displays reordered.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def clean_label(value: object, what: str = "name", max_len: int = 100) -> str:
    """``value`` as a stored label, or ``ValueError`` naming ``what`` and the problem."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, not {type(value).__name__}")
    for i, ch in enumerate(value):
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI_CONTROLS:
            raise ValueError(f"{what} {_preview(value)} contains a control character (U+{ord(ch):04X} at position {i + 1})")
    text = " ".join(part for part in value.split(" ") if part)
    if not text:
        raise ValueError(f"{what} cannot be empty")
    if len(text) > max_len:
        raise ValueError(f"{what} {_preview(text)} is {len(text)} characters long; at most {max_len}")
    return text


def _preview(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")
