"""The session's audited export box (csv or parquet of its bins), on the class page and the therapy page."""

from __future__ import annotations

import streamlit as st

from dashboard import actions
from dashboard.safe import md_text


def show(url: str, viewer, sid: int, rows: str) -> None:
    """The audited export of a session's bins (csv or parquet), on the class and the therapy page alike."""
    st.subheader("Export")
    st.caption(f"{rows} Every export is recorded in the audit log with your name.")
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    fmt = c1.radio("Format", ["csv", "parquet"], horizontal=True, key="export_format")
    key = f"export_{sid}_{fmt}"
    if c2.button("Prepare export", key="export_button"):
        try:
            st.session_state[key] = actions.export_session(url, viewer, sid, fmt)
        except (LookupError, PermissionError) as e:
            st.error(md_text(e))
    if (export := st.session_state.get(key)) is not None:
        st.download_button(f"Download {md_text(export.file_name)} ({export.n_rows} rows)", export.data,
                           file_name=export.file_name, mime=export.mime, key="download_button")  # fmt: skip
