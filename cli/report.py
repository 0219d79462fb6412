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
