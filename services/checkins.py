"""Worth a check-in: per-student moments where a student's own pattern stood out (no ranking of students).

A class-wide moment (``services.summaries.moments``) needs much of the class to move; five students
distracted together at 20:00-23:00 in a class of thirty never move the class mean far enough. Here
each student is compared with themselves only, so the list says *whom to look at, and when*, without
ordering students against each other.

The rule, precisely (per student, per state of ``CheckInRule``; defaults in ``DEFAULT_RULES``):

* **Readable bins** only: the face visible, the readability gate did not mark the bin unreadable
  (``readable`` <= 0; NULL = stored before the gate, counted as read) and the state's probability is
  present. A bin not visible or not readable has no share: it never counts as distraction or fatigue,
  and it does not count against the student either.
* **Baseline**: the median of the student's per-bin probability of the state over their readable
  bins of the session. A student with fewer than ``min_baseline_seconds`` readable seconds gets no
  baseline and no check-in (nothing to compare with).
* **Share**: the mean probability over a centred window of ``window_seconds``, taken over the
  window's readable bins, and only where at least ``min_readable_share`` of the window is readable.
* **Raised**: share >= baseline + ``margin``. A run of consecutive raised bins, widened by half a
  window each side, is cut to its first and last readable bin whose own value is raised (the window
  smears edges); it is a **check-in** if it
  then lasts at least ``min_seconds``. It reports its start (the moment to watch), end, the mean value
  over its readable bins and the baseline.

Check-ins come in time order (then by name): never sorted by size, so the list is no ranking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from services.summaries import format_clock, unreadable

STATE_WORDS = {"distraction": "distracted", "fatigue": "tired", "confusion": "confused"}


@dataclass(frozen=True)
class CheckInRule:
    """How one state is looked for in each student's own timeline."""

    state: str  # a column of the bins: an academic emotion's probability
    margin: float = 0.2  # raised: the share at least this far above the student's own median (probability units)
    min_seconds: float = 60.0  # a run must last this long
    window_seconds: float = 30.0  # the share is the mean over this centred window of readable bins
    min_readable_share: float = 0.5  # ... where at least this part of the window is readable
    min_baseline_seconds: float = 180.0  # readable seconds a student needs before their baseline means anything


DEFAULT_RULES: tuple[CheckInRule, ...] = (
    CheckInRule("distraction"),
    CheckInRule("fatigue", min_seconds=120.0, window_seconds=60.0),
)


@dataclass(frozen=True)
class CheckIn:
    """One student's run of a state well above their own usual level."""

    person_id: int
    person_label: str
    state: str
    t_start: float  # the moment to watch
    t_end: float
    level: float  # mean share of the state over the run's readable bins
    usual: float  # the student's own median over the session

    @property
    def duration(self) -> float:
        return self.t_end - self.t_start

    @property
    def person_ids(self) -> tuple[int, ...]:  # as a class Moment: the students a view should draw
        return (self.person_id,)

    @property
    def words(self) -> str:
        return STATE_WORDS.get(self.state, self.state)

    def describe(self) -> str:
        return (f"{self.person_label}: {self.words} from {format_clock(self.t_start)} to {format_clock(self.t_end)} "
                f"({self.duration / 60:.1f} min; {self.state} {self.level:.2f} vs their usual {self.usual:.2f})")  # fmt: skip


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def readable_values(bins: pd.DataFrame, column: str) -> np.ndarray:
    """(n,) the column's value where the bin is readable (visible, not gated, value present), NaN elsewhere."""
    if bins.empty or column not in bins:
        return np.full(len(bins), np.nan)
    v = pd.to_numeric(bins[column], errors="coerce").to_numpy(float)
    ok = bins["face_visible"].fillna(False).astype(bool).to_numpy() & ~unreadable(bins) & np.isfinite(v)
    return np.where(ok, v, np.nan)


def _person_checkins(t: np.ndarray, v: np.ndarray, step: float, rule: CheckInRule) -> list[tuple[float, float, float, float]]:
    """(t_start, t_end, level, usual) of one student's raised runs; ``t`` a full grid of bin starts."""
    ok = np.isfinite(v)
    if ok.sum() * step < rule.min_baseline_seconds:
        return []
    usual = float(np.median(v[ok]))
    w = max(1, int(round(rule.window_seconds / step)))
    s = pd.Series(v)
    mean = s.rolling(w, center=True, min_periods=1).mean().to_numpy(float)  # NaN (not readable) left out
    share_ok = pd.Series(ok.astype(float)).rolling(w, center=True, min_periods=1).mean().to_numpy(float)
    raised = np.isfinite(mean) & (share_ok >= rule.min_readable_share) & (mean >= usual + rule.margin)
    out = []
    high = ok & (np.nan_to_num(v, nan=-np.inf) >= usual + rule.margin)
    for a, b in _runs(raised):
        # The window smears a run's edges (in or out by up to half of it): its ends are its own raised bins.
        a, b = max(0, a - w // 2), min(len(v), b + w // 2)
        hit = np.flatnonzero(high[a:b])
        if not len(hit):
            continue
        a, b = a + int(hit[0]), a + int(hit[-1]) + 1
        if (b - a) * step < rule.min_seconds - 1e-9:
            continue
        inside = v[a:b][np.isfinite(v[a:b])]
        out.append((float(t[a]), float(t[b - 1] + step), float(inside.mean()) if len(inside) else float(mean[a:b].mean()),
                    usual))  # fmt: skip
    return out


def checkins(bins: pd.DataFrame, bin_seconds: float = 1.0, rules: Sequence[CheckInRule] = DEFAULT_RULES) -> list[CheckIn]:
    """Every student's check-ins (module docstring), in time order, then by name and state."""
    if bins.empty:
        return []
    step = float(bin_seconds)
    labels = (bins[["person_id", "person_label"]].drop_duplicates("person_id").set_index("person_id")["person_label"]
              if "person_label" in bins else pd.Series(dtype=object))  # fmt: skip
    t_all = pd.to_numeric(bins["t_start"], errors="coerce").to_numpy(float)
    t0 = float(np.nanmin(t_all))
    n = int(round((float(np.nanmax(t_all)) - t0) / step)) + 1
    grid = t0 + step * np.arange(n)
    found: list[CheckIn] = []
    values = {r.state: readable_values(bins, r.state) for r in rules}
    pids = bins["person_id"].astype(int).to_numpy()
    idx_all = np.clip(np.round((t_all - t0) / step).astype(int), 0, n - 1)
    for pid in np.unique(pids):
        mine = pids == pid
        idx = idx_all[mine]
        label = str(labels.get(pid, f"Person {pid}"))
        for rule in rules:
            v = np.full(n, np.nan)  # a bin with no row (not in frame) is not readable either
            v[idx] = values[rule.state][mine]
            for a, b, level, usual in _person_checkins(grid, v, step, rule):
                found.append(CheckIn(int(pid), label, rule.state, a, b, level, usual))
    return sorted(found, key=lambda c: (c.t_start, c.person_label, c.state))


def relabel(found: Sequence[CheckIn], names: dict[int, str]) -> list[CheckIn]:
    """The same check-ins under the persons' current names (a rename shows at once)."""
    import dataclasses

    return [dataclasses.replace(c, person_label=names.get(c.person_id, c.person_label)) for c in found]


def _rules_words(rules: Sequence[CheckInRule]) -> str:
    parts = [f"{STATE_WORDS.get(r.state, r.state).replace('tired', 'tiredness').replace('distracted', 'distraction')}"
             f" ({r.min_seconds / 60:g} min or more)" for r in rules]  # fmt: skip
    return " or ".join(parts)


def intro(therapy: bool, rules: Sequence[CheckInRule] = DEFAULT_RULES) -> str:
    """What the check-in list is, in the session's words: a lesson's students, or a therapy session's child."""
    if therapy:
        return (f"Moments where the child's own pattern stood out: a run of {_rules_words(rules)} well above their own "
                "usual level in this session, counted over readable moments only. The child is compared with "
                "themselves only; in time order.")  # fmt: skip
    return (f"Students whose own pattern stood out: a run of {_rules_words(rules)} well above their own usual level "
            "in this lesson, counted over readable moments only. Each student is compared with themselves, never "
            "with the class; in time order.")  # fmt: skip


def none_found(therapy: bool) -> str:
    """The line when nothing stood out."""
    return ("Nothing in this session stood out against the child's own usual level." if therapy
            else "No student's own pattern stood out against their usual level in this lesson.")  # fmt: skip


def line(c: CheckIn) -> str:
    """One check-in as a sentence (the same for a student and a child: "their usual", never "the class")."""
    return (f"{c.person_label} looked {c.words} for {c.duration / 60:.1f} min ({c.state} {c.level:.2f} vs their "
            f"usual {c.usual:.2f}).")  # fmt: skip
