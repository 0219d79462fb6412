"""The warm-up at dashboard start (dashboard.warmup, dashboard.serve): what it warms, under whose keys, and that
the session page's first open after it is a cache hit."""

from __future__ import annotations

from dashboard.safe import shown

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import auth, charts, data, warmup
from storage import access
from storage.db import session_scope
from storage.models import Recording, Role, User
from tests.page_charts import specs
from tests.browser import free_port, wait_healthy
from tests.dashboard_factories import seed

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture()
def seeded(db_url):
    ids = seed(db_url)
    data.invalidate()
    yield db_url, ids
    data.invalidate()


def _group_of(url: str) -> dict[int, int]:
    with session_scope(url) as s:
        return dict(s.query(Recording.id, Recording.group_id).all())


def test_targets_are_each_visible_to_the_key_they_are_warmed_under(seeded):
    url, ids = seeded
    groups = _group_of(url)
    pairs = warmup.targets(url, 100)
    keys = {k for k, _ in pairs}
    # admin (every group), the teacher (class-a), the clinician (child-x): one key per distinct set of groups
    assert keys == {None, (ids.groups["class-a"],), (ids.groups["child-x"],)}
    for k, sid in pairs:
        assert k is None or groups[sid] in k, (k, sid)
    assert ((ids.groups["class-a"],), ids.sessions["history"]) not in pairs
    assert [sid for _, sid in pairs] == sorted((sid for _, sid in pairs), reverse=True)  # newest first
    assert len(warmup.targets(url, 2)) == 2
    assert warmup.targets(url, 0) == []


def test_a_disabled_user_or_a_role_without_sessions_adds_no_key(seeded):
    url, ids = seeded
    with session_scope(url) as s:
        s.get(User, ids.users["teacher"]).disabled = True
        other = access.create_user(s, "teacher-b", Role.teacher)
        access.grant(s, other.id, ids.groups["class-b"])
    keys = {k for k, _ in warmup.targets(url, 100)}
    assert (ids.groups["class-a"],) not in keys  # its only user is disabled
    assert (ids.groups["class-b"],) in keys


def test_first_open_after_the_warm_up_builds_no_chart(seeded, monkeypatch):
    url, ids = seeded
    teacher, sid = ids.users["teacher"], ids.sessions["maths"]

    def no_build(*a, **k):
        raise AssertionError("the chart was built on open, not taken from the warm-up")

    def open_page() -> AppTest:
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state[auth.USER_KEY] = teacher
        at.query_params["session"] = str(sid)
        at.run()
        return at.switch_page("views/session.py").run()

    monkeypatch.setattr(charts, "class_overview_figure", no_build)
    cold = open_page()  # without the warm-up the page has to build its chart: the guard fires
    assert any("not taken from the warm-up" in str(e.value) for e in cold.exception)
    monkeypatch.undo()

    data.invalidate()
    n, secs = warmup.warm(url, 100)
    assert n >= 3 and secs > 0  # each analysed session under each key that sees it
    monkeypatch.setattr(charts, "class_overview_figure", no_build)
    at = open_page()
    assert not at.exception, [e.value for e in at.exception]
    assert len(specs(at)) == 1


def test_warmed_entries_are_not_served_to_another_group(seeded):
    url, ids = seeded
    warmup.warm(url, 100)
    with session_scope(url) as s:
        other = access.create_user(s, "teacher-b", Role.teacher)
        access.grant(s, other.id, ids.groups["class-b"])
        uid = other.id
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[auth.USER_KEY] = uid
    at.query_params["session"] = str(ids.sessions["maths"])
    at.run()
    at.switch_page("views/session.py").run()
    assert not at.exception
    assert any("does not exist or is not visible" in shown(w.value) for w in at.warning)
    assert all("maths" not in t.value for t in at.title)


def test_the_launcher_answers_health_and_warms_in_the_server_process(seeded, settings):
    """dashboard/serve.py (what `affectline dashboard` runs): Streamlit up, the warm-up done inside it."""
    url, _ = seeded
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "AFFECTLINE_DASHBOARD_USER"}
    env.update({"AFFECTLINE_DATA_DIR": str(settings.data_dir), "PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen([sys.executable, str(ROOT / "dashboard" / "serve.py"), "--server.headless", "true",
                             "--server.address", "127.0.0.1", "--server.port", str(port),
                             "--server.fileWatcherType", "none"],
                            cwd="/", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_healthy(port, proc)
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(warmup.DONE in ln for ln in lines):
            lines.append(proc.stdout.readline())
        done = [ln for ln in lines if warmup.DONE in ln]
        assert done, "".join(lines)[-2000:]
        expected = len(warmup.targets(url, settings.dashboard_warm_sessions))  # every seeded session is analysed
        assert expected == settings.dashboard_warm_sessions and f" {expected} session view(s)" in done[0], done
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_affectline_dashboard_runs_the_launcher(monkeypatch, settings):
    """`affectline dashboard` (make demo, docker/compose.yml) execs dashboard/serve.py with Streamlit's own options."""
    from click.testing import CliRunner

    from cli.main import main

    seen = []
    monkeypatch.setattr(os, "execv", lambda exe, argv: seen.append(argv))
    r = CliRunner().invoke(main, ["dashboard", "--port", "8599", "--address", "0.0.0.0"])
    assert r.exit_code == 0, r.output
    argv = seen[0]
    assert argv[0] == sys.executable and argv[1] == str(ROOT / "dashboard" / "serve.py")
    assert argv[argv.index("--server.port") + 1] == "8599" and argv[argv.index("--server.address") + 1] == "0.0.0.0"
