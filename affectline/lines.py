"""Stored text shown one value per field, so that no value can fake a line or a field.

``audit list`` prints tab-separated lines and readers (people, ``grep``, log shippers) split
them on tabs and newlines. A value typed by someone (an ``--as`` claim from before claims were
checked, a user name tried at the login page, a session title) could hold a newline and a
tab-separated copy of a real row. ``one_line`` writes every such character as a visible escape,
as Python's string literals do (``\\n``, ``\\t``, ``\\x1b``, ``\\u202e``), and a backslash as
``\\\\`` so that an escape seen is always an escape made: the text reads back exactly with
``unescape``.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Categories that move, hide or break text: controls, format characters (bidirectional overrides,
# zero-width characters), line and paragraph separators, surrogates (undecodable bytes), unassigned.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    if unicodedata.category(ch) in _HIDDEN:
        o = ord(ch)
        return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"
    return ch


def one_line(value: object) -> str:
    """``value`` as one line of visible text with no tab: every other character as it is."""
    text = "" if value is None else str(value)
    if text.isprintable() and "\\" not in text:  # the common case, untouched
        return text
    return "".join(_escape(ch) for ch in text)


def unescape(text: str) -> str:
    """The text ``one_line`` was given (for tools that read our listings back)."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
