"""``affectline groups vocabulary``: a group's tag vocabulary (labels, keys, kinds, the calm label).

The operations are ``services.vocabulary``'s, shared with the dashboard; every change is audited
with the operating-system user (and the ``--as`` claim)."""

from __future__ import annotations

import click


def _ctx():
    from cli.common import acting, database_url

    return database_url(), acting()


def _echo(items) -> None:
    for it in items:
        click.echo(f"{it.label}\t{it.key}\t{it.kind.value}" + ("\tcalm" if it.calm else ""))


@click.group("vocabulary")
def vocabulary() -> None:
    """Tag vocabulary per group: behaviour labels with their key in the review player and their kind
    (state: the key starts and ends it; point: one instant)."""


@vocabulary.command("list")
@click.argument("group")
def vocabulary_list(group: str) -> None:
    """GROUP's labels: label, key, kind, and which is the calm/none label."""
    from services import vocabulary as vc

    url, actor = _ctx()
    try:
        items = vc.group_vocabulary(url, actor, group)
        custom = vc.is_customised(url, actor, group)
    except (LookupError, ValueError, PermissionError) as e:
        raise click.ClickException(str(e)) from None
    click.echo("label\tkey\tkind\tcalm")
    _echo(items)
    if not custom:
        click.echo(f"group {group}: the kind's default vocabulary (default)", err=True)


@vocabulary.command("set")
@click.argument("group")
@click.argument("label")
@click.option("--key", default=None, help="One letter or digit (needed for a new label).")
@click.option("--kind", type=click.Choice(["state", "point"]), default=None, help="state (start and end) or point.")
@click.option("--calm", is_flag=True, help="Make it the calm/none label (the previous one loses the mark).")
def vocabulary_set(group: str, label: str, key: str | None, kind: str | None, calm: bool) -> None:
    """Add LABEL to GROUP's vocabulary, or change its key, kind or calm mark. Audited."""
    from services import vocabulary as vc

    url, actor = _ctx()
    try:
        _echo(vc.set_label(url, actor, group, label, key, kind, True if calm else None))
    except (LookupError, ValueError, PermissionError) as e:
        raise click.ClickException(str(e)) from None


@vocabulary.command("remove")
@click.argument("group")
@click.argument("label")
def vocabulary_remove(group: str, label: str) -> None:
    """Take LABEL out of GROUP's vocabulary (tags already made with it keep it). Audited."""
    from services import vocabulary as vc

    url, actor = _ctx()
    try:
        _echo(vc.remove_label(url, actor, group, label))
    except (LookupError, ValueError, PermissionError) as e:
        raise click.ClickException(str(e)) from None


@vocabulary.command("reset")
@click.argument("group")
def vocabulary_reset(group: str) -> None:
    """Back to the kind's default vocabulary. Audited."""
    from services import vocabulary as vc

    url, actor = _ctx()
    try:
        _echo(vc.reset_vocabulary(url, actor, group))
    except (LookupError, ValueError, PermissionError) as e:
        raise click.ClickException(str(e)) from None
