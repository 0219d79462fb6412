"""``affectline audit``: read and export the audit trail (the export is audited too)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

_filters = [
    click.option("--actor", default=None, help="Only rows whose actor contains this."),
    click.option("--action", default=None, help="Only rows whose action contains this (e.g. login_failed)."),
    click.option("--target", default=None, help="An id like session:3, or a name (then or now)."),
    click.option("--since", type=click.DateTime(["%Y-%m-%d"]), default=None, help="From this day (UTC)."),
    click.option("--until", type=click.DateTime(["%Y-%m-%d"]), default=None, help="Up to this day (UTC), inclusive."),
    click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True),
]


def filters(fn):
    for opt in reversed(_filters):
        fn = opt(fn)
    return fn


def _filter(actor, action, target, since, until, limit):
    from services.admin import AuditFilter as Filter

    day = lambda d: None if d is None else date(d.year, d.month, d.day)  # noqa: E731
    return Filter(actor=actor, action=action, target=target, since=day(since), until=day(until), limit=limit)


@click.group()
def audit() -> None:
    """The audit trail: who exported, changed or deleted what, and every login."""


@audit.command("list")
@filters
@click.option("--words", is_flag=True, help="Each row as id, local time (AFFECTLINE_TIMEZONE), actor and what happened in words.")
def audit_list(words: bool, **kw) -> None:
    """Matching rows, newest first: id, time (UTC), actor, action, target, its name (tabs, newlines and
    other control characters in a field shown as escapes: \\t, \\n, \\x1b; a backslash as \\\\)."""
    from affectline.lines import one_line
    from cli.common import acting, database_url
    from services.admin import audit_log

    df = audit_log(database_url(), acting(), _filter(**kw))
    if words:
        from affectline.settings import get_settings
        from services.audit_text import describe, local_time, zone

        tz = zone(get_settings().timezone)
        for r in df.itertuples():
            t = r.at.to_pydatetime() if hasattr(r.at, "to_pydatetime") else r.at
            click.echo("\t".join([str(r.id), local_time(t, tz), one_line(r.actor),
                                   describe(r.action, r.target, r.target_label, r.detail)]))  # fmt: skip
        return
    for r in df.itertuples():
        when = r.at.strftime("%Y-%m-%d %H:%M:%S") if r.at is not None else ""
        # Every stored field escaped (affectline.lines): a value with a newline or tab cannot fake a row.
        fields = (r.actor, r.action, r.target, r.target_label)
        click.echo("\t".join([str(r.id), when, *map(one_line, fields)]))


@audit.command("export")
@filters
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def audit_export(output: Path, **kw) -> None:
    """Matching rows as CSV (formula-safe; detail as JSON). The export is itself an audit row."""
    from cli.common import acting, database_url
    from services.admin import export_audit_file
    from services.exports import ExportWriteError

    try:  # written inside the audited transaction: a failed write leaves no 'export_audit' row
        n = export_audit_file(database_url(), acting(), _filter(**kw), output)
    except ExportWriteError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{n} rows -> {output}", err=True)
