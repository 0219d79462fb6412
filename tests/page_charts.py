"""The charts a page drew under AppTest, and a drag across one of them (what the browser would send).

Every chart is ``dashboard.plot.chart``: a ``st.components.v2`` element whose data carries the figure's JSON.
"""

from __future__ import annotations

import json

from streamlit.components.v2.bidi_component.constants import EVENT_DELIM
from streamlit.proto.WidgetStates_pb2 import WidgetStates
from streamlit.runtime.state.session_state import STREAMLIT_INTERNAL_KEY_PREFIX
from streamlit.testing.v1 import AppTest

from dashboard import plot


def _elements(at: AppTest) -> list:
    return [el for el in at.get("bidi_component") if el.proto.component_name == plot.COMPONENT]


def _key(el) -> str:
    return el.proto.id.split("-", 2)[-1]  # the element id is "$$ID-<hash>-<key>"


def chart_data(at: AppTest) -> list[dict]:
    """What each chart was given: figure (the parsed {data, layout}), config, select."""
    out = []
    for el in _elements(at):
        d = json.loads(el.proto.json)
        out.append({**d, "figure": json.loads(d["figure"]), "key": _key(el)})
    return out


def specs(at: AppTest) -> list[dict]:
    """Each chart's figure, in page order."""
    return [d["figure"] for d in chart_data(at)]


def drag(at: AppTest, key: str, x0, x1) -> AppTest:
    """Rerun the page as after a box drawn on chart ``key`` from x0 to x1 (the trigger chart.js sends)."""
    (el,) = [el for el in _elements(at) if _key(el) == key]
    states = at._tree.get_widget_states()
    ws = states.widgets.add()
    ws.id = f"{STREAMLIT_INTERNAL_KEY_PREFIX}_{el.proto.id}{EVENT_DELIM}events"
    ws.json_trigger_value = json.dumps([{"event": "selection", "value": {"x": [x0, x1]}}])
    return at._run(WidgetStates(widgets=list(states.widgets)))
