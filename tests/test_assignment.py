"""The numpy assignment solver (what a torch + numpy GPU box tracks with) against scipy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from recognition.tracking.assignment import solve


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (5, 9), (9, 5), (30, 30), (31, 40), (0, 4), (4, 0)])
def test_same_optimum_as_scipy(shape):
    rng = np.random.default_rng(sum(shape))
    for trial in range(20):
        cost = rng.random(shape) * 10
        if trial % 3 == 0:  # many ties, as with the tracker's capped costs
            cost = np.round(cost)
        if trial % 4 == 0 and cost.size:
            cost[rng.random(shape) < 0.4] = 1e6  # the tracker's stand-in for "not allowed"
        r, c = solve(cost)
        sr, sc = scipy_lsa(cost)
        assert len(r) == len(sr) == min(shape)
        assert (np.diff(r) > 0).all() and len(set(c.tolist())) == len(c)
        assert cost[r, c].sum() == pytest.approx(cost[sr, sc].sum(), abs=1e-9)


def test_infeasible_and_bad_input_are_refused():
    with pytest.raises(ValueError, match="infeasible"):
        solve(np.array([[1.0, np.inf], [np.nan, 2.0]]))
    with pytest.raises(ValueError, match="2-d"):
        solve(np.zeros(3))
