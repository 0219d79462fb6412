"""Fit the shipped expression head from the feature caches; print grouped-CV figures per size.

Usage: PYTHONPATH=. .venv/bin/python bench/expression_head_fit.py OUT.npz FIT_SIZES [BLOCKS] [C] [CLASS_POWER] [SCORE_SIZES]
  FIT_SIZES: the sizes pooled for the fit, e.g. native or native,24,48 (caches written by
  bench/expression_head_features.py under ~/.cache/affectline/expr/); BLOCKS default mx,blend,pose
  (``mxflip``: the mini-Xception's logits averaged with those of the mirrored crop); C (L2) default 0.3;
  CLASS_POWER default 0 (``expression_head.class_weights``); SCORE_SIZES: also score these sizes with
  heads fitted on FIT_SIZES' other folds (same identity folds).
The figures quoted in the README come from ``affectline eval expressions ... --cv 5`` (the same
recipe refitted per fold on the pipeline's own features); these are the quick version of them."""
import json
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from pipeline.eval_expressions import identity_of
from recognition.evaluation.expressions import SCORED_IDX, confusion, ece, macro_f1, recalls, softmax
from recognition.face.expression_head import calibrated_cv_logits, fit_head, group_folds, stack
from recognition.face.readability import ReadabilityParams, judge

CACHE = Path.home() / ".cache/affectline/expr"
GATE = ReadabilityParams(min_iod_px=14.0, min_sharpness=60.0)  # gate 1, which the shipped head was fitted under (reproducible)
out = Path(sys.argv[1])
fit_sizes = sys.argv[2].split(",")
blocks = tuple((sys.argv[3] if len(sys.argv) > 3 else "mx,blend,pose").split(","))
c = float(sys.argv[4]) if len(sys.argv) > 4 else 0.3
power = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
score_sizes = sys.argv[6].split(",") if len(sys.argv) > 6 else []


def rows(name: str):
    d = dict(np.load(CACHE / f"feats_{name}.npz", allow_pickle=True))
    g = judge(np.where(np.isfinite(d["box"]), d["box"], 0), d["found"].astype(bool), d["pose"], d["sharp"], d["iod"], GATE)
    r = g.readable & d["det"].astype(bool)
    feats = {"mx": d["mx"][r, 0], "mxflip": (d["mx"][r, 0] + d["mxf"][r, 0]) / 2, "hu": d["hu"][r, 0],
             "blend": d["blend"][r], "pose": d["pose"][r]}  # margin 0 (HEAD_MARGIN)
    return {b: feats[b] for b in blocks}, d["label"][r].astype(int), np.array([identity_of(f) for f in d["fname"][r]])


def figures(z, y):
    p = softmax(z)
    cm = confusion(y, p.argmax(1))
    return dict(n=len(y), acc=float(np.mean(p.argmax(1) == y)), f1_5=macro_f1(cm, SCORED_IDX), f1_7=macro_f1(cm),
                ece=ece(p, y), answered=float((p.max(1) >= 0.5).mean()), recall=recalls(cm).round(2).tolist(),
                confusion=cm.tolist())


with threadpool_limits(1):
    parts = [rows(n) for n in fit_sizes]
    F = {b: np.concatenate([p[0][b] for p in parts]) for b in blocks}
    Y = np.concatenate([p[1] for p in parts])
    G = np.concatenate([p[2] for p in parts])
    S = np.concatenate([[n] * len(p[1]) for n, p in zip(fit_sizes, parts)])
    head, zc = fit_head(F, Y, G, blocks, c=c, class_power=power)
    res = {}
    for n in fit_sizes:
        res[n] = figures(zc[S == n], Y[S == n])
    # Other sizes: scored by per-fold heads fitted on the fit sizes without that fold's people.
    for n in score_sizes:
        f2, y2, g2 = rows(n)
        if not len(y2):
            print(n, "no face read by the gate")
            continue
        fold_of = dict(zip(G, group_folds(G, 5, 0)))
        fo = np.array([fold_of.get(x, -1) for x in g2])
        z = np.zeros((len(y2), 7))
        for f in range(5):
            tr = np.array([fold_of[x] != f for x in G])
            h, _ = fit_head({b: v[tr] for b, v in F.items()}, Y[tr], G[tr], blocks, c=c, class_power=power)
            te = (fo == f) | ((fo == -1) & (f == 0))
            if not te.any():
                continue
            z[te] = h.logits({b: v[te] for b, v in f2.items()})
        res[n] = figures(z, y2)
    for n, r in res.items():
        print(n, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "confusion"})
    head.save(out)
    print("T", round(head.temperature, 4), "->", out)
    json.dump(res, open(str(out) + ".cv.json", "w"), indent=1)
