"""Per-child models fitted from clinician tags, shrunk toward the population model.

The personal model is a multinomial logistic regression over the labels this child's
clinicians used, on the child's calibrated features, with the calibrated population
model's log-probabilities as a fixed offset::

    logit_k(x) = offset_k(x) + W_k . z(x) + b_k

``offset_k`` is ``log p_pop(k)`` for the 7 expressions and ``log(1/7)`` for the clinic's
own labels (which the population model cannot see); ``z`` are the child's robust
z-scores. Only ``W`` is penalised (L2), so the strongest penalty gives back the
population model re-weighted to this child's label frequencies, and a weaker one lets
the child's tags override it. The penalty is chosen by grouped cross-validation.

Before a model is offered it is scored out of fold on grouped folds (a group is a time
block or tag run, so neighbouring bins never straddle train and test): macro-F1,
balanced accuracy and the expected calibration error of the quality-tempered
probabilities. The population model is compared only on the labels it can output too
(the 7 expressions among the child's labels: each model's own top label, on the bins
tagged with them); with fewer than two such labels there is nothing to
compare and the report says so instead of printing a population score of 0. ``calm`` (an
explicit calm/none tag, or untagged time of a tagged session: see ``clinic.personalise``) is a
label like any other, so the model can say "nothing of note" rather than force one of
the clinic's labels onto a resting face. The out-of-fold labels also give each label's
share of every tagged session, before (population) and after personalisation.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import minimize
from sklearn.metrics import balanced_accuracy_score, f1_score
from threadpoolctl import threadpool_limits

from affectline.types import EXPRESSION_CLASSES
from recognition.personal import blob
from recognition.personal.calibration import Baseline, observed
from recognition.personal.population import PopulationModel, smooth, softmax
from recognition.personal.reliability import decide, expected_calibration_error

L2_GRID: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)  # strongest first: each fit warm-starts the next
B_PENALTY = 1e-4  # keeps the bias of a label absent from a training fold finite
FORMAT = "affectline.personal/1"
NOT_WORSE = 0.01
CALM = "calm"  # the "nothing of note" label: calm/none tags and untagged time of a tagged session
CALM_ALIASES = frozenset({"calm", "none", "calm/none", "calm / none", "nothing"})
# Without a population comparison a model is offered when it beats chance (1/K) by this much
# in out-of-fold balanced accuracy.
CHANCE_MARGIN = 0.15
_EXPR = {c: i for i, c in enumerate(EXPRESSION_CLASSES)}


def canonical_label(label: str) -> str:
    """A tag's label as the model learns it: calm/none spellings become ``CALM``."""
    return CALM if label.strip().lower() in CALM_ALIASES else label


class NotEnoughTags(ValueError):
    """The tags cannot support a cross-validated model (too few labels or tag runs)."""


def population_offset(P_pop: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """(n, K) offsets: population log-probabilities for known expressions, log(1/7) otherwise."""
    other = np.log(1.0 / len(EXPRESSION_CLASSES))
    cols = [np.log(P_pop[:, _EXPR[k]] + 1e-6) if k in _EXPR else np.full(len(P_pop), other) for k in labels]
    return np.stack(cols, axis=1)


def _fit_weights(
    F: np.ndarray, O: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, init: np.ndarray | None = None
) -> np.ndarray:
    """Minimise weighted softmax cross-entropy + l2/2 |W|^2; returns [W | b] as (K, d+1).

    Call under ``threadpool_limits(1)``: L-BFGS-B makes thousands of small BLAS calls,
    and OpenBLAS's threads make each of them ~10x slower.
    """
    n, d = F.shape
    K = O.shape[1]
    rows = np.arange(n)
    wn = (w / w.sum()).astype(np.float32)
    # float32 halves the memory traffic of the two matrix products that dominate.
    Fb = np.hstack([F, np.ones((n, 1))]).astype(np.float32)
    O32 = O.astype(np.float32)
    pen = np.full(d + 1, l2)
    pen[-1] = B_PENALTY

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        T = theta.reshape(K, d + 1)
        Z = O32 + Fb @ T.T.astype(np.float32)
        Z -= Z.max(axis=1, keepdims=True)
        E = np.exp(Z)
        S = E.sum(axis=1)
        loss = -float(wn @ (Z[rows, y] - np.log(S))) + 0.5 * float((pen * T * T).sum())
        R = E / S[:, None]
        R[rows, y] -= 1.0
        G = (R * wn[:, None]).T @ Fb + pen * T
        return loss, G.ravel().astype(np.float64)

    x0 = np.zeros(K * (d + 1)) if init is None else init.ravel()
    res = minimize(f, x0, jac=True, method="L-BFGS-B", options={"maxiter": 200, "ftol": 1e-7, "gtol": 1e-5})
    return res.x.reshape(K, d + 1)


def _balanced_weights(y: np.ndarray, K: int) -> np.ndarray:
    counts = np.bincount(y, minlength=K).astype(np.float64)
    present = counts > 0
    per_class = np.zeros(K)
    per_class[present] = len(y) / (present.sum() * counts[present])
    return per_class[y]


@dataclass
class PersonalModel:
    """A fitted per-child model; ``predict_proba`` reads one track's feature rows in time order."""

    labels: tuple[str, ...]
    baseline: Baseline
    W: np.ndarray  # (K, 62)
    b: np.ndarray  # (K,)
    l2: float
    window: int = 3

    @property
    def population(self) -> PopulationModel:
        return PopulationModel(window=self.window)

    def _inputs(self, Xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        P_pop = self.population.predict_proba(Xs, self.baseline.logp_center, self.baseline.blend_center, smoothed=True)
        return self.baseline.transform(Xs), population_offset(np.nan_to_num(P_pop, nan=1.0 / 7), self.labels)

    def predict_proba(self, X: np.ndarray, smoothed: bool = False) -> np.ndarray:
        """(n, K) probabilities over ``labels``; NaN rows where no face was seen."""
        Xs = X if smoothed else smooth(X, self.window)
        F, O = self._inputs(Xs)
        P = softmax(O + F @ self.W.T + self.b)
        P[~observed(Xs)] = np.nan
        return P

    def to_bytes(self) -> bytes:
        meta = {"format": FORMAT, "labels": list(self.labels), "l2": self.l2, "window": self.window,
                "baseline_n_bins": self.baseline.n_bins, "baseline_source": self.baseline.source}  # fmt: skip
        return blob.pack(meta, W=self.W, b=self.b, **self.baseline.to_arrays())

    @classmethod
    def from_bytes(cls, data: bytes) -> PersonalModel:
        meta, z = blob.unpack(data, FORMAT, "personal model")
        base = Baseline(z["baseline_center"], z["baseline_scale"], meta["baseline_n_bins"], meta["baseline_source"])
        return cls(tuple(meta["labels"]), base, z["W"], z["b"], float(meta["l2"]), int(meta["window"]))


@dataclass
class TrainingSet:
    """Tagged, observed bins of one child.

    X: (n, len(FEATURE_NAMES)) feature rows already smoothed within their track
    (``smooth(series, window)``); q: (n,) quality of the raw rows; y: (n,) labels;
    groups: (n,) ints, bins that must share a fold (a time block of a session, merged
    with any tag run crossing it); session: (n,) session ids, for the per-session label
    shares (None: one session, id 0).
    """

    X: np.ndarray
    q: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    session: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.X)
        if self.session is None:
            self.session = np.zeros(n, np.int64)
        for name in ("q", "y", "groups", "session"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"TrainingSet.{name} has {len(getattr(self, name))} rows, X has {n}")


@dataclass
class Scores:
    macro_f1: float
    balanced_accuracy: float
    ece: float
    coverage: float  # fraction of bins not "uncertain" at the threshold
    accuracy_when_certain: float
    fold_macro_f1: list[float] = field(default_factory=list)


@dataclass
class FitReport:
    """Cross-validated, out-of-fold report, JSON-able via ``asdict``.

    ``personal``: the personal model on all its labels. ``comparison_labels``: the labels
    both models can output; ``population``, ``population_calibrated`` and
    ``personal_compared`` score the three on those labels only (None, with
    ``population_omitted`` saying why, when fewer than two are shared). ``shares``:
    session id (str) -> {"bins", "tagged", "before", "after"}, each label's share of the
    session's training bins: as tagged, as the calibrated population model labels them,
    and as the personal model labels them out of fold ("uncertain" included).
    """

    labels: list[str]
    n_bins: int
    n_groups: int
    n_folds: int
    l2: float
    threshold: float
    personal: Scores
    population: Scores | None = None
    population_calibrated: Scores | None = None
    personal_compared: Scores | None = None
    comparison_labels: list[str] = field(default_factory=list)
    comparison_bins: int = 0
    population_omitted: str = ""
    dropped_labels: dict[str, str] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    shares: dict[str, dict] = field(default_factory=dict)
    grouping: str = ""

    @property
    def compared(self) -> bool:
        return self.population is not None and self.personal_compared is not None

    @property
    def chance(self) -> float:
        return 1.0 / max(len(self.labels), 1)

    @property
    def improves(self) -> bool:
        """Compared: the personal model is not worse than the better population model on
        macro-F1 over the shared labels (within ``NOT_WORSE``, fold noise). Not comparable:
        its out-of-fold balanced accuracy beats chance by ``CHANCE_MARGIN``."""
        if self.compared:
            best = max(self.population.macro_f1, self.population_calibrated.macro_f1)
            return self.personal_compared.macro_f1 >= best - NOT_WORSE
        return self.personal.balanced_accuracy >= self.chance + CHANCE_MARGIN

    def verdict(self) -> str:
        """Why the model is (not) offered, in words."""
        if self.compared:
            best = max(self.population.macro_f1, self.population_calibrated.macro_f1)
            how = "not worse than" if self.improves else "below"
            return (f"macro-F1 on the labels both models can output ({', '.join(self.comparison_labels)}): personal "
                    f"{self.personal_compared.macro_f1:.2f} {how} population {best:.2f}")
        how = "beats" if self.improves else "does not beat"
        return (f"no population comparison ({self.population_omitted}); out-of-fold balanced accuracy "
                f"{self.personal.balanced_accuracy:.2f} {how} chance {self.chance:.2f} + {CHANCE_MARGIN:g}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FitReport:
        names = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in names}
        for k in ("population", "population_calibrated", "personal", "personal_compared"):
            if isinstance(kw.get(k), dict):
                kw[k] = Scores(**kw[k])
        return cls(**kw)


def label_shares(labels: list[str] | np.ndarray) -> dict[str, float]:
    """Each label's share of the rows, largest first."""
    vals, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {str(vals[i]): float(counts[i] / counts.sum()) for i in order}


def _scores(
    P: np.ndarray, labels: list[str], y: np.ndarray, q: np.ndarray, folds: np.ndarray, threshold: float
) -> Scores:
    """Scores of probabilities ``P`` over ``labels`` against string labels ``y``."""
    names = np.asarray(labels, dtype=object)
    pred = names[np.nan_to_num(P, nan=0.0).argmax(axis=1)]
    truth = sorted(set(y))
    d = decide(P, q, threshold)
    correct = np.asarray([names[i] == t if i >= 0 else False for i, t in zip(d.index, y)])
    top_ok = pred == y
    tempered_top = d.confidence
    # ECE of the top tempered probability, whether or not it clears the threshold.
    ece = expected_calibration_error(tempered_top, top_ok)
    certain = d.index >= 0
    per_fold = [
        float(
            f1_score(
                y[folds == f], pred[folds == f], labels=sorted(set(y[folds == f])), average="macro", zero_division=0
            )
        )
        for f in np.unique(folds)
    ]
    return Scores(
        macro_f1=float(f1_score(y, pred, labels=truth, average="macro", zero_division=0)),
        balanced_accuracy=_balanced_accuracy(y, pred),
        ece=ece,
        coverage=float(certain.mean()),
        accuracy_when_certain=float(correct[certain].mean()) if certain.any() else float("nan"),
        fold_macro_f1=per_fold,
    )


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    with warnings.catch_warnings():  # the population predicts expressions no tag uses: expected
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, pred))


def grouped_folds(y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """(n,) fold index per row: every group in one fold, each label's bins spread evenly.

    Groups are dealt, largest first within each group's majority label, to the fold
    holding the fewest bins of that label so far (ties broken at random). Linear in
    the number of groups, unlike sklearn's StratifiedGroupKFold, which dominated the
    fit time with a thousand tags.
    """
    rng = np.random.default_rng(seed)
    ug, inv = np.unique(groups, return_inverse=True)
    size = np.bincount(inv)
    K = int(y.max()) + 1
    counts = np.zeros((len(ug), K))
    np.add.at(counts, (inv, y), 1)
    major = counts.argmax(axis=1)
    load = np.zeros((n_splits, K))
    fold_of = np.empty(len(ug), np.int64)
    order = rng.permutation(len(ug))
    order = order[np.argsort(-size[order], kind="stable")]
    for g in order:
        lab = major[g]
        least = np.flatnonzero(load[:, lab] == load[:, lab].min())
        f = least[rng.integers(len(least))] if len(least) > 1 else least[0]
        fold_of[g] = f
        load[f] += counts[g]
    return fold_of[inv]


def _select_l2(F, O, y, w, groups, l2_grid, n_splits, seed) -> tuple[float, np.ndarray | None]:
    """The penalty with the lowest balanced log-loss over inner grouped folds, and the
    weights one inner fold found with it (a warm start for the refit on all rows)."""
    n_splits = min(n_splits, len(np.unique(groups)))
    if n_splits < 2:
        return l2_grid[0], None
    fold = grouped_folds(y, groups, n_splits, seed)
    loss = np.zeros(len(l2_grid))
    path: list[np.ndarray] = []
    for f in range(n_splits):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        if len(te) == 0 or len(tr) == 0:
            continue
        init = None
        path = []
        for j, l2 in enumerate(l2_grid):
            init = _fit_weights(F[tr], O[tr], y[tr], w[tr], l2, init)
            path.append(init)
            Z = O[te] + np.hstack([F[te], np.ones((len(te), 1))]) @ init.T
            logP = Z - Z.max(axis=1, keepdims=True)
            logP -= np.log(np.exp(logP).sum(axis=1, keepdims=True))
            loss[j] += -(w[te] * logP[np.arange(len(te)), y[te]]).sum()
    best = int(np.argmin(loss))
    return l2_grid[best], path[best] if path else None


def personalize(
    ts: TrainingSet,
    baseline: Baseline,
    *,
    threshold: float,
    window: int = 3,
    l2_grid: tuple[float, ...] = L2_GRID,
    n_splits: int = 5,
    inner_splits: int = 3,
    min_groups: int = 2,
    seed: int = 0,
    workers: int | None = None,
) -> tuple[PersonalModel, FitReport]:
    """Fit a child's model from their tags and score it against the population model.

    Labels with fewer than ``min_groups`` tag runs are dropped (a label seen in one run
    cannot be both trained on and tested). The reported scores are nested: each outer
    fold chooses its own penalty on its training part only. ``workers`` threads (default:
    the CPU count, at most 4) fit the folds side by side; results do not depend on it.
    Raises ``NotEnoughTags``.
    """
    workers = workers or min(4, os.cpu_count() or 1)
    with threadpool_limits(limits=1, user_api="blas"):
        return _personalize(ts, baseline, threshold, window, l2_grid, n_splits, inner_splits, min_groups, seed, workers)


def _personalize(
    ts: TrainingSet,
    baseline: Baseline,
    threshold: float,
    window: int,
    l2_grid: tuple[float, ...],
    n_splits: int,
    inner_splits: int,
    min_groups: int,
    seed: int,
    workers: int,
) -> tuple[PersonalModel, FitReport]:
    y_all = np.asarray([canonical_label(str(v)) for v in ts.y], dtype=object)
    dropped: dict[str, str] = {}
    keep = np.ones(len(y_all), bool)
    for lab in sorted(set(y_all)):
        ng = len(np.unique(ts.groups[y_all == lab]))
        if ng < min_groups:
            dropped[lab] = f"{ng} tag run(s), need {min_groups}"
            keep &= y_all != lab
    labels = tuple(sorted(set(y_all[keep])))
    if len(labels) < 2:
        raise NotEnoughTags(
            f"need at least 2 labels with {min_groups}+ separate tag runs each, have {list(labels)} (dropped: {dropped})"
        )
    X, q, groups, y_str, session = ts.X[keep], ts.q[keep], ts.groups[keep], y_all[keep], ts.session[keep]
    y = np.array([labels.index(v) for v in y_str])
    K = len(labels)
    n_groups = len(np.unique(groups))
    n_folds = min(n_splits, n_groups)

    proto = PersonalModel(labels, baseline, np.zeros((K, 1)), np.zeros(K), 0.0, window)
    F, O = proto._inputs(X)
    w = _balanced_weights(y, K)
    pop = PopulationModel(window=window)
    P_pop = pop.predict_proba(X, smoothed=True)
    P_cal = pop.predict_proba(X, baseline.logp_center, baseline.blend_center, smoothed=True)

    folds = grouped_folds(y, groups, n_folds, seed)
    P_oof = np.full((len(y), K), np.nan)

    def outer(f: int) -> None:
        tr, te = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        l2, init = _select_l2(F[tr], O[tr], y[tr], w[tr], groups[tr], l2_grid, inner_splits, seed + 1 + f)
        T = _fit_weights(F[tr], O[tr], y[tr], w[tr], l2, init)
        P_oof[te] = softmax(O[te] + np.hstack([F[te], np.ones((len(te), 1))]) @ T.T)

    def final() -> tuple[float, np.ndarray]:
        l2, init = _select_l2(F, O, y, w, groups, l2_grid, n_folds, seed)
        return l2, _fit_weights(F, O, y, w, l2, init)

    # The folds and the final selection are independent; numpy releases the GIL in the
    # matrix products and exponentials that dominate, so threads use both cores.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        last = pool.submit(final)
        list(pool.map(outer, range(n_folds)))
        l2, T = last.result()
    model = PersonalModel(labels, baseline, T[:, :-1].copy(), T[:, -1].copy(), l2, window)
    expr = list(EXPRESSION_CLASSES)
    shared = [k for k in labels if k in _EXPR]
    comp: dict = {"comparison_labels": shared}
    if len(shared) >= 2:
        m = np.isin(y_str, shared)
        # Each model's own top label (the population may say "surprise" on this child's joy: a miss), scored
        # on the bins tagged with a shared label.
        comp |= {
            "comparison_bins": int(m.sum()),
            "population": _scores(P_pop[m], expr, y_str[m], q[m], folds[m], threshold),
            "population_calibrated": _scores(P_cal[m], expr, y_str[m], q[m], folds[m], threshold),
            "personal_compared": _scores(P_oof[m], list(labels), y_str[m], q[m], folds[m], threshold),
        }
    else:
        own = [k for k in labels if k not in _EXPR]
        comp["population_omitted"] = (
            f"the population model outputs only the 7 expressions; of this child's labels it can output "
            f"{', '.join(shared) or 'none'}, not {', '.join(own)}, so it cannot be scored on them"
        )
    before = np.asarray(decide(P_cal, q, threshold).labels(expr), dtype=object)
    after = np.asarray(decide(P_oof, q, threshold).labels(list(labels)), dtype=object)
    shares = {
        str(sid): {"bins": int(m.sum()), "tagged": label_shares(y_str[m]), "before": label_shares(before[m]),
                   "after": label_shares(after[m])}
        for sid in np.unique(session) for m in [session == sid]
    }  # fmt: skip
    report = FitReport(
        labels=list(labels), n_bins=len(y), n_groups=n_groups, n_folds=n_folds, l2=l2, threshold=threshold,
        personal=_scores(P_oof, list(labels), y_str, q, folds, threshold),
        dropped_labels=dropped,
        class_counts={lab: int((y_str == lab).sum()) for lab in labels},
        shares=shares,
        **comp,
    )  # fmt: skip
    return model, report
