"""Affectline dashboard entry script: ``streamlit run dashboard/app.py``.

Logs the user in (``dashboard.auth``), then shows only the pages their role allows.
Pages wire widgets to the tested modules ``dashboard.data`` (reads), ``dashboard.actions``
(writes, through ``services``), ``dashboard.viewcache`` and ``dashboard.charts``; nothing here
imports torch, ``recognition``, ``pipeline``, ``tasks`` or ``storage``.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from affectline.settings import get_settings
from dashboard import auth
from dashboard.safe import md_text

# The page scripts live in views/, not pages/: Streamlit treats a pages/ folder beside the entry
# script as the old multipage layout and, on a fresh server, would run a deep-linked page
# without this script (so without the login and the role filter below).
PAGES = (  # (file, title, icon, action the role needs)
    ("views/sessions.py", "Sessions", ":material/video_library:", "view_sessions"),
    ("views/session.py", "Session view", ":material/monitoring:", "view_sessions"),
    ("views/review.py", "Review & tags", ":material/sell:", "review"),
    ("views/people.py", "People", ":material/group:", "manage_people"),
    ("views/reports.py", "Reports & exports", ":material/picture_as_pdf:", "export"),
    ("views/admin.py", "Admin", ":material/admin_panel_settings:", "manage_users"),
    ("views/consent.py", "Consent & retention", ":material/verified_user:", "manage_privacy"),
)


def main() -> None:
    st.set_page_config(page_title="Affectline", page_icon=":material/monitoring:", layout="wide")
    settings = get_settings()
    url = settings.resolved_database_url
    viewer = auth.current_viewer(url, settings)
    auth.sync_cookie()
    if viewer is None:
        st.navigation(_login_pages(url, settings), position="hidden").run()
        return
    pages = [st.Page(path, title=title, icon=icon) for path, title, icon, action in PAGES if viewer.can(action)]
    with st.sidebar:
        st.markdown(f"**{md_text(viewer.username)}** · {viewer.role.value}")
        if st.button("Log out", key="logout"):
            auth.logout(url)
            st.rerun()
    st.navigation(pages).run()


def _login_pages(url: str, settings) -> list:
    """The login form under every page's address: a deep link opened before logging in shows the
    form, and after the login the same address (same page, same query) shows the page itself.
    (Streamlit identifies a page by its url_path, so the form and the page share an identity.)"""

    def form() -> None:
        auth.login_page(url, settings)

    return [st.Page(form, title="Log in", url_path=Path(path).stem, default=i == 0) for i, (path, *_) in enumerate(PAGES)]


if __name__ == "__main__":  # streamlit runs the script as __main__; importing it shows nothing
    main()
