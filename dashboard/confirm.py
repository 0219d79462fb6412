"""Every delete in the dashboard takes two steps: the button only asks, and says what would go.

``ask`` shows the delete button; its click remembers which target it was for and shows the
impact sentence (``services.deletions``) with a "Yes, delete" and a "Cancel" button. Only the
second click runs the deletion; choosing another target forgets the question.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from dashboard.safe import md_text


def ask(key: str, label: str, target: object, impact: Callable[[], str], run: Callable[[], None], *,
        disabled: bool = False, container=None, help: str | None = None, yes: str = "Yes, delete") -> None:  # fmt: skip
    """A delete button for ``target`` that asks before ``run()``; ``impact()`` says what would be removed.
    ``yes`` is the confirming button's text (a revoke is not a delete)."""
    where = container or st
    state = f"{key}_asked"
    if where.button(md_text(label), key=key, disabled=disabled, help=md_text(help) if help else None):
        st.session_state[state] = target
    if disabled or st.session_state.get(state, object()) != target:
        return
    try:
        sentence = impact()
    except (LookupError, ValueError, PermissionError) as e:
        st.session_state.pop(state, None)
        st.error(md_text(e))
        return
    st.warning(md_text(sentence))
    c1, c2, _ = st.columns([1, 1, 3])
    if c1.button(md_text(yes), key=f"{key}_confirm", type="primary"):
        st.session_state.pop(state, None)
        run()
    if c2.button("Cancel", key=f"{key}_cancel"):
        st.session_state.pop(state, None)
        st.rerun()
