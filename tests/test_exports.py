"""A failed export leaves no audit row saying it was exported: the service (``FileSink``) and the CLI.

The file is written inside the transaction that adds the audit row (``services.exports``):
an unwritable path, a full disk (/dev/full) or a folder rolls the row back; a commit that
fails after the write removes the file the export created."""

from __future__ import annotations

from pathlib import Path

import pytest

from services import exports
from services.actor import operator
from storage import repo
from storage.db import session_scope
from tests.test_bad_input import _session_with_bins, _url, assert_one_line, run_cli


def _exports_audited(url: str) -> list[dict]:
    with session_scope(url) as s:
        return [e.detail for e in repo.audit_log(s) if e.action in ("export", "export_summary")]


def _target(tmp_path: Path, case: str) -> Path:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    return {"/dev/full": Path("/dev/full"), "folder": tmp_path, "unwritable": blocker / "sub" / "x.csv"}[case]


BAD = ["/dev/full", "folder", "unwritable"]


@pytest.mark.parametrize("case", BAD)
def test_cli_export_that_fails_is_not_audited(tmp_path: Path, case: str):
    sid = _session_with_bins(tmp_path)
    out = _target(tmp_path, case)
    rc, errors, stderr = run_cli(tmp_path, "export", str(sid), "-o", str(out))
    assert_one_line(rc, errors, stderr, str(out))
    assert _exports_audited(_url(tmp_path)) == []
    # The same command to a good path is audited once, with its path.
    good = tmp_path / "out" / "s.csv"
    rc, errors, stderr = run_cli(tmp_path, "export", str(sid), "-o", str(good))
    assert rc == 0, stderr[-2000:]
    assert good.read_text().startswith("session_id,")
    (row,) = _exports_audited(_url(tmp_path))
    assert row["path"] == str(good) and row["rows"] == 2


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("fn", ["export_session", "export_selection", "export_summary", "export_therapy"])
def test_service_export_that_fails_is_not_audited(tmp_path: Path, settings, case: str, fn: str):
    sid = _session_with_bins(tmp_path)
    url = _url(tmp_path)
    out = _target(tmp_path, case)
    with pytest.raises(exports.ExportWriteError, match=str(out)):
        getattr(exports, fn)(url, operator(), sid, "csv", sink=exports.FileSink(out))
    assert _exports_audited(url) == []
    if case == "unwritable":
        assert (tmp_path / "a_file").read_text() == "x"  # nothing touched on the way
    good = tmp_path / f"{fn}.csv"
    got = getattr(exports, fn)(url, operator(), sid, "csv", sink=exports.FileSink(good))
    assert good.read_bytes() == got.data and len(_exports_audited(url)) == 1


def test_a_file_whose_audit_row_did_not_commit_is_removed(tmp_path: Path, settings, monkeypatch):
    """Written, then the commit fails: the export created the file, so it takes it back."""
    import services.exports as mod

    sid = _session_with_bins(tmp_path)
    url = _url(tmp_path)
    real_scope = mod.scope

    class CommitFails(RuntimeError):
        pass

    from contextlib import contextmanager

    @contextmanager
    def failing_scope(u):
        with real_scope(u) as s:
            yield s
            raise CommitFails("database went away at commit")

    monkeypatch.setattr(mod, "scope", failing_scope)
    out = tmp_path / "new.csv"
    with pytest.raises(CommitFails):
        exports.export_session(url, operator(), sid, "csv", sink=exports.FileSink(out))
    assert not out.exists()
    assert _exports_audited(url) == []
    # An existing file is not deleted on such a failure (it was the user's before).
    out.write_text("mine")
    with pytest.raises(CommitFails):
        exports.export_session(url, operator(), sid, "csv", sink=exports.FileSink(out))
    assert out.exists()


def _reports_audited(url: str) -> list[dict]:
    with session_scope(url) as s:
        return [e.detail for e in repo.audit_log(s) if e.action == "report"]


@pytest.mark.parametrize("case", BAD)
def test_cli_report_that_fails_to_write_is_not_audited(tmp_path: Path, case: str):
    """A PDF report is an export too: one line naming the path, and no row saying it was made."""
    sid = _session_with_bins(tmp_path)
    out = _target(tmp_path, case)
    rc, errors, stderr = run_cli(tmp_path, "report", "session", str(sid), "-o", str(out))
    assert_one_line(rc, errors, stderr, str(out))
    assert "report" in errors[0]
    assert _reports_audited(_url(tmp_path)) == []
    good = tmp_path / "out" / "r.pdf"
    rc, errors, stderr = run_cli(tmp_path, "report", "session", str(sid), "-o", str(good))
    assert rc == 0, stderr[-2000:]
    assert good.read_bytes().startswith(b"%PDF")
    (row,) = _reports_audited(_url(tmp_path))
    assert row["kind"] == "class" and row["bytes"] == good.stat().st_size
