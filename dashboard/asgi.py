"""The dashboard as an ASGI app: Streamlit's ``app.py`` plus our own routes (``streamlit run`` finds ``app``).

Streamlit (1.67) serves with Starlette; ``st.App`` is its documented way to add routes beside the
app's (here the review-copy video route, ``dashboard.review_route``, and the charts' plotly.js,
``dashboard.plot``). ``dashboard/serve.py`` runs this
file with ``streamlit run``, so the options and config files are those of ``streamlit run app.py``.
"""

import streamlit as st

from dashboard import plot, review_route

app = st.App("app.py", routes=[*review_route.ROUTES, *plot.ROUTES])
