"""What every command needs: the database (migrated on first use) and who is acting."""

from __future__ import annotations

import click

from affectline.settings import get_settings
from services.actor import Actor, operator


def database_url() -> str:
    from services.db import _migrated

    url = get_settings().resolved_database_url
    _migrated(url)  # cheap when up to date; a fresh clone needs no separate step
    return url


def acting() -> Actor:
    """The operator at this terminal, with the ``--as`` claim given to ``affectline`` if any."""
    ctx = click.get_current_context(silent=True)
    claim = (ctx.find_root().obj or {}).get("claim") if ctx is not None else None
    return operator(claim)


def actor_name() -> str:
    """The audit trail's name for the operator (OS user, and their ``--as`` claim)."""
    return acting().audit_name
