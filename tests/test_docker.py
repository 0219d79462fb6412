"""docker/compose.yml and the Dockerfile, checked as far as a machine without Docker allows.

The compose file is validated against a schema of the parts of the Compose specification it
uses (stricter than the spec: every long-running service needs a health check), its
AFFECTLINE_* values are read by our own Settings, every service's command is parsed by the
real CLI, and the entry points the images run (the Celery app, the dashboard script) import.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yml"

_HEALTH = {
    "type": "object",
    "required": ["test", "interval", "retries"],
    "properties": {
        "test": {"type": "array", "minItems": 2, "items": {"type": "string"},
                 "prefixItems": [{"enum": ["CMD", "CMD-SHELL"]}]},  # fmt: skip
        "interval": {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"},
        "timeout": {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"},
        "start_period": {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"},
        "retries": {"type": "integer", "minimum": 1},
    },
    "additionalProperties": False,
}
_SERVICE = {
    "type": "object",
    "anyOf": [{"required": ["image"]}, {"required": ["build"]}],
    "properties": {
        "image": {"type": "string"},
        "build": {"type": "object", "required": ["context"], "properties": {"context": {"type": "string"},
                                                                            "dockerfile": {"type": "string"}}},  # fmt: skip
        "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "environment": {"type": "object", "additionalProperties": {"type": "string"}},
        "volumes": {"type": "array", "items": {"type": "string", "pattern": r"^[\w.-]+:/[\w/.-]*$"}},
        "ports": {"type": "array", "items": {"type": "string", "pattern": r"^(\d+\.\d+\.\d+\.\d+:)?\d+:\d+$"}},
        "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
        "profiles": {"type": "array", "items": {"type": "string"}},
        "depends_on": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["condition"],
            "properties": {"condition": {"enum": ["service_started", "service_healthy", "service_completed_successfully"]}},
        }},  # fmt: skip
        "healthcheck": _HEALTH,
        "deploy": {"type": "object"},
    },
    "additionalProperties": False,
}
SCHEMA = {
    "type": "object",
    "required": ["services", "volumes"],
    "properties": {"services": {"type": "object", "additionalProperties": _SERVICE}, "volumes": {"type": "object"}},
    "patternProperties": {"^x-": {}},
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # anchors and merge keys resolved as Compose does


def test_compose_file_matches_the_schema(compose):
    jsonschema.validate(compose, SCHEMA)


def test_services_and_health_checks(compose):
    sv = compose["services"]
    assert {"postgres", "redis", "migrate", "worker", "worker-gpu", "beat", "dashboard"} <= set(sv)
    for name, spec in sv.items():
        if name != "migrate":
            assert "healthcheck" in spec, f"{name} has no health check"
    assert sv["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert sv["redis"]["healthcheck"]["test"][1:] == ["redis-cli", "ping"]
    assert "--appendonly" in sv["redis"]["command"]  # queued messages survive a restart
    for name in ("worker", "worker-gpu", "dashboard"):
        deps = sv[name]["depends_on"]
        assert deps["postgres"]["condition"] == deps["redis"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
    assert "migrate" not in sv["migrate"].get("depends_on", {})  # no self-dependency through the anchor
    # GPU workers: their own queue, a GPU reservation, CUDA; CPU workers take the default queue;
    # both take the control queue (plans and links) first.
    gpu = sv["worker-gpu"]
    assert gpu["command"][gpu["command"].index("--queues") + 1] == "affectline.control,gpu"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert gpu["environment"]["AFFECTLINE_DEVICE"] == "cuda" and gpu["profiles"] == ["gpu"]
    cpu = sv["worker"]
    assert cpu["command"][cpu["command"].index("--queues") + 1] == "affectline.control,celery"
    assert cpu["environment"]["AFFECTLINE_TORCH_THREADS"] == "1"


def test_environment_values_are_valid_settings(compose, monkeypatch):
    from affectline.settings import load_settings

    for name, spec in compose["services"].items():
        env = {k: v for k, v in spec.get("environment", {}).items() if k.startswith("AFFECTLINE_")}
        for k in list(__import__("os").environ):
            if k.startswith("AFFECTLINE_"):
                monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        if env:
            s = load_settings()  # raises SettingsError naming a bad value
            assert s.resolved_broker_url.startswith("redis://redis:6379")
            assert s.resolved_database_url.startswith("postgresql+psycopg://")


def test_every_command_parses_with_the_real_cli(compose):
    import click

    from cli.main import main

    for name, spec in compose["services"].items():
        cmd = spec.get("command", [])
        if not cmd or cmd[0] != "affectline":
            continue
        ctx = main.make_context("affectline", list(cmd[1:2]), resilient_parsing=True)
        sub = main.get_command(ctx, cmd[1])
        assert sub is not None, f"{name}: no command {cmd[1]!r}"
        try:
            sub.make_context(cmd[1], list(cmd[2:]), parent=ctx)
        except click.UsageError as e:
            pytest.fail(f"{name}: {' '.join(cmd)}: {e}")


def test_worker_name_matches_its_health_check(compose, monkeypatch, tmp_path):
    """The health check pings affectline-1@$HOSTNAME: the worker execs celery as PID 1 with that name."""
    import os

    from click.testing import CliRunner

    from cli.main import main

    seen = []
    monkeypatch.setattr(os, "execv", lambda exe, argv: seen.append(argv))
    monkeypatch.setattr(os, "getpid", lambda: 1)
    r = CliRunner().invoke(main, ["worker", "--queues", "gpu"], env={"AFFECTLINE_DATA_DIR": str(tmp_path)})
    assert r.exit_code == 0, r.output
    argv = seen[0]
    assert argv[argv.index("-n") + 1] == "affectline-1@%h"
    assert argv[argv.index("-Q") + 1] == "affectline.control,gpu"  # the control queue is never left out
    for name in ("worker", "worker-gpu"):
        assert "-d affectline-1@$$HOSTNAME" in compose["services"][name]["healthcheck"]["test"][1]


def test_worker_default_queues_put_the_control_queue_first(monkeypatch, tmp_path):
    """Plans and links overtake chunks only where the worker consumes the control queue, first."""
    import os

    from click.testing import CliRunner

    from affectline.settings import get_settings
    from cli.main import main

    seen = []
    monkeypatch.setattr(os, "execv", lambda exe, argv: seen.append(argv))
    env = {"AFFECTLINE_DATA_DIR": str(tmp_path)}  # a fresh database (the worker command migrates it)
    for args, env_extra, want in (([], {}, "affectline.control,celery"),
                                  ([], {"AFFECTLINE_CHUNK_QUEUE": "gpu"}, "affectline.control,celery,gpu"),
                                  (["--queues", "celery,affectline.control"], {}, "affectline.control,celery")):  # fmt: skip
        get_settings.cache_clear()  # the settings are read once per process
        r = CliRunner().invoke(main, ["worker", *args], env={**env, **env_extra})
        get_settings.cache_clear()
        assert r.exit_code == 0, r.output
        argv = seen.pop()
        assert argv[argv.index("-Q") + 1] == want, (args, env_extra)


def test_dockerfile_copies_every_package_and_entry_points_import():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    packages = re.search(r"include = \[([^\]]*)\]", pyproject).group(1)
    for pkg in re.findall(r'"(\w+)\*"', packages):
        assert re.search(rf"^COPY {pkg} {pkg}$", text, re.M), f"Dockerfile does not copy {pkg}/"
    assert (ROOT / "dashboard" / "app.py").is_file()
    code = (
        "import tasks.app as t, cli.main, affectline.queue as q;"
        "names = set(t.app.tasks);"
        "assert {q.ANALYZE_TASK, q.CHUNK_TASK, q.LINK_TASK} <= names, names;"
        "compile(open('dashboard/app.py').read(), 'dashboard/app.py', 'exec'); print('ok')"
    )
    env = {"PATH": "/usr/bin:/bin", "AFFECTLINE_DATA_DIR": "/tmp/affectline-docker-test",
           "AFFECTLINE_BROKER_URL": "redis://redis:6379/0",
           "AFFECTLINE_DATABASE_URL": "postgresql+psycopg://affectline:affectline@postgres:5432/affectline"}  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-1500:]


def test_the_installed_package_has_every_file_the_code_reads(tmp_path):
    # The image runs `pip install .` (not editable): a file outside package-data is missing only there
    # (the expression heads and the dashboard's components were, until issue 19's review found it).
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")  # fmt: skip
    src = tmp_path / "src"
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-1500:]
    (whl,) = (tmp_path / "dist").glob("*.whl")
    inside = set(zipfile.ZipFile(whl).namelist())
    packages = re.findall(r'"(\w+)\*"', re.search(r"include = \[([^\]]*)\]", (ROOT / "pyproject.toml").read_text()).group(1))
    missing = [rel for rel in listed if rel.split("/", 1)[0] in packages and "/" in rel and rel not in inside]
    assert missing == [], missing
