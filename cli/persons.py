"""``affectline persons``: the roster, and corrections that survive re-analysis."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@contextmanager
def _db() -> Iterator[Session]:
    """One transaction; the storage layer's lookup and validation errors become one-line CLI errors."""
    from cli.common import database_url as _url
    from storage.db import session_scope

    try:
        with session_scope(_url()) as s:
            yield s
    except (LookupError, ValueError) as e:
        raise click.ClickException(str(e)) from None


def _actor() -> str:
    from cli.common import actor_name as actor

    return actor()


@click.group()
def persons() -> None:
    """Enrolled persons and 'Unknown N' tracks: enrol, rename, merge, split, delete."""


@persons.command("list")
@click.option("--group", "group", default=None, help="Only this group (name or id).")
def persons_list(group: str | None) -> None:
    """One line per person: id, group, enrolled or not, name, tracks, sessions, embeddings."""
    from sqlalchemy import select

    from storage.models import Group
    from storage.people import list_persons

    with _db() as s:
        group_id = None
        if group is not None:
            g = s.scalar(select(Group).where(Group.name == group))
            if g is None and group.isdigit():
                g = s.get(Group, int(group))
            if g is None:
                names = ", ".join(s.scalars(select(Group.name).order_by(Group.name))) or "none yet"
                raise click.ClickException(f"group {group!r} does not exist; groups: {names}")
            group_id = g.id
        rows = list_persons(s, group_id)
        names = {g.id: g.name for g in s.scalars(select(Group))}
    if not rows:
        click.echo("no persons", err=True)
    for p in rows:
        state = "enrolled" if p.enrolled else "unnamed"
        if not p.enrolled and p.origin_session_id is not None:
            state = f"unknown (session {p.origin_session_id})"
        click.echo(
            f"{p.id}\t{names.get(p.group_id, '-')}\t{state}\t{p.label}\t"
            f"{p.n_tracks} tracks in {p.n_sessions} sessions\t{p.n_embeddings} embeddings"
        )


@persons.command("enroll")
@click.argument("session_id", type=int)
@click.argument("track_key", type=int)
@click.option("--name", required=True, help="The person's name in this group.")
def persons_enroll(session_id: int, track_key: int, name: str) -> None:
    """Enrol the person of track TRACK_KEY of session SESSION_ID under NAME."""
    from storage.people import enroll

    with _db() as s:
        p = enroll(s, session_id, track_key, name, _actor())
        line = f"enrolled track {track_key} of session {session_id} as {p.label!r} (person {p.id})"
    click.echo(line)


@persons.command("rename")
@click.argument("person_id", type=int)
@click.argument("name")
def persons_rename(person_id: int, name: str) -> None:
    """Rename PERSON_ID to NAME (an 'Unknown N' person becomes enrolled)."""
    from storage.people import rename

    with _db() as s:
        p = rename(s, person_id, name, _actor())
        line = f"person {p.id} is now {p.label!r} (enrolled)"
    click.echo(line)


@persons.command("merge")
@click.argument("keep_id", type=int)
@click.argument("other_id", type=int)
def persons_merge(keep_id: int, other_id: int) -> None:
    """Merge person OTHER_ID into KEEP_ID (OTHER_ID is deleted)."""
    from storage.people import merge

    with _db() as s:
        p = merge(s, keep_id, other_id, _actor())
        line = f"merged person {other_id} into {p.label!r} (person {p.id})"
    click.echo(line)


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
    from storage.people import split

    with _db() as s:
        p = split(s, session_id, track_key, _actor(), name=name, t_start=t_start, t_end=t_end)
        part = ""
        if t_start is not None or t_end is not None:
            a = "start" if t_start is None else f"{t_start:g}"
            b = "end" if t_end is None else f"{t_end:g} s"
            part = f" ({a} to {b})"
        line = f"split track {track_key}{part} of session {session_id} off to {p.label!r} (person {p.id})"
    click.echo(line)


@persons.command("delete")
@click.argument("person_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def persons_delete(person_id: int, yes: bool) -> None:
    """Delete PERSON_ID with their embeddings, tracks, timelines and tags (audited)."""
    from storage.models import Person
    from storage.people import delete_person

    with _db() as s:
        p = s.get(Person, person_id)
        if p is None:
            raise LookupError(f"person {person_id} does not exist")
        if not yes:
            click.confirm(f"Delete {p.label!r} (person {person_id}) with all their timelines?", abort=True)
        counts = delete_person(s, person_id, _actor())
    click.echo(
        f"deleted person {person_id}: {counts['tracks']} tracks, {counts['time_bins']} time bins, "
        f"{counts['person_embeddings']} embeddings, {counts['tags']} tags"
    )
