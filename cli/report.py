"""``affectline report``: the PDF reports of ``services.reports`` written to a file (audited)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from cli.common import acting, database_url


def _made(make, output: Path) -> None:
    """Run ``make(sink)``: the PDF is written inside the audited transaction, so a failed write is not audited."""
    from services.exports import ExportWriteError, FileSink

    try:
        out = make(FileSink(output, "report"))
    except (LookupError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except ExportWriteError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{out.kind} report, {out.pages} pages -> {output}", err=True)


@click.group()
def report() -> None:
    """PDF reports: a class or child session, or a group over a date range."""


@report.command("session")
@click.argument("session_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def report_session(session_id: int, output: Path) -> None:
    """A class report (classroom session) or a child report (therapy session)."""
    from services.reports import session_report

    _made(lambda sink: session_report(database_url(), acting(), session_id, sink=sink), output)


@report.command("group")
@click.argument("group")
@click.option("--from", "since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="First day (YYYY-MM-DD, UTC).")
@click.option("--to", "until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last day, included.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def report_group(group: str, since: datetime | None, until: datetime | None, output: Path) -> None:
    """The sessions of GROUP (a name or id) recorded between --from and --to."""
    from services.reports import group_report

    _made(lambda sink: group_report(database_url(), acting(), group, since.date() if since else None,
                                    until.date() if until else None, sink=sink), output)  # fmt: skip


@report.command("groups")
@click.argument("groups", nargs=-1, required=True)
@click.option("--from", "since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="First day (YYYY-MM-DD, UTC).")
@click.option("--to", "until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Last day, included.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def report_groups(groups: tuple[str, ...], since: datetime | None, until: datetime | None, output: Path) -> None:
    """One PDF for several GROUPS (names or ids) over the same date range; audited per group."""
    from services.group_reports import groups_report

    _made(lambda sink: groups_report(database_url(), acting(), list(groups), since.date() if since else None,
                                     until.date() if until else None, sink=sink), output)  # fmt: skip


@report.command("scheduled")
@click.option("--every", type=click.Choice(["daily", "weekly", "monthly"]), default=None,
              help="The period (default: AFFECTLINE_GROUP_REPORTS_EVERY).")
@click.option("--today", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Run as if on this day (UTC).")
def report_scheduled(every: str | None, today: datetime | None) -> None:
    """What the beat runs: every group's report of the period just ended, into AFFECTLINE_GROUP_REPORTS_DIR
    (default DATA_DIR/reports); reports already there are left alone. For cron too."""
    from affectline.settings import get_settings
    from services.group_reports import scheduled_reports

    settings = get_settings()
    every = every or settings.group_reports_every
    if every == "off":
        raise click.ClickException("scheduled reports are off: set AFFECTLINE_GROUP_REPORTS_EVERY or give --every")
    out_dir = settings.group_reports_dir or settings.data_dir / "reports"
    try:
        run = scheduled_reports(database_url(), out_dir, every, today.date() if today else None)
    except (LookupError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    for p in run.written:
        click.echo(f"wrote {p}")
    for p in run.skipped:
        click.echo(f"already there: {p}", err=True)
    click.echo(f"{every} reports {run.since} to {run.until}: {len(run.written)} written, {len(run.skipped)} already there",
               err=True)  # fmt: skip
