"""``affectline persons``: the roster, and corrections that survive re-analysis (``services.people``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click


@contextmanager
def _errors() -> Iterator[None]:
    """The services' lookup and validation errors (consent refusals too) become one-line CLI errors."""
    try:
        yield
    except (LookupError, ValueError) as e:
        raise click.ClickException(str(e)) from None


def _ctx():
    from cli.common import acting, database_url

    return database_url(), acting()


@click.group()
def persons() -> None:
    """Enrolled persons and 'Unknown N' tracks: enrol, rename, merge, split, delete."""


@persons.command("list")
@click.option("--group", "group", default=None, help="Only this group (name or id).")
def persons_list(group: str | None) -> None:
    """One line per person: id, group, enrolled or not, name, tracks, sessions, embeddings."""
    from services import people

    url, me = _ctx()
    with _errors():
        rows = people.roster(url, me, group)
    if not rows:
        click.echo("no persons", err=True)
    for p in rows:
        state = "enrolled" if p.enrolled else "unnamed"
        if not p.enrolled and p.origin_session_id is not None:
            state = f"unknown (session {p.origin_session_id})"
        click.echo(
            f"{p.id}\t{p.group}\t{state}\t{p.label}\t"
            f"{p.n_tracks} tracks in {p.n_sessions} sessions\t{p.n_embeddings} embeddings"
        )


@persons.command("enroll")
@click.argument("session_id", type=int)
@click.argument("track_key", type=int)
@click.option("--name", required=True, help="The person's name in this group.")
def persons_enroll(session_id: int, track_key: int, name: str) -> None:
    """Enrol the person of track TRACK_KEY of session SESSION_ID under NAME."""
    from services import people

    url, me = _ctx()
    with _errors():
        p = people.enroll(url, me, session_id, track_key, name)
    click.echo(f"enrolled track {track_key} of session {session_id} as {p.label!r} (person {p.id})")


@persons.command("rename")
@click.argument("person_id", type=int)
@click.argument("name")
def persons_rename(person_id: int, name: str) -> None:
    """Rename PERSON_ID to NAME (an 'Unknown N' person becomes enrolled)."""
    from services import people

    url, me = _ctx()
    with _errors():
        p = people.rename(url, me, person_id, name)
    click.echo(f"person {p.id} is now {p.label!r} (enrolled)")


@persons.command("merge")
@click.argument("keep_id", type=int)
@click.argument("other_id", type=int)
def persons_merge(keep_id: int, other_id: int) -> None:
    """Merge person OTHER_ID into KEEP_ID (OTHER_ID is deleted)."""
    from services import people

    url, me = _ctx()
    with _errors():
        p = people.merge(url, me, keep_id, other_id)
    click.echo(f"merged person {other_id} into {p.label!r} (person {p.id})")


@persons.command("split")
@click.argument("session_id", type=int)
@click.argument("track_key", type=int)
@click.option("--name", default=None, help="Enrol the split-off part under this name.")
@click.option("--from", "t_start", type=float, default=None, help="Only the part from this time (s).")
@click.option("--to", "t_end", type=float, default=None, help="Only the part up to this time (s).")
def persons_split(
    session_id: int, track_key: int, name: str | None, t_start: float | None, t_end: float | None
) -> None:
    """Give track TRACK_KEY of SESSION_ID (or its part --from/--to) to a new person."""
    from services import people

    url, me = _ctx()
    with _errors():
        p = people.split(url, me, session_id, track_key, name=name, t_start=t_start, t_end=t_end)
    part = ""
    if t_start is not None or t_end is not None:
        a = "start" if t_start is None else f"{t_start:g}"
        b = "end" if t_end is None else f"{t_end:g} s"
        part = f" ({a} to {b})"
    click.echo(f"split track {track_key}{part} of session {session_id} off to {p.label!r} (person {p.id})")


@persons.command("delete")
@click.argument("person_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def persons_delete(person_id: int, yes: bool) -> None:
    """Delete PERSON_ID with their embeddings, tracks, timelines and tags (audited)."""
    from services import people

    url, me = _ctx()
    with _errors():
        label = people.person_label(url, me, person_id)
    if not yes:
        click.confirm(f"Delete {label!r} (person {person_id}) with all their timelines?", abort=True)
    with _errors():
        counts = people.delete(url, me, person_id)
    click.echo(
        f"deleted person {person_id}: {counts['tracks']} tracks, {counts['time_bins']} time bins, "
        f"{counts['person_embeddings']} embeddings, {counts['tags']} tags"
    )
