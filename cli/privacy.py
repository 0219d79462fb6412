"""``affectline consent`` and ``affectline retention``: who may be stored per person, and for how long.

Every change is audited with the operating-system user (and the ``--as`` claim). The rules
are ``storage.consent``'s and ``storage.retention``'s; the operations ``services.privacy``'s,
shared with the dashboard's Consent & retention page.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click


@contextmanager
def _errors() -> Iterator[None]:
    """Lookup, validation and permission errors become one-line CLI errors."""
    try:
        yield
    except (LookupError, ValueError, PermissionError) as e:
        raise click.ClickException(str(e)) from None


def _ctx():
    from cli.common import acting, database_url

    return database_url(), acting()


def _purpose(thumbnails: bool) -> str:
    return "thumbnails" if thumbnails else "analysis"


@click.group()
def consent() -> None:
    """Consent per person (analysis, thumbnails) and per group (required or not)."""


@consent.command("grant")
@click.argument("person_id", type=int)
@click.option("--thumbnails", is_flag=True, help="Consent for face thumbnails (needs analysis consent first).")
@click.option("--scope", "scope_text", default="", help="What was agreed, as on the signed form.")
@click.option("--expires", default=None, metavar="YYYY-MM-DD", help="Valid until the end of this day (UTC).")
def consent_grant(person_id: int, thumbnails: bool, scope_text: str, expires: str | None) -> None:
    """Record that PERSON_ID's guardian agreed (you are recorded as who recorded it)."""
    from services.privacy import grant_consent

    url, actor = _ctx()
    with _errors():
        row = grant_consent(url, actor, person_id, _purpose(thumbnails), scope_text, expires)
    until = f" until {row.expires_at:%Y-%m-%d}" if row.expires_at and not thumbnails else ""
    click.echo(f"person {person_id} ({row.label}): {_purpose(thumbnails)} consent recorded{until}", err=True)


@consent.command("withdraw")
@click.argument("person_id", type=int)
@click.option("--thumbnails", is_flag=True, help="Withdraw only thumbnails consent (deletes the thumbnails).")
@click.confirmation_option(prompt="Withdraw consent and delete this person's stored timelines?")
def consent_withdraw(person_id: int, thumbnails: bool) -> None:
    """Record a "no" for PERSON_ID and delete what it covered (audited).

    Analysis: their time bins, features, tracks, embeddings, tags and personal models go (their
    bins stay counted, anonymously, in the class curve). Works without a prior grant: that
    records a refusal."""
    from services.privacy import withdraw_consent, withdrawal_warning

    url, actor = _ctx()
    with _errors():
        counts = withdraw_consent(url, actor, person_id, _purpose(thumbnails))
        warning = "" if thumbnails else withdrawal_warning(url, actor, person_id)
    gone = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "nothing was stored"
    click.echo(f"person {person_id}: {_purpose(thumbnails)} consent withdrawn; deleted {gone}", err=True)
    if warning:
        click.echo(f"warning: {warning}", err=True)


@consent.command("list")
@click.option("--group", default=None, help="Only this group (name or id).")
def consent_list(group: str | None) -> None:
    """The consent register: person, group, analysis and thumbnails state, who recorded it, expiry."""
    from services.privacy import consent_register

    url, actor = _ctx()
    with _errors():
        rows = consent_register(url, actor, group)
    if not rows:
        click.echo("no enrolled persons", err=True)
        return
    click.echo("id\tgroup\tperson\tanalysis\tthumbnails\tstored\trecorded_by\trecorded_at\texpires\tscope")
    for r in rows:
        click.echo("\t".join([
            str(r.person_id), r.group or "-", r.label, r.analysis, r.thumbnails,
            "per person" if r.stored else "class only", r.recorded_by or "-",
            f"{r.recorded_at:%Y-%m-%d}" if r.recorded_at else "-", f"{r.expires_at:%Y-%m-%d}" if r.expires_at else "-",
            r.scope or "-",
        ]))  # fmt: skip


@consent.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check the file and say what it would change; store nothing.")
def consent_import(file: Path, dry_run: bool) -> None:
    """Record the answers of a CSV file (columns: person_id or group + person, purpose, answer yes/no/empty,
    scope, expires YYYY-MM-DD). All or nothing: one line per bad row, and nothing stored if any row is bad.
    A "no" deletes what the consent covered, as `consent withdraw` does. Audited."""
    from services import consent_csv

    url, actor = _ctx()
    try:
        raw = file.read_bytes()
    except OSError as e:
        raise click.ClickException(f"{file}: cannot read ({e.strerror or e})") from None
    try:
        out = (consent_csv.preview if dry_run else consent_csv.import_csv)(url, actor, raw, str(file))
    except consent_csv.ConsentFileError as e:
        for p in e.problems:
            click.echo(f"{file}: {p.line()}", err=True)
        raise click.ClickException(f"{file}: {len(e.problems)} problem(s); nothing was stored") from None
    except (LookupError, ValueError, PermissionError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{file}: {'would change' if dry_run else 'imported'}: {out.sentence()}", err=True)


@consent.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--group", default=None, help="Only this group (name or id).")
def consent_export(output: Path, group: str | None) -> None:
    """The consent register as CSV (the format `consent import` reads; formula-safe). Audited."""
    from services.consent_csv import export_csv

    def write(data: bytes) -> None:
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_bytes(data)
        except OSError as e:
            raise click.ClickException(f"{output}: cannot write the export ({e.strerror or e})") from None

    url, actor = _ctx()
    with _errors():
        _, n = export_csv(url, actor, group, write=write)
    click.echo(f"{n} rows -> {output}", err=True)


@consent.command("require")
@click.argument("group")
@click.option("--off", is_flag=True, help="Stop requiring consent in GROUP.")
def consent_require(group: str, off: bool) -> None:
    """Require consent in GROUP: its analyses store per-person timelines only for persons with
    valid consent; everyone else counts only toward the class curve."""
    from services.privacy import require_consent

    url, actor = _ctx()
    with _errors():
        require_consent(url, actor, group, not off)
    click.echo(f"group {group}: consent {'not ' if off else ''}required for per-person timelines", err=True)


@click.group()
def retention() -> None:
    """How long each group keeps its sessions, and deleting the expired ones."""


@retention.command("set")
@click.argument("group")
@click.argument("days", required=False, type=click.IntRange(min=1))
@click.option("--forever", is_flag=True, help="Keep GROUP's sessions forever (the default).")
def retention_set(group: str, days: int | None, forever: bool) -> None:
    """Keep GROUP's sessions DAYS days after they were added (then `retention run` deletes them)."""
    from services.privacy import set_retention

    if (days is None) == (not forever):
        raise click.UsageError("give DAYS or --forever")
    url, actor = _ctx()
    with _errors():
        set_retention(url, actor, group, None if forever else days)
    click.echo(f"group {group}: sessions kept {'forever' if forever else f'{days} days'}", err=True)


@retention.command("list")
def retention_list() -> None:
    """Each group's policy: consent required, retention, sessions held and expired now."""
    from services.privacy import policies

    url, actor = _ctx()
    with _errors():
        rows = policies(url, actor)
    click.echo("group_id\tgroup\tkind\tconsent_required\tretention_days\tsessions\texpired")
    for r in rows:
        click.echo(f"{r.group_id}\t{r.group}\t{r.kind}\t{'yes' if r.consent_required else 'no'}\t"
                   f"{r.retention_days if r.retention_days else 'forever'}\t{r.sessions}\t{r.expired}")  # fmt: skip


@retention.command("run")
@click.option("--group", default=None, help="Only this group (name or id).")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def retention_run(group: str | None, dry_run: bool) -> None:
    """Delete expired sessions with everything derived from them (audited). For cron; the
    worker's beat schedule runs the same deletion."""
    from affectline.settings import get_settings
    from services.privacy import run_retention

    url, actor = _ctx()
    with _errors():
        rep = run_retention(url, actor, get_settings().data_dir, group, dry_run=dry_run)
    for d in rep.deleted:
        click.echo(f"session {d.session_id}\t{'would be deleted' if dry_run else f'{d.total} rows deleted'}"
                   f"\t{len(d.files)} file(s)")  # fmt: skip
    for sid in rep.skipped:
        click.echo(f"session {sid}\tbeing analysed: left for the next run", err=True)
    for f in rep.files_failed:
        click.echo(f"could not remove {f}", err=True)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {len(rep.deleted)} expired session(s), {rep.total_rows} rows, "
               f"{len(rep.files_removed)} file(s)", err=True)  # fmt: skip
    if rep.files_failed:
        raise SystemExit(1)


@click.group()
def groups() -> None:
    """Groups and their video-review setting (whether analyses keep a review copy of the video)."""


@groups.command("list")
def groups_list() -> None:
    """Each group: kind and whether its analyses keep a review copy (and whether that is the kind's default)."""
    from services.privacy import group_rows

    url, actor = _ctx()
    with _errors():
        rows = group_rows(url, actor)
    click.echo("group_id\tgroup\tkind\tvideo_review")
    for r in rows:
        how = "default" if r.video_review_set is None else "set"
        click.echo(f"{r.group_id}\t{r.group}\t{r.kind}\t{'on' if r.video_review else 'off'} ({how})")


@groups.command("video-review")
@click.argument("group")
@click.argument("setting", type=click.Choice(["on", "off", "default"]))
def groups_video_review(group: str, setting: str) -> None:
    """Let GROUP's analyses keep a browser-playable review copy of each recording (on), or not (off);
    'default' = on for therapy groups, off for classrooms. Audited. Off stops new copies; copies
    already kept stay until their session is deleted or expires."""
    from services.privacy import set_video_review

    url, actor = _ctx()
    with _errors():
        on = set_video_review(url, actor, group, {"on": True, "off": False, "default": None}[setting])
    click.echo(f"group {group}: video review {'on' if on else 'off'}" + (" (the kind's default)" if setting == "default" else ""),
               err=True)  # fmt: skip


def _vocabulary_command():
    from cli.vocabulary import vocabulary

    return vocabulary


groups.add_command(_vocabulary_command())
