"""User text is shown as text (issue 20, item 2): ``dashboard.safe.md_text`` for Streamlit's Markdown,
``dashboard.safe.figure`` for plotly's HTML-ish text, and a static check that every call in dashboard/ which
renders Markdown gets user text only through the helper. The real-browser proof is tests/test_browser_safety.py."""

from __future__ import annotations

import ast
import json
import string
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest

from dashboard import charts
from services.summaries import Heatmap
from dashboard.safe import WORD_JOINER, figure, md_text, plot_text, shown

ROOT = Path(__file__).resolve().parents[1]

# What an attacker (or a careless user) types into a title, a name, a tag or a URL parameter.
PAYLOADS = [
    "[Your login expired: click here](https://evil.example/login) ![x](https://evil.example/t.png)",
    "[Class A - new login required](https://evil.example/login)",
    "<a href='https://evil.example/login'>login</a> <img src=https://evil.example/t.png>",
    "<script>alert(1)</script>",
    ":red[alarm] :blue-background[x] :material/home: :smile: :streamlit: :help[tip]",
    "$x^2$ and $$\\int_0^1$$",
    "**bold** _it_ ~~gone~~ `code` # heading",
    "https://evil.example/login www.evil.example evil@evil.example",
    "- a list\n1. item\n> quote\n\n---",
    "a -> b <- c <-> d -- e >= f <= g ~= h",
    "&lt;a href=x&gt; &amp; &#60;",
    "| a | b |\n|---|---|",
    "back\\slash \\[x\\](https://evil.example)",
    "[ref]: https://evil.example\n[ref]",
    "name with spaces and ünïcödé 中文 한국어",
]


@pytest.mark.parametrize("text", PAYLOADS)
def test_md_text_escapes_every_markdown_metacharacter(text):
    out = md_text(text)
    assert "\n" not in out and "\r" not in out  # one line: no new block can start
    i = 0
    while i < len(out):  # every ASCII punctuation character is preceded by its backslash
        ch = out[i]
        if ch == "\\":
            assert out[i + 1] in string.punctuation, (out, i)
            after = out[i + 2 : i + 4]
            assert not (out[i + 1] == ":" and after and (after[0].isalnum() or after in ("\\_", "\\+", "\\-", "\\/"))), \
                (out, i)  # a shortcode name (or an URL's "//") could start right after this ":"
            assert not (out[i + 1] == "@" and after and after[0] != WORD_JOINER), (out, i)  # no e-mail autolink
            if out[i + 1] in ":@" and i + 2 < len(out) and out[i + 2] == WORD_JOINER:
                i += 1  # shortcodes (":smile:", ":material_x:") are matched after unescaping
            i += 2
            continue
        assert ch not in string.punctuation, (out, i, ch)
        i += 1
    # It reads back as the text itself (line breaks as spaces).
    assert shown(out) == text.replace("\n", " ")


def test_md_text_takes_any_object_and_breaks_streamlit_arrows():
    assert md_text(None) == "" and md_text(3) == "3" and md_text(ValueError("no group 'x'")) == "no group \\'x\\'"
    assert "->" not in shown(md_text("a -> b").replace(WORD_JOINER, "#"))  # the pair is split by an invisible joiner
    assert md_text("plain words") == "plain words"
    assert md_text("WWW.x") == "WWW" + WORD_JOINER + "\\.x"  # GFM would autolink it in the parsed text
    assert md_text("Note: a :smile:") == "Note\\: a \\:" + WORD_JOINER + "smile\\:"  # a joiner only where a code could start


def test_plot_text_and_figure_escape_tags_but_keep_our_own():
    assert plot_text("<a href='x'>y</a> & z") == "&lt;a href='x'&gt;y&lt;/a&gt; &amp; z"
    evil = "<a href='https://evil.example/login'>Ann</a>"
    t = np.arange(0, 60, 1.0)
    series = pd.DataFrame({"t_start": t, "step": 1.0, "engagement": 0.5, "n_visible": 2.0,
                           **{c: 0.25 for c in charts.ACADEMIC_COLUMNS}})  # fmt: skip
    heat = Heatmap("engagement", [1, 2, 3], [evil, "<span style='color:red'>Bo</span>",
                                             "<img src=https://evil.example/t.png>"], t, 1.0, np.full((3, len(t)), 0.5))
    fig = charts.class_overview_figure(series, heat, (), (0, 60), 60.0, title=evil, students=[(evil, series)])
    tags = pd.DataFrame({"t_start": [1.0], "t_end": [5.0], "label": [evil], "note": [evil], "is_baseline": [False]})
    figs = [fig, charts.student_figure(series, evil, (0, 60), 60.0, tags=tags),
            charts.trend_figure(pd.DataFrame({"session_id": [1, 2], "title": [evil, "x"], "at": [None, None],
                                              "mean_engagement": [0.4, 0.5]}))]  # fmt: skip
    for f in figs:
        raw = json.dumps(json.loads(pio.to_json(f, validate=False)))  # plotly's JSON writes "<" as \\u003c
        assert "<a href" in raw or "<span" in raw or "<img" in raw  # the payload is there before ...
        out = json.loads(pio.to_json(figure(f), validate=False))
        text = json.dumps(out)
        assert "<a " not in text and "<span" not in text and "<img" not in text  # ... and inert after
        assert "&lt;a href='https://evil.example/login'&gt;Ann&lt;/a&gt;" in text
    assert "<extra></extra>" in json.dumps(json.loads(pio.to_json(figs[0], validate=False)))  # our own tags stay


# --- the static guard: Markdown-rendering calls in dashboard/ get user text through md_text -------------

# Calls whose first argument (or text=/help=/label=/body=) Streamlit renders as Markdown.
MARKDOWN_CALLS = {
    "markdown", "title", "header", "subheader", "caption", "error", "warning", "info", "success", "toast", "write",
    "button", "download_button", "form_submit_button", "link_button", "text_input", "text_area", "number_input",
    "selectbox", "multiselect", "radio", "checkbox", "toggle", "date_input", "time_input", "file_uploader", "slider",
    "select_slider", "expander", "popover", "metric", "progress", "spinner", "tabs", "color_picker", "exception",
}  # fmt: skip
MARKDOWN_KWARGS = {"text", "help", "label", "body"}
# Interpolations that are never user text: numbers, enums, our own constants and clock strings.
SAFE_EXPRESSIONS = {
    "viewer.role.value", "info.kind.value", "duration", "n", "sid", "jid", "kind", "grole.value", "purpose.capitalize()",
    "len(overview.moments)", "len(summary)", "len(tags)", "step_text", "settings.session_idle_minutes",
    "settings.uncertain_threshold", "settings.analysis_fps", "unknown['person_id'].nunique()", "fps",
    "address or 'every interface'", "sm.MOMENT_WORDS[m.kind].capitalize()", "export.n_rows", "out.n_rows", "rows",
    "'required' if req else 'not required'", "'class' if kind == 'classroom' else 'caseload'",
    "'entry' if len(log) == 1 else 'entries'", "len(log)", "head", "' and '.join(missing)",
    "CUE_DOC.read_text()",  # our own documentation, Markdown on purpose
}  # fmt: skip
# charts.accuracy_caption: our model card's words and link; a model id without a card goes through md_text.
SAFE_CALLS = {"chunk_text", "md_text", "charts.accuracy_caption", "sm.format_clock", "summaries.format_clock", "format_clock", "len", "int", "float", "str.join"}


def _ok(node: ast.AST) -> str | None:
    """None when ``node`` can only hold our own text or md_text output, else the offending source."""
    if isinstance(node, ast.Constant):
        return None
    if isinstance(node, ast.JoinedStr):
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                if part.format_spec is not None:
                    continue  # {x:.2f}, {p:.0%}: a number
                if (bad := _ok(part.value)) is not None and ast.unparse(part.value) not in SAFE_EXPRESSIONS:
                    return bad
        return None
    if isinstance(node, ast.Call):
        name = ast.unparse(node.func)
        return None if name in SAFE_CALLS or ast.unparse(node) in SAFE_EXPRESSIONS else ast.unparse(node)
    if isinstance(node, ast.BinOp):
        return _ok(node.left) or _ok(node.right)
    if isinstance(node, ast.BoolOp):
        return next((b for v in node.values if (b := _ok(v)) is not None), None)
    if isinstance(node, ast.IfExp):
        return _ok(node.body) or _ok(node.orelse)
    if isinstance(node, (ast.List, ast.Tuple)):
        return next((b for v in node.elts if (b := _ok(v)) is not None), None)
    src = ast.unparse(node)
    return None if src in SAFE_EXPRESSIONS else src


def _violations(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MARKDOWN_CALLS):
            continue
        owner = ast.unparse(node.func.value)
        if owner in ("st.session_state", "st.query_params", "st.column_config", "logging", "lg", "log") or "column_config" in owner:
            continue
        if owner in ("audit",):
            continue
        first = node.args[:1] if node.func.attr != "progress" else []  # progress(value, text=...)
        args = first + [k.value for k in node.keywords if k.arg in MARKDOWN_KWARGS]
        for a in args:
            if (bad := _ok(a)) is not None:
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node.func)}(... {bad} ...)")
    return out


def test_every_markdown_call_in_the_dashboard_passes_user_text_through_md_text():
    files = sorted((ROOT / "dashboard").rglob("*.py"))
    assert len(files) > 8
    bad = [v for f in files for v in _violations(f)]
    assert not bad, "Markdown-rendering calls with text not passed through dashboard.safe.md_text:\n" + "\n".join(bad)


def test_the_guard_catches_an_unwrapped_title(tmp_path):
    p = ROOT / "dashboard" / "_probe_guard.py"
    try:
        p.write_text("import streamlit as st\nst.title(info.title)\nst.error(f'{r.title}: x')\n"
                     "c1.markdown(f'**{md_text(x)}** {n}')\nst.progress(0.5, text=job.phrase())\n")  # fmt: skip
        found = _violations(p)
    finally:
        p.unlink()
    assert [v.split(": ", 1)[0].rsplit(":", 1)[1] for v in found] == ["2", "3", "5"]


def test_every_chart_in_the_dashboard_goes_through_safe_figure():
    # every chart is dashboard.plot.chart (st.plotly_chart is the slow path issue 19 removed), drawn escaped
    calls = 0
    for f in sorted((ROOT / "dashboard").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                where = f"{f.relative_to(ROOT)}:{node.lineno}"
                assert node.func.attr != "plotly_chart", f"{where}: st.plotly_chart (use dashboard.plot.chart)"
                if ast.unparse(node.func) == "plot.chart":
                    arg = ast.unparse(node.args[0])
                    assert arg.startswith("safe.figure("), f"{where}: plot.chart({arg})"
                    calls += 1
    assert calls >= 6  # the class, no-consent, overlay, trend, review and therapy charts
