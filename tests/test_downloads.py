"""No download leaves the dashboard without its audit row: Streamlit's own table export is off, and
every download button hands over bytes made by an audited services export."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "dashboard" / ".streamlit" / "config.toml"
# The services functions that write an audit row and neutralise text cells (services.exports, reports, admin).
AUDITED = {"export_session", "export_selection", "export_summary", "export_therapy", "export_audit", "session_report",
           "group_report", "groups_report", "export_csv"}  # fmt: skip


def test_streamlit_table_downloads_are_off_in_the_dashboard_config():
    from streamlit import config

    cfg = tomllib.loads(CONFIG.read_text())
    assert cfg["client"]["disableDataExport"] is True
    # The installed Streamlit knows the option (a renamed option would be ignored without a word).
    assert "client.disableDataExport" in config._config_options_template


def _names(tree: ast.AST) -> set[str]:
    """Every function named in a module, called or passed on (``_prepare(key, reports.session_report)``)."""
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.Name):
            out.add(n.id)
    return out


def test_every_download_button_serves_an_audited_export():
    seen = []
    for path in sorted((ROOT / "dashboard").rglob("*.py")):
        calls = _names(ast.parse(path.read_text()))
        if "download_button" in calls:
            seen.append(path.name)
            assert calls & AUDITED, f"{path.relative_to(ROOT)} offers a download made by no audited export"
    assert seen, "the dashboard has export pages: this test must see their download buttons"
