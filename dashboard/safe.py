"""User text shown as text: the one place the dashboard makes a name, title, tag, URL parameter or message inert.

Streamlit renders almost every string as Markdown (``st.markdown``, ``st.title``, ``st.error`` and the other
alerts, ``st.caption``, widget labels, ``st.progress`` text, button labels), with extensions of its own:
``:red[...]`` directives, ``:material/icon:`` and ``:smile:`` shortcodes, ``$...$`` LaTeX, GFM autolinks
(``https://...``, ``www.``, e-mail addresses) and typographic arrows (``->``). A session titled
``[new login required](https://evil.example/login)`` would be a link. ``md_text`` makes any string display
as exactly its characters wherever Streamlit reads Markdown:

- every ASCII punctuation character gets a backslash (CommonMark: a backslash before ASCII punctuation is
  that character, literally), so no link, image, emphasis, HTML, heading, list, table, directive, math or
  autolink can start;
- Streamlit's shortcodes, arrows and GFM autolinks (``https://``, ``www.``, ``a@b.c``) are found in the
  *parsed* text (after the backslashes are gone), so a WORD JOINER (U+2060, invisible, zero width, no line
  break) breaks each: after a ``:`` that a shortcode name or ``//`` follows, after ``@``, after ``www``
  before a dot, inside each arrow pair (``"Note: x"`` stays as it is, so text search still finds it);
- line breaks and other control characters become spaces (one line: a newline could start a new block).

Plotly is a different language: its text (titles, hover, axis categories, annotations, legend names)
understands ``<a href>``, ``<span style>``, ``<b>`` and entities, not Markdown. ``figure`` escapes every
such tag in a finished figure except the few the dashboard's own charts use (``<br>``, ``<extra>``).
"""

from __future__ import annotations

import html
import re
import string
import unicodedata
from typing import Any

WORD_JOINER = "\u2060"
_PUNCT = frozenset(string.punctuation)
_ARROWS = ("<->", "->", "<-", "--", ">=", "<=", "~=")  # Streamlit turns these into arrows and dashes
_AFTER_COLON = re.compile(r"[A-Za-z0-9_+\-/]")  # a shortcode's name, or the "//" of an autolinked URL
_WWW = re.compile(r"(www)(?=\.)", re.I)  # GFM autolinks "www.x.y" in the parsed text
_ARROW_RE = re.compile("|".join(re.escape(a) for a in sorted(_ARROWS, key=len, reverse=True)))


def md_text(value: object) -> str:
    """``value`` (any object: ``str()`` of it) as Markdown that Streamlit displays as exactly that text."""
    text = "" if value is None else str(value)
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)
    text = _ARROW_RE.sub(lambda m: WORD_JOINER.join(m.group(0)), text)
    text = _WWW.sub(lambda m: m.group(1) + WORD_JOINER, text)
    out = []
    for i, ch in enumerate(text):
        if ch in _PUNCT:
            out.append("\\" + ch)
            nxt = text[i + 1] if i + 1 < len(text) else ""
            if (ch == ":" and _AFTER_COLON.match(nxt)) or (ch == "@" and nxt):
                # ":smile:", ":material_x:", "https://x", "a@b.c" are matched in the text after unescaping
                out.append(WORD_JOINER)
        else:
            out.append(ch)
    return "".join(out)


def shown(markdown: str) -> str:
    """What ``md_text`` output reads as once rendered (for tests and comparisons): the escapes and joiners gone."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace(WORD_JOINER, "")


# --- plotly ----------------------------------------------------------------------------------------

# The tags our own charts write: kept. Any other "<...>" in a figure's text is escaped, whoever put it there.
_OWN_TAGS = re.compile(r"<(?:br|/?extra|/?b|/?i|/?sup|/?sub)>", re.I)
_TAG = re.compile(r"<[^<>]*>")


def plot_text(value: object) -> str:
    """``value`` as plotly text that displays as exactly that text (no tag, no entity)."""
    return html.escape("" if value is None else str(value), quote=False)


def _clean(s: str) -> str:
    if "<" not in s and "&" not in s and ">" not in s:
        return s
    # Plotly splits text at tags, then decodes entities inside the text between them: "&lt;" is shown as
    # "<" but never becomes a tag. So our own tags stay, every other tag and every "&" is escaped.
    pieces, tags = _TAG.split(s), _TAG.findall(s)
    out = [html.escape(pieces[0], quote=False)]
    for t, p in zip(tags, pieces[1:]):
        out.append(t if _OWN_TAGS.fullmatch(t) else html.escape(t, quote=False))
        out.append(html.escape(p, quote=False))
    return "".join(out)


def _walk(obj: Any) -> Any:
    if isinstance(obj, str):
        return _clean(obj)
    if isinstance(obj, dict):
        return {k: _walk(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_walk(v) for v in obj)
    if getattr(obj, "dtype", None) is not None and getattr(obj.dtype, "kind", "") == "O":  # numpy object array
        import numpy as np

        return np.array([_walk(v) for v in obj.tolist()], dtype=object).reshape(obj.shape)
    return obj


def figure(fig):
    """``fig`` (a plotly Figure) with every tag but our own escaped in all its text, ready for ``dashboard.plot.chart``.

    Works on the figure's raw property dicts (traces and layout) in place: re-validating a whole figure
    would cost more than drawing it."""
    for props in fig._data:  # noqa: SLF001  (plotly keeps each trace's JSON here; public setters re-validate)
        for k, v in list(props.items()):
            props[k] = _walk(v)
    layout = fig._layout  # noqa: SLF001
    for k, v in list(layout.items()):
        layout[k] = _walk(v)
    return fig
