"""The fonts the PDF reports embed, so that a name in any script a school uses comes out of the report.

* **DejaVu Sans** (shipped inside matplotlib's wheel): Latin, Greek, Cyrillic, Arabic, Hebrew,
  Armenian, Georgian and more. The PDF text is shaped by HarfBuzz (``uharfbuzz``): Arabic letters
  join, and right-to-left names read right to left.
* **Noto Sans CJK** (Debian's ``fonts-noto-cjk``; ``.ci/run`` installs it): Chinese, Japanese kana
  and kanji, Korean Hangul. It is a fallback, loaded only by a report that prints such a character
  (parsing it is ~0.2 s). Where it is missing, such a report fails with one line saying what to
  install, rather than dropping the names (fpdf2's "missing glyphs").

The charts (matplotlib) use the same two faces, DejaVu first.
"""

from __future__ import annotations

import glob
import unicodedata
from functools import lru_cache
from pathlib import Path

import matplotlib

DEJAVU_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
CJK_PACKAGE = "fonts-noto-cjk"
# Where distributions put Noto Sans CJK (Debian/Ubuntu first); any one of them is enough.
_CJK_GLOBS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-{style}.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-{style}.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-{style}.ttc",
    "/usr/share/fonts/**/NotoSansCJK-{style}.ttc",
)
CJK_FAMILY = "Noto Sans CJK JP"  # the collection's first face (index 0); it covers Han, kana and Hangul alike


class MissingFont(ValueError):
    """A report needs a font that is not installed (one line: which characters, what to install)."""


@lru_cache(maxsize=None)
def cjk_font(bold: bool = False) -> Path | None:
    """Noto Sans CJK (regular or bold) if installed; bold falls back to regular."""
    for pattern in _CJK_GLOBS:
        found = sorted(glob.glob(pattern.format(style="Bold" if bold else "Regular"), recursive=True))
        if found:
            return Path(found[0])
    return cjk_font(False) if bold else None


def is_cjk(ch: str) -> bool:
    """A character the CJK fallback draws: Han, kana, Hangul, bopomofo, CJK punctuation and full widths."""
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK ", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC", "FULLWIDTH",
                            "HALFWIDTH", "KANGXI"))  # fmt: skip


def missing(ch: str) -> MissingFont:
    return MissingFont(f"the report prints {ch!r} ({unicodedata.name(ch, 'U+%04X' % ord(ch)).title()}), which needs "
                       f"the Noto Sans CJK fonts: install the Debian package {CJK_PACKAGE} "
                       f"(apt-get install {CJK_PACKAGE})")  # fmt: skip


@lru_cache(maxsize=None)
def use_in_matplotlib() -> None:
    """DejaVu first, then Noto Sans CJK where installed, for every chart (matplotlib falls back per glyph)."""
    from matplotlib import font_manager

    families = ["DejaVu Sans"]
    path = cjk_font()
    if path is not None:
        font_manager.fontManager.addfont(str(path))
        families.append(CJK_FAMILY)
    matplotlib.rcParams["font.family"] = families
