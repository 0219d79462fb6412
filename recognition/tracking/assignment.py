"""Minimum-cost assignment (the Hungarian problem), with scipy or with numpy alone.

``linear_sum_assignment`` is scipy's where scipy is installed. A GPU machine may have only
torch and numpy (and a few small wheels: scipy's is 35 MB of a 64 MB transfer), so the
tracker falls back on ``solve``, shortest augmenting paths with potentials, O(n^2 m):
the same optimum (ties may pair differently), fast enough for the tens of faces a frame holds.
"""

from __future__ import annotations

import numpy as np


def solve(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a minimum-cost assignment of the finite (n, m) ``cost``, as scipy returns them:
    min(n, m) pairs, rows ascending."""
    c = np.asarray(cost, np.float64)
    if c.ndim != 2:
        raise ValueError(f"cost must be a 2-d matrix, got shape {c.shape}")
    if not np.isfinite(c).all():
        raise ValueError("cost matrix is infeasible: it holds inf or NaN")
    if c.shape[0] > c.shape[1]:  # more rows than columns: solve the transpose
        cols, rows = solve(c.T)
        order = np.argsort(rows)
        return rows[order], cols[order]
    n, m = c.shape
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # 1-based potentials u (rows), v (columns); match[j] = row matched to column j (0 = none).
    u, v = np.zeros(n + 1), np.zeros(m + 1)
    match = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        match[0] = i
        j0 = 0
        dist = np.full(m + 1, np.inf)
        prev = np.zeros(m + 1, np.int64)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = match[j0]
            free = ~used[1:]
            red = c[i0 - 1] - u[i0] - v[1:]  # reduced costs from row i0 to every column
            better = free & (red < dist[1:])
            dist[1:][better] = red[better]
            prev[1:][better] = j0
            cand = np.where(free, dist[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            # Shift potentials so the tree's edges stay tight.
            u[match[used]] += delta
            v[used] -= delta
            dist[1:][free] -= delta
            j0 = j1
            if match[j0] == 0:
                break
        while j0:  # flip the augmenting path
            j1 = prev[j0]
            match[j0] = match[j1]
            j0 = j1
    cols = np.nonzero(match[1:])[0]
    rows = match[1:][cols] - 1
    order = np.argsort(rows)
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


try:
    from scipy.optimize import linear_sum_assignment
except ImportError:  # torch + numpy only (a GPU box)
    linear_sum_assignment = solve
