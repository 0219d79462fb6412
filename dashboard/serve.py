"""Start the dashboard: ``streamlit run dashboard/asgi.py`` (``app.py`` plus our routes) in this process,
plus the cache warm-up.

    python dashboard/serve.py [streamlit run options...]     (what ``affectline dashboard`` runs)

Streamlit has no start hook and its caches are per process, so the warm-up (``dashboard.warmup``) has
to run inside the server's own process: this starts it as a background thread, then hands over to
Streamlit's own command line (``streamlit run``: same options, same config files as before).
Before that it adds the route that sets the HttpOnly login cookie (``dashboard.cookies``) and stops
uvicorn from taking the client address from X-Forwarded-For (``dashboard.auth.client_address`` does,
for configured trusted proxies only).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "asgi.py"  # st.App("app.py") with the review-copy route (dashboard.review_route)
if __name__ == "__main__":  # run as a file: its folder is first on sys.path, the repository root may be absent
    sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "dashboard"]


def main(argv: list[str] | None = None) -> None:
    from streamlit.web import cli as stcli

    from affectline.settings import get_settings
    from dashboard import cookies, warmup

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    lg = logging.getLogger("affectline.dashboard")
    lg.addHandler(handler)
    lg.setLevel(logging.INFO)
    lg.propagate = False
    settings = get_settings()
    warmup.start(settings.resolved_database_url, settings.dashboard_warm_sessions, settings.dashboard_user)
    # The client address is the socket's peer (uvicorn would otherwise believe X-Forwarded-For from any
    # loopback peer); dashboard.auth reads the header itself, from AFFECTLINE_TRUSTED_PROXIES only.
    os.environ["FORWARDED_ALLOW_IPS"] = ""
    cookies.install()  # the HttpOnly login cookie's route
    args = list(sys.argv[1:] if argv is None else argv)
    stcli.main(["run", str(APP), *args], prog_name="streamlit")


if __name__ == "__main__":
    main()
