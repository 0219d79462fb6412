"""Names in every script a school uses come back out of the PDF reports (issue 20, item 6).

fpdf2 with DejaVu alone printed nothing for Chinese and Korean ("missing glyphs"). The reports
now embed DejaVu Sans and, where a name needs it, Noto Sans CJK (Debian's fonts-noto-cjk), and
shape the text with HarfBuzz. Each report is made by the real CLI and read back with pdftotext.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from services import report_charts, report_fonts, reports
from services.actor import operator
from storage import repo
from storage.db import session_scope
from storage.models import SessionKind
from tests.dashboard_factories import add_analysed_session

ROOT = Path(__file__).resolve().parents[1]
NAMES = {
    "Chinese": "王小明",
    "Korean": "김민준",
    "Japanese": "さくら タナカ",
    "Arabic": "محمد علي",
    "Hebrew": "דוד כהן",
    "Cyrillic": "Иван Петров",
    "Greek": "Γιώργος Νικολάου",
    "Latin": "Zoë Ångström-Łęcka",
}


@pytest.fixture(autouse=True)
def _tools() -> None:
    assert shutil.which("pdftotext"), "poppler-utils missing: apt-get install poppler-utils (.ci/run installs it)"
    assert report_fonts.cjk_font() is not None, (
        f"Noto Sans CJK missing: apt-get install {report_fonts.CJK_PACKAGE} (.ci/run installs it)")  # fmt: skip


def pdftotext(path: Path) -> str:
    """The report's text; poppler wraps right-to-left runs in embedding marks (U+202B ... U+202C): dropped."""
    out = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
    return out.translate({c: None for c in range(0x202A, 0x202F)})


def affectline(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def _world(url: str) -> tuple[int, int]:
    with session_scope(url) as s:
        cls = repo.get_or_create_group(s, "三年二班 · 3-2반", "classroom").id
        care = repo.get_or_create_group(s, "Κλινική", "therapy").id
    labels = tuple(NAMES.values())
    sid, _ = add_analysed_session(url, cls, SessionKind.classroom, "수학 수업", len(labels), n_bins=30, labels=labels)
    tid, _ = add_analysed_session(url, care, SessionKind.therapy, "جلسة", 2, n_bins=30,
                                  labels=(NAMES["Arabic"], NAMES["Hebrew"]))  # fmt: skip
    return sid, tid


def test_names_in_every_script_come_back_from_session_and_group_reports(settings, db_url, tmp_path):
    sid, tid = _world(db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AFFECTLINE_") or k == "AFFECTLINE_MODEL_DIR"}
    env["AFFECTLINE_DATA_DIR"] = str(settings.data_dir)
    env["AFFECTLINE_TREND_MIN_MINUTES"] = "0"  # 30 s recordings: kept, this test is about names
    made = {
        "class": ("report", "session", str(sid)),
        "child": ("report", "session", str(tid)),
        "group": ("report", "group", "三年二班 · 3-2반"),
    }
    texts = {}
    for kind, args in made.items():
        out = tmp_path / f"{kind}.pdf"
        r = affectline(env, *args, "-o", str(out))
        assert r.returncode == 0 and f"{kind} report" in r.stderr, r.stderr
        assert "missing glyph" not in r.stderr.lower(), r.stderr
        texts[kind] = pdftotext(out)
    for script, name in NAMES.items():
        assert name in texts["class"], f"{script} name {name!r} missing from the class report"
        assert name in texts["group"], f"{script} name {name!r} missing from the group report"
    assert NAMES["Arabic"] in texts["child"] and NAMES["Hebrew"] in texts["child"]
    assert "Class session report: 수학 수업" in texts["class"] and "Group report: 三年二班 · 3-2반" in texts["group"]
    assert "Therapy session report: جلسة" in texts["child"] and "Κλινική" in texts["child"]


def test_the_charts_draw_every_name_without_missing_glyphs():
    labels = list(NAMES.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        png = report_charts.heat_map(np.full((len(labels), 10), 0.5), labels, 0.0, 1.0, "engagement")
    assert png.startswith(b"\x89PNG")


def test_a_latin_report_does_not_load_the_cjk_font(db_url):
    """Parsing Noto Sans CJK costs ~0.2 s: only a report that prints such a character pays it."""
    from tests.dashboard_factories import seed

    ids = seed(db_url)
    doc = reports._Doc("Latin only", "-")
    doc.para("Ada Lovelace, Иван, Γιώργος, محمد, דוד")
    doc.render()
    assert not doc._cjk_loaded
    assert reports.session_report(db_url, operator(), ids.sessions["maths"]).data.startswith(b"%PDF")
    doc = reports._Doc("王小明", "-")
    doc.render()
    assert doc._cjk_loaded


def test_without_the_cjk_font_a_report_says_what_to_install(settings, db_url, tmp_path, monkeypatch):
    from affectline.settings import get_settings
    from cli.main import main

    sid, _ = _world(db_url)
    monkeypatch.setattr(report_fonts, "_CJK_GLOBS", (str(tmp_path / "none-{style}.ttc"),))
    report_fonts.cjk_font.cache_clear()
    get_settings.cache_clear()
    try:
        r = CliRunner().invoke(main, ["report", "session", str(sid), "-o", str(tmp_path / "x.pdf")])
    finally:
        report_fonts.cjk_font.cache_clear()
    assert r.exit_code == 1 and r.output.count("\n") == 1, r.output
    assert "apt-get install fonts-noto-cjk" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "x.pdf").exists()
