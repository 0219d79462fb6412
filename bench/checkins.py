"""What "worth a check-in" adds to a session's first view: ``services.checkins.checkins`` on the 90-minute,
30-student planted lesson, against the class-wide ``summaries.moments`` the page already computes (the
baseline), both measured here in the same run. Both are computed once per analysis and cached.

    PYTHONPATH=. python bench/checkins.py
"""

from __future__ import annotations

import time

from services import checkins, summaries
from tests.big_session import class_events, planted_bins, with_person_columns


def best_of(fn, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    bins = with_person_columns(planted_bins(30, 5400, class_events(90, 30), seed=1))
    base = best_of(lambda: summaries.moments(bins))
    mine = best_of(lambda: checkins.checkins(bins))
    found = checkins.checkins(bins)
    print(f"90 min x 30 students ({len(bins)} bins): moments {base:.3f} s (baseline), check-ins {mine:.3f} s "
          f"= {mine / base:.2f}x the baseline; {len(found)} check-ins")  # fmt: skip


if __name__ == "__main__":
    main()
