"""What a personal model version was saved with, in the words a clinician reads.

Reads the JSON metrics stored beside each version (``recognition.personal.personalize.FitReport``
as written by ``clinic.personalise.personalize_person``): the out-of-fold scores, the population
comparison on the labels both models can output (or why there is none), and each label's share
of every tagged session before and after personalisation. Plain dicts in, rows out: the CLI,
the clinician page and the PDF report share these so they never disagree. Metrics of versions
saved before the comparison was restricted (no ``comparison_labels``) are shown as they were
stored, marked as such.
"""

from __future__ import annotations

import pandas as pd

SCORE_COLUMNS = ["model", "labels", "bins", "macro_f1", "balanced_accuracy", "coverage"]
SHARE_COLUMNS = ["session", "label", "tagged", "before", "after"]
_MODEL_NAMES = {"population": "population", "population_calibrated": "population, calibrated to the child",
                "personal_compared": "personal"}  # fmt: skip


def _num(v) -> float | None:
    return None if v is None else float(v)


def is_legacy(metrics: dict) -> bool:
    """Saved before the comparison on shared labels (its population score may be over labels it cannot output)."""
    return "comparison_labels" not in (metrics or {})


def comparison_note(metrics: dict) -> str:
    """One sentence: what was compared on which labels, or why the population model is not compared."""
    m = metrics or {}
    if is_legacy(m):
        return ("saved before the comparison was restricted to labels both models output: its population "
                "score may count labels the population model cannot say")  # fmt: skip
    if m.get("population_omitted"):
        return f"population model not compared: {m['population_omitted']}"
    labels = ", ".join(m.get("comparison_labels") or [])
    return f"compared on the labels both models can output ({labels}), {m.get('comparison_bins', 0)} tagged bins"


def scores_frame(metrics: dict) -> pd.DataFrame:
    """Out-of-fold scores: the personal model on all its labels, then the comparison rows (if any)."""
    m = metrics or {}
    rows = []
    p = m.get("personal") or {}
    if p:
        rows.append({"model": "personal, all labels", "labels": ", ".join(m.get("labels") or []),
                     "bins": m.get("n_bins"), "macro_f1": _num(p.get("macro_f1")), "balanced_accuracy": _num(p.get("balanced_accuracy")),
                     "coverage": _num(p.get("coverage"))})  # fmt: skip
    legacy = is_legacy(m)
    for key, name in _MODEL_NAMES.items():
        sc = m.get("personal" if legacy and key == "personal_compared" else key)
        if not isinstance(sc, dict) or (legacy and key == "personal_compared"):
            continue
        rows.append({"model": name + (" (as stored)" if legacy else ""),
                     "labels": ", ".join(m.get("comparison_labels") or m.get("labels") or []),
                     "bins": m.get("comparison_bins") if not legacy else m.get("n_bins"),
                     "macro_f1": _num(sc.get("macro_f1")), "balanced_accuracy": _num(sc.get("balanced_accuracy")),
                     "coverage": _num(sc.get("coverage"))})  # fmt: skip
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def shares_frame(metrics: dict, session_id: int | None = None) -> pd.DataFrame:
    """Each label's share (0..1) of a session: as tagged, before (population) and after (personal:
    out of fold on a tagged session; on a session without tags, which the model never saw, its
    labels there and ``tagged`` None); one row per label. ``session_id``: that session only (empty
    when the version has no shares for it)."""
    shares = (metrics or {}).get("shares") or {}
    rows = []
    for sid, sh in sorted(shares.items(), key=lambda kv: int(kv[0])):
        if session_id is not None and int(sid) != int(session_id):
            continue
        tagged = sh.get("tagged")  # None: a session without tags (held out whole; nothing to compare with)
        labels = dict.fromkeys([*sh.get("after", {}), *(tagged or {}), *sh.get("before", {})])
        for lab in labels:
            rows.append({"session": int(sid), "label": lab,
                         "tagged": None if tagged is None else tagged.get(lab, 0.0),
                         "before": sh.get("before", {}).get(lab, 0.0), "after": sh.get("after", {}).get(lab, 0.0)})
    return pd.DataFrame(rows, columns=SHARE_COLUMNS)


def shares_line(metrics: dict, session_id: int) -> str:
    """``session 3 (97 bins): tagged calm 35%, ... | before ... | after ...`` for text output."""
    sh = ((metrics or {}).get("shares") or {}).get(str(session_id)) or {}

    def part(d: dict) -> str:
        return ", ".join(f"{k} {v:.0%}" for k, v in d.items()) or "-"

    tagged = "not tagged" if sh.get("tagged") is None else f"tagged {part(sh['tagged'])}"
    return (f"session {session_id} ({sh.get('bins', 0)} bins): {tagged} | "
            f"before {part(sh.get('before', {}))} | after {part(sh.get('after', {}))}")  # fmt: skip


def version_label(version: int) -> str:
    """A version as the picker lists it: never with its active state, which changes under a kept selection
    (Streamlit keeps a picked option by its text: "v1 (active)" stayed picked, and shown, after v2 became
    active)."""
    return f"v{int(version)}"


def picker_title(models: pd.DataFrame) -> str:
    """The version picker's title, saying which version is active, from the same frame as the versions table."""
    active = [int(v) for v in models.loc[models["active"].astype(bool), "version"]] if len(models) else []
    return f"Version (active: {', '.join(version_label(v) for v in active)})" if active \
        else "Version (none active: the population model labels the child)"  # fmt: skip
