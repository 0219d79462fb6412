"""The figures of ``affectline eval expressions`` on hand-made cases whose answers are known."""

import numpy as np
import pytest

from affectline.types import EXPRESSION_CLASSES
from recognition.evaluation.expressions import (SCORED_IDX, confusion, ece, f1s, fit_temperature, macro_f1,
                                                recalls, score, softmax)  # fmt: skip
from recognition.face.expression_head import group_folds

A, D, F, H, S, U, N = range(7)


def onehot(pred, conf):
    p = np.full((len(pred), 7), (1 - conf) / 6)
    p[np.arange(len(pred)), pred] = conf
    return p


def test_confusion_recall_and_f1_by_hand():
    y = np.array([H, H, H, N, N, S])
    p = np.array([H, H, N, N, S, S])
    cm = confusion(y, p)
    assert cm[H, H] == 2 and cm[H, N] == 1 and cm[N, S] == 1 and cm.sum() == 6
    r = recalls(cm)
    assert r[H] == pytest.approx(2 / 3) and r[N] == pytest.approx(0.5) and r[S] == 1.0 and np.isnan(r[A])
    f = f1s(cm)
    # happy: tp 2, 2 predicted, 3 true -> 4/5; neutral: tp 1, 2 predicted, 2 true -> 1/2; sad: 1, 2, 1 -> 2/3
    assert f[H] == pytest.approx(0.8) and f[N] == pytest.approx(0.5) and f[S] == pytest.approx(2 / 3)
    # the five scored classes: angry and surprise are neither true nor predicted -> 0 each
    assert macro_f1(cm, SCORED_IDX) == pytest.approx((0 + 0.8 + 2 / 3 + 0 + 0.5) / 5)
    assert EXPRESSION_CLASSES[H] == "happy" and EXPRESSION_CLASSES[N] == "neutral"


def test_ece_is_zero_when_confidence_equals_accuracy_and_measures_overconfidence():
    y = np.array([H] * 10)
    # 8 of 10 right at confidence 0.8: perfectly calibrated
    pred = np.array([H] * 8 + [N] * 2)
    assert ece(onehot(pred, 0.8), y) == pytest.approx(0.0, abs=1e-12)
    # the same answers shown at 0.99: over-confident by 0.19
    assert ece(onehot(pred, 0.99), y) == pytest.approx(0.19)
    # two bins: 5 faces at 0.6 all right (gap 0.4), 5 at 0.9 all wrong (gap 0.9)
    p = np.vstack([onehot([H] * 5, 0.6), onehot([N] * 5, 0.9)])
    assert ece(p, y) == pytest.approx(0.5 * 0.4 + 0.5 * 0.9)


def test_temperature_fixes_overconfident_logits_and_keeps_the_ranking():
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 7, n)
    z = rng.normal(0, 1, (n, 7))
    z[np.arange(n), y] += 1.5
    clean = 1.5 * z  # unit-variance noise shifted by 1.5: the true posterior is softmax(1.5 z) ...
    hot = clean * 4  # ... made 4x over-confident
    t = fit_temperature(hot, y)
    assert 3.0 < t < 5.5
    before, after = ece(softmax(hot), y), ece(softmax(hot / t), y)
    assert before > 0.15 and after < 0.03
    assert np.array_equal(softmax(hot).argmax(1), softmax(hot / t).argmax(1))
    # confidence is monotone in the temperature: a hotter model is never less sure
    c = [softmax(hot / tt).max(1).mean() for tt in (0.5, 1, 2, 4, 8)]
    assert all(a > b for a, b in zip(c, c[1:]))


def test_score_counts_unreadable_faces_against_coverage_not_accuracy():
    y = np.array([H, H, N, N])
    probs = np.vstack([onehot([H], 0.9), onehot([H], 0.4), onehot([N], 0.9), np.full((1, 7), np.nan)])
    readable = np.array([True, True, True, False])
    s = score(y, probs, readable, threshold=0.5, reasons={"too_small": 1})
    assert s.faces == 4 and s.readable == 3 and s.answered == 2
    # coverage: the faces given an expression (the pipeline stores and exports one for every readable face,
    # confident or not); the uncertain one counts against the confident share only
    assert s.coverage == pytest.approx(0.75) and s.confident == pytest.approx(0.5)
    assert s.accuracy == 1.0 and s.accuracy_answered == 1.0 and s.accuracy_uncertain == 1.0
    assert s.reasons == {"too_small": 1}


def test_group_folds_never_split_an_identity():
    groups = np.array(["a"] * 5 + ["b"] * 3 + ["c"] * 3 + ["d"] * 2 + ["e"])
    f = group_folds(groups, k=3)
    for g in set(groups):
        assert len(set(f[groups == g])) == 1
    assert len(set(f)) == 3


def test_head_keeps_its_recipe_and_class_weights_lift_a_rare_class(tmp_path):
    import numpy as np

    from recognition.face.expression_head import ExpressionHead, class_weights, fit_head

    y = np.array([6] * 90 + [4] * 10)
    w = class_weights(y, 0.5)
    assert np.isclose(w[y == 4][0], 3.0) and np.isclose(w[y == 6][0], 1.0) and class_weights(y, 0) is None
    rng = np.random.default_rng(0)
    # The rare class sits slightly apart: unweighted the head never names it, weighted it does.
    feats = {"mx": rng.normal(size=(100, 7)) + (y == 4)[:, None] * 0.6, "pose": np.zeros((100, 3))}
    groups = np.arange(100) // 2
    plain, _ = fit_head(feats, y, groups, ("mx", "pose"), c=0.1)
    weighted, _ = fit_head(feats, y, groups, ("mx", "pose"), c=0.1, class_power=1.0)
    assert (weighted.probs(feats).argmax(1) == 4).sum() > (plain.probs(feats).argmax(1) == 4).sum()
    weighted.save(tmp_path / "h.npz")
    back = ExpressionHead.load(tmp_path / "h.npz")
    assert (back.c, back.class_power) == (0.1, 1.0) and np.allclose(back.probs(feats), weighted.probs(feats))
