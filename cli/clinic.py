"""``affectline tags``, ``affectline personalize`` and ``affectline models``: the clinicians' commands.

Attached to the main CLI lazily by ``cli.main`` (names ``tags``, ``personalize``, ``models``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from affectline.settings import get_settings


def _url() -> str:
    from cli.common import database_url as url

    return url()


def _default_author() -> str:
    """The name a tag shows as its author: the ``--as`` claim, else the OS user."""
    from cli.common import acting
    from services.actor import os_user

    return acting().claim or os_user()


def _me(author: str | None = None):
    """The acting operator; an ``--author`` other than the default is recorded beside the OS user
    (``Actor.author``), never instead of it, and becomes the tag's author."""
    import dataclasses

    from cli.common import acting

    me = acting()
    return me if author is None or author == _default_author() else dataclasses.replace(me, author=author)


def _seconds(text: str) -> float:
    """Seconds from '75', '75.5', '1:15' or '0:01:15'."""
    try:
        parts = [float(p) for p in str(text).strip().split(":")]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a time (seconds, mm:ss or hh:mm:ss)") from None
    if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
        raise click.BadParameter(f"{text!r} is not a time (seconds, mm:ss or hh:mm:ss)")
    total = 0.0
    for p in parts:
        total = total * 60 + p
    return total


class _Time(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):
        return value if isinstance(value, float) else _seconds(value)


TIME = _Time()
author_option = click.option(
    "--author", default=_default_author, show_default="the --as claim, else your OS user",
    help="Who is making this change (recorded in the audit log beside your OS user)."
)


def _fail(e: Exception) -> click.ClickException:
    # args[0], not str(e): str() of a LookupError subclass such as KeyError adds quotes.
    return click.ClickException(str(e.args[0]) if e.args else str(e))


def _tag_line(t) -> str:
    flags = (" baseline" if t.is_baseline else "") + (" DELETED" if t.deleted else "")
    note = f"\t{t.note}" if t.note else ""
    return (f"{t.uid[:8]}\tv{t.version}\tsession {t.session_id}\tperson {t.person_id}\t{t.t_start:.1f}-{t.t_end:.1f}s\t"
            f"{t.label}{flags}\t{t.author}{note}")  # fmt: skip


# --- tags ----------------------------------------------------------------------------------


@click.group()
def tags() -> None:
    """Clinician tags: labelled time ranges of a person in a session (versioned, kept across re-analysis)."""


@tags.command("add")
@click.argument("session_id", type=int)
@click.argument("person")
@click.argument("start", type=TIME)
@click.argument("end", type=TIME)
@click.argument("label")
@click.option("--note", default="", help="Free text.")
@click.option("--baseline", is_flag=True, help="Mark this range as the child's neutral baseline.")
@author_option
def tags_add(
    session_id: int, person: str, start: float, end: float, label: str, note: str, baseline: bool, author: str
) -> None:
    """Tag PERSON (id or label) in SESSION_ID from START to END (seconds or mm:ss) with LABEL."""
    from services import tags as tag_service

    try:
        t = tag_service.add(_url(), _me(author), session_id, person, start, end, label, note=note, is_baseline=baseline)
    except (ValueError, LookupError) as e:
        raise _fail(e) from None
    click.echo(t.uid)


@tags.command("list")
@click.option("--person", default=None, help="Person id or label.")
@click.option("--session", "session_id", type=int, default=None)
@click.option("--deleted", is_flag=True, help="Include deleted tags.")
@click.option("--history", "uid", default=None, help="Every version of one tag (uid or unique prefix).")
def tags_list(person: str | None, session_id: int | None, deleted: bool, uid: str | None) -> None:
    """The latest version of each tag."""
    from services import tags as tag_service

    try:
        if uid:
            rows = tag_service.history(_url(), _me(), uid)
        else:
            rows = tag_service.current(_url(), _me(), session_id, person, include_deleted=deleted)
    except (ValueError, LookupError) as e:
        raise _fail(e) from None
    for t in rows:
        click.echo(_tag_line(t))


@tags.command("edit")
@click.argument("uid")
@click.option("--start", type=TIME, default=None)
@click.option("--end", type=TIME, default=None)
@click.option("--label", default=None)
@click.option("--note", default=None)
@click.option("--baseline/--no-baseline", default=None)
@author_option
def tags_edit(uid: str, start, end, label, note, baseline, author: str) -> None:
    """Change a tag (adds a new version; earlier versions are kept)."""
    from services import tags as tag_service

    try:
        t = tag_service.edit(_url(), _me(author), uid, t_start=start, t_end=end, label=label, note=note,
                             is_baseline=baseline)  # fmt: skip
    except (ValueError, LookupError) as e:
        raise _fail(e) from None
    click.echo(_tag_line(t))


@tags.command("delete")
@click.argument("uid")
@click.option("--reason", default="", help="Recorded in the audit log.")
@author_option
def tags_delete(uid: str, reason: str, author: str) -> None:
    """Delete a tag (soft: a deleted version is added and the deletion audited)."""
    from services import tags as tag_service

    try:
        t = tag_service.delete(_url(), _me(author), uid, reason)
    except (ValueError, LookupError) as e:
        raise _fail(e) from None
    click.echo(f"deleted {t.uid} (v{t.version})", err=True)


@tags.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--session", "session_id", type=int, default=None,
              help="The session an ELAN or BORIS file's events belong to (those files do not name it).")
@click.option("--format", "fmt", type=click.Choice(["csv", "eaf", "boris"]), default=None,
              help="Default: .eaf is ELAN; a CSV with a 'Behavior' column is BORIS; else Affectline's own CSV.")
@click.option("--person", default=None, help="ELAN/BORIS: whom rows without a person are for (id or label).")
@author_option
def tags_import(path: Path, session_id: int | None, fmt: str | None, person: str | None, author: str) -> None:
    """Import tags from Affectline's CSV (columns: session_id, person_id or person, t_start, t_end, label[, note,
    is_baseline, uid]), an ELAN .eaf file or a BORIS aggregated-events CSV (with --session): all rows or none."""
    fmt = fmt or _guess(path)
    if fmt in ("eaf", "boris"):
        return _import_coded(path, session_id, fmt, person, author)
    from services import tags as tag_service

    try:
        r = tag_service.import_csv(_url(), _me(author), path)
    except (ValueError, LookupError) as e:
        raise _fail(e) from None
    click.echo(f"{r.added} added, {r.updated} updated, {r.unchanged} unchanged", err=True)


def _guess(path: Path) -> str:
    if path.suffix.lower() == ".eaf":
        return "eaf"
    with open(path, "rb") as f:
        head = f.read(4096).split(b"\n", 1)[0].decode("utf-8", "replace")
    return "boris" if "Behavior" in head and "session_id" not in head else "csv"


def _import_coded(path: Path, session_id: int | None, fmt: str, person: str | None, author: str) -> None:
    from services import tag_formats

    if session_id is None:
        raise click.UsageError(f"{path}: an {'ELAN' if fmt == 'eaf' else 'BORIS'} file does not name its session; "
                               "give --session")  # fmt: skip
    try:
        pid = tag_formats.session_person(_url(), _me(author), session_id, person) if person else None
        r = tag_formats.import_tags(_url(), _me(author), session_id, path.read_bytes(), path.name, fmt,
                                    person_id=pid, author=author)  # fmt: skip
    except tag_formats.TagFileError as e:
        for line in e.lines:
            click.echo(f"{path.name}: {line}", err=True)
        raise click.ClickException(f"{path.name}: {len(e.lines)} problem(s); nothing imported") from None
    except (ValueError, LookupError, PermissionError) as e:
        raise _fail(e) from None
    click.echo(r.phrase(), err=True)


@tags.command("export")
@click.argument("session_arg", metavar="[SESSION]", type=int, required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Default: stdout.")
@click.option("--format", "fmt", type=click.Choice(["csv", "eaf", "boris"]), default="csv", show_default=True,
              help="csv: Affectline's own (re-importable, with uids); eaf: ELAN; boris: BORIS aggregated events.")
@click.option("--person", default=None, help="Person id or label.")
@click.option("--session", "session_id", type=int, default=None)
@click.option("--deleted", is_flag=True, help="Include deleted tags (csv only).")
@author_option
def tags_export(session_arg: int | None, output: Path | None, fmt: str, person: str | None, session_id: int | None,
                deleted: bool, author: str) -> None:  # fmt: skip
    """Export the latest version of each tag (of SESSION, or --session / --person) as CSV, ELAN or BORIS (audited)."""
    from services import tags as tag_service

    session_id = session_arg if session_arg is not None else session_id
    url, me = _url(), _me(author)
    try:
        if fmt != "csv":
            from services import tag_formats
            from services.exports import FileSink

            if session_id is None:
                raise click.UsageError(f"--format {fmt} exports one session: give SESSION")
            pid = tag_formats.session_person(url, me, session_id, person) if person else None
            sink = FileSink(output, "tag file") if output is not None else None
            out = tag_formats.export_tags(url, me, session_id, fmt, person_id=pid, sink=sink)
            if output is None:
                sys.stdout.buffer.write(out.data)
                sys.stdout.flush()
            n = out.n_tags
        elif output is None:
            n = tag_service.export_csv(url, me, sys.stdout, person, session_id, include_deleted=deleted)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            with open(output, "w", newline="", encoding="utf-8") as f:
                n = tag_service.export_csv(url, me, f, person, session_id, include_deleted=deleted)
    except (ValueError, LookupError, PermissionError, OSError) as e:  # OSError: the file could not be written
        raise _fail(e) from None
    click.echo(f"{n} tags" + (f" -> {output}" if output else ""), err=True)


@tags.group("vocab")
def vocab() -> None:
    """The tag vocabulary: the 7 expressions plus the clinic's labels."""


@vocab.command("list")
def vocab_list() -> None:
    from services import tags as tag_service

    for name in tag_service.vocabulary(_url()):
        click.echo(name + ("" if name not in tag_service.BUILTIN_LABELS else "\t(built in)"))


@vocab.command("add")
@click.argument("name")
@author_option
def vocab_add(name: str, author: str) -> None:
    """Add a clinic label (e.g. 'anxiety', 'self-soothing')."""
    from services import tags as tag_service

    try:
        click.echo(tag_service.add_label(_url(), _me(author), name))
    except ValueError as e:
        raise _fail(e) from None


# --- personalisation ------------------------------------------------------------------------


def format_report(out) -> str:
    """The out-of-fold report a clinician reads before trusting a model."""
    from services import model_report

    r = out.report
    m = r.to_dict()
    lines = [
        f"person {out.person_id}: {r.n_bins} bins from {out.n_tags} tags, labels {', '.join(r.labels)}",
        f"{r.n_folds}-fold cross-validation over {r.n_groups} groups ({r.grouping or 'grouped by tag run'}); "
        f"penalty l2={r.l2:g}; every figure out of fold",
        f"{'':38}{'macro-F1':>9}{'bal.acc':>9}{'coverage':>10}  labels",
    ]
    for row in model_report.scores_frame(m).itertuples():
        lines.append(f"{row.model:38}{row.macro_f1:9.3f}{row.balanced_accuracy:9.3f}{row.coverage:10.1%}  {row.labels}")
    lines.append(model_report.comparison_note(m))
    lines.append(f"coverage = bins not 'uncertain' at threshold {r.threshold:g}")
    lines.append("share of each session (tagged | population before | personal after, out of fold):")
    lines += ["  " + model_report.shares_line(m, int(sid)) for sid in sorted(r.shares, key=int)]
    if r.dropped_labels:
        lines.append("left out: " + "; ".join(f"{k} ({v})" for k, v in r.dropped_labels.items()))
    state = "active" if out.activated else "stored, NOT active"
    lines.append(f"model version {out.version}: {state} ({out.reason}); {out.n_rescored} bins re-scored")
    return "\n".join(lines)


@click.command()
@click.argument("person")
@click.option("--activate/--no-activate", default=None,
              help="Activate regardless / never. Default: only if not worse than the population model.")  # fmt: skip
@click.option("--queue", "use_queue", is_flag=True, help="Run as a Celery task (prints the job id) instead of here.")
@click.option("--json", "as_json", is_flag=True, help="Print the cross-validation report as JSON.")
@author_option
def personalize(person: str, activate: bool | None, use_queue: bool, as_json: bool, author: str) -> None:
    """Fit PERSON's model from their tags, report cross-validated scores against the population model, activate."""
    from recognition.personal import NotEnoughTags
    from services import clinic

    url = _url()
    me = _me(author)
    if use_queue:  # the dashboard's way: a job row, one audit row, sent by name (services.clinic)
        try:
            job_id = clinic.request_personalisation_by_ref(url, get_settings(), me, person, activate)
        except (LookupError, ValueError, RuntimeError) as e:
            raise _fail(e) from None
        click.echo(job_id)
        return
    from clinic.personalise import personalize_person

    try:
        out = personalize_person(url, person, get_settings(), activate=activate, actor=me.audit_name)
    except (NotEnoughTags, LookupError, ValueError) as e:
        raise _fail(e) from None
    # a new model version is stored even when not activated
    clinic.record_local_personalisation(url, me, out.person_id, out.version, out.activated, out.n_rescored)
    if as_json:
        click.echo(json.dumps({"person_id": out.person_id, "version": out.version, "activated": out.activated,
                               "n_rescored": out.n_rescored, **out.report.to_dict()}, indent=2))  # fmt: skip
    else:
        click.echo(format_report(out))


@click.group()
def models() -> None:
    """Per-person models: list versions, roll back, recalibrate."""


@models.command("list")
@click.argument("person")
def models_list(person: str) -> None:
    """A person's baseline and personal model versions with their cross-validated scores."""
    from services import clinic

    try:
        pid, rows = clinic.model_versions(_url(), _me(), person)
    except LookupError as e:
        raise _fail(e) from None
    if not rows:
        click.echo(f"person {pid} has no models: the population model scores them", err=True)
    for m in rows:
        mt = m.metrics or {}
        score = ""
        if m.kind == "personal" and "personal" in mt:
            pop = (mt.get("population") or {}).get("macro_f1")
            mine = (mt.get("personal_compared") or mt["personal"]).get("macro_f1")
            vs = (f"; on {', '.join(mt.get('comparison_labels') or mt.get('labels') or [])}: personal "
                  f"{mine:.3f} vs population {pop:.3f}") if pop is not None else "; population not compared"
            score = f"\tmacro-F1 {mt['personal']['macro_f1']:.3f}{vs}\t{mt.get('n_tags', '?')} tags"
        elif m.kind == "baseline":
            score = f"\t{mt.get('n_bins', '?')} bins ({mt.get('source', '?')})"
        when = m.created_at.strftime("%Y-%m-%d %H:%M") if m.created_at else ""
        click.echo(f"{m.kind}\tv{m.version}\t{'ACTIVE' if m.active else ''}\t{when}{score}")


@models.command("rollback")
@click.argument("person")
@click.argument("version", type=int, required=False)
@author_option
def models_rollback(person: str, version: int | None, author: str) -> None:
    """Activate personal model VERSION (default: the one before the active one) and re-score."""
    from clinic.personalise import rollback_person

    try:
        v, n = rollback_person(_url(), person, version, get_settings(), actor=_me(author).audit_name)
    except (ValueError, LookupError) as e:
        raise _fail(e) from None
    click.echo(f"personal model v{v} active; {n} bins re-scored", err=True)


@models.command("calibrate")
@click.argument("person")
@author_option
def models_calibrate(person: str, author: str) -> None:
    """Refit PERSON's neutral baseline (from baseline tags, else all their bins) and re-score."""
    from clinic.calibrate import calibrate_person

    try:
        v, b = calibrate_person(_url(), person, actor=_me(author).audit_name)
    except (ValueError, LookupError) as e:
        raise _fail(e) from None
    click.echo(f"baseline v{v} active: {b.n_bins} bins ({b.source})", err=True)
