"""The readability gate's thresholds, from the default expression model's measured accuracy-per-bin curve.

Reads the per-face features of the development faces (``bench/expression_features.py``: the
detector's box, the landmarker's blendshapes, pose and pupil distance, the gate's sharpness and
the networks' logits, at native size and at 16, 24, 32, 48, 64 px, some copies blurred) and
scores the default model's head on them two ways:
  * ``cv``: the head's recipe (its feature blocks, refitted with its regularisation on the same
    pooled rows as the shipped head) with folds grouped by identity: every face is scored by a
    head fitted without that person. This is the curve the thresholds come from;
  * ``shipped``: the shipped head itself (what ``affectline eval expressions`` gives; in-sample
    on these faces, so optimistic).
Per bin: faces, 5-class macro-F1 (angry, happy, sad, surprise, neutral; chance 0.20) and
accuracy, over every detected face of the bin. Bins: face size (px), pupil distance (every
unblurred size pooled), sharpness (faces above the size threshold, blurred copies included),
|yaw| and |pitch|.

Threshold rule (one for every input): read a face where the cross-validated macro-F1(5) of its
bin, and of every bin beyond it, is at least ``--bar`` (0.55: the issue's bar for small faces).
The script prints the derived thresholds and the gate's coverage and figures per size under the
current and the derived thresholds.

    PYTHONPATH=. .venv/bin/python bench/readability_curve.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SIZES = ("16", "24", "32", "48", "64", "native")
BLURS = (("64", 0.02), ("64", 0.04), ("64", 0.08), ("native", 0.02), ("native", 0.04))
POOL = ("native", "24", "48")  # the rows the shipped heads were fitted on
FIT_GATE = dict(min_iod_px=10.0, min_sharpness=20.0)  # the gate of the shipped heads' fit
C = 0.3  # the shipped heads' regularisation (bench/expression_head_fit.py)
IOD_BANDS = (5, 7, 8, 9, 10, 11, 12, 14, 17, 20, 30, 1e9)
SHARP_BANDS = (0, 10, 20, 30, 40, 60, 80, 120, 160, 1e9)
ANGLE_BANDS = (0, 10, 20, 30, 40, 90)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bar", type=float, default=0.55)
    ap.add_argument("--min-faces", type=int, default=50, help="bins with fewer faces neither set nor veto a threshold")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from expression_features import MARGINS, feats_path, load_feats

    from pipeline.eval_expressions import identity_of
    from recognition.evaluation.expressions import SCORED_IDX, confusion, fit_temperature, macro_f1, softmax
    from recognition.face.expression import HEAD_MARGIN
    from recognition.face.expression_head import ExpressionHead, _fit_linear, _raw_logits, group_folds, stack
    from recognition.face.readability import ReadabilityParams, judge
    from recognition.registry import resolve

    head = ExpressionHead.load(resolve("expression_head_light"))
    mi = MARGINS.index(HEAD_MARGIN)

    missing = [(z, b) for z, b in BLURS if not feats_path(z, b).is_file()]
    for z, b in missing:  # the blurred copies are optional; the sizes are not
        print(f"left out (not cached; bench/expression_features.py {z} --blur {b:g}): {z} blur{b:g}")
    sets = [(z, 0.0) for z in SIZES] + [zb for zb in BLURS if zb not in missing]
    extra = [z for z in ("12",) if feats_path(z).is_file()]  # pose only: scored nowhere else
    rows: dict[str, list] = {k: [] for k in ("set", "size", "blur", "label", "group", "fname", "det", "found", "iod", "sharp", "yaw", "pitch", "box", "pose")}
    X = []
    for z, b in sets + [(z, 0.0) for z in extra]:
        d = load_feats(z, b)
        n = len(d["label"])
        rows["set"] += [f"{z}" + (f" blur{b:g}" if b else "")] * n
        rows["size"] += [z] * n
        rows["blur"] += [b] * n
        rows["label"] += list(d["label"].astype(int))
        rows["group"] += [identity_of(str(f)) for f in d["fname"]]
        rows["fname"] += [str(f) for f in d["fname"]]
        rows["det"] += list(d["det"].astype(bool))
        rows["found"] += list(d["found"].astype(bool))
        rows["iod"] += list(d["iod"])
        rows["sharp"] += list(d["sharp"])
        rows["yaw"] += list(d["pose"][:, 0])
        rows["pitch"] += list(d["pose"][:, 1])
        rows["box"] += list(d["box"])
        rows["pose"] += list(d["pose"])
        X.append(stack({"mx": d["mx"][:, mi], "hu": d["hu"][:, mi], "blend": d["blend"], "pose": d["pose"]}, head.blocks))
    R = {k: np.array(v) for k, v in rows.items()}
    X = np.concatenate(X)
    y = R["label"]
    det = R["det"]
    box = np.where(np.isfinite(R["box"]), R["box"], 0)

    def gate(params: ReadabilityParams):
        return judge(box, R["found"], R["pose"], R["sharp"], R["iod"], params)

    fit_gate = gate(ReadabilityParams(**FIT_GATE))
    pool = det & fit_gate.readable & np.isin(R["size"], POOL) & (R["blur"] == 0)
    folds = group_folds(R["group"][pool])
    fold_of = dict(zip(R["group"][pool], folds))
    # identities never in the pool (none expected: the pool holds every native face) get fold -1: shipped-free 5th fold.
    all_folds = np.array([fold_of.get(g, -1) for g in R["group"]])
    oof = np.full((len(y), 7), np.nan)
    for f in range(5):
        tr = pool & (all_folds != f)
        params = _fit_linear(X[tr], y[tr], C, False)
        te = det & (all_folds == f)
        oof[te] = _raw_logits(X[te], *params)
    t = fit_temperature(oof[pool], y[pool])
    p_cv = softmax(np.where(det[:, None], np.nan_to_num(oof) / t, 0.0))
    p_sh = _probs_from_x(head, X)
    pred = {"cv": p_cv.argmax(1), "shipped": p_sh.argmax(1)}

    def stats(m: np.ndarray, which: str = "cv") -> dict:
        m = m & det
        if not m.any():
            return {"faces": 0, "f1": float("nan"), "acc": float("nan")}
        cm = confusion(y[m], pred[which][m])
        return {"faces": int(m.sum()), "f1": macro_f1(cm, SCORED_IDX), "acc": float(np.mean(pred[which][m] == y[m]))}

    def band_name(a, b):
        return f">={a:g}" if b >= 1e9 else f"{a:g}-{b:g}"

    out: dict = {"temperature_cv": t, "bar": args.bar}
    scored = R["size"] != "12"  # 12 px faces: head pose only
    sharp_set = (R["blur"] == 0) & scored
    print(f"{int(det.sum())} detected faces in {len(sets)} sets; cv = identity-grouped 5-fold refit of the "
          f"shipped head's recipe ({'+'.join(head.blocks)}, C={C}); shipped = the head file (in-sample)")
    print("by face width (unblurred; over detected faces):")
    print(f"{'':>14} {'faces':>5} {'iod':>5} {'sharp':>6} {'F1 cv':>6} {'acc cv':>6} {'F1 sh':>6} {'acc sh':>6}")
    out["by_size"] = []
    for z, b in sets:
        m = (R["size"] == z) & (R["blur"] == b)
        a, s_ = stats(m), stats(m, "shipped")
        md = m & det
        row = {"set": z + (f" blur{b:g}" if b else ""), "faces": a["faces"], "of": int(m.sum()),
               "median_iod": float(np.nanmedian(R["iod"][md])), "median_sharp": float(np.nanmedian(R["sharp"][md])),
               "f1_cv": a["f1"], "acc_cv": a["acc"], "f1_shipped": s_["f1"], "acc_shipped": s_["acc"]}  # fmt: skip
        out["by_size"].append(row)
        print(f"{row['set']:>14} {row['faces']:5d} {row['median_iod']:5.1f} {row['median_sharp']:6.0f} {row['f1_cv']:6.3f} "
              f"{row['acc_cv']:6.3f} {row['f1_shipped']:6.3f} {row['acc_shipped']:6.3f}")  # fmt: skip

    def curve(name: str, value: np.ndarray, bands, base: np.ndarray) -> list[dict]:
        print(f"by {name}:")
        res = []
        for a, b in zip(bands[:-1], bands[1:]):
            m = base & (value >= a) & (value < b)
            st, sh = stats(m), stats(m, "shipped")
            if st["faces"]:
                res.append({"band": band_name(a, b), "lo": a, "hi": b, **{k + "_cv": v for k, v in st.items()},
                            "f1_shipped": sh["f1"]})  # fmt: skip
                print(f"{band_name(a, b):>14} {st['faces']:5d} F1 {st['f1']:5.3f} acc {st['acc']:5.3f} (shipped F1 {sh['f1']:5.3f})")
        return res

    def threshold(res: list[dict]) -> float:
        """The lower edge of the first bin from which every bin (of >= --min-faces faces) reaches the bar."""
        ok = [r for r in res if r["faces_cv"] >= args.min_faces]
        lo = float("nan")
        for r in reversed(ok):
            if r["f1_cv"] >= args.bar:
                lo = r["lo"]
            else:
                break
        return float(lo)

    def ceiling(res: list[dict]) -> float:
        """The upper edge of the last bin up to which every bin (of >= --min-faces faces) reaches the bar."""
        hi = float("nan")
        for r in [r for r in res if r["faces_cv"] >= args.min_faces]:
            if r["f1_cv"] >= args.bar:
                hi = r["hi"]
            else:
                break
        return float(hi)

    lm_ok = det & R["found"]
    out["by_iod"] = curve("pupil distance (px; unblurred, every size pooled, landmarks found)", R["iod"], IOD_BANDS, lm_ok & sharp_set)
    min_iod = threshold(out["by_iod"])
    out["by_sharpness"] = curve(f"sharpness (Laplacian variance of the 64 px grey crop; pupil distance >= {min_iod:g}, blurred copies "
                                "included)", R["sharp"], SHARP_BANDS, lm_ok & scored & (R["iod"] >= min_iod))  # fmt: skip
    min_sharp = threshold(out["by_sharpness"])
    big = lm_ok & (R["iod"] >= min_iod) & sharp_set
    out["by_yaw"] = curve(f"|yaw| (degrees; pupil distance >= {min_iod:g}, unblurred)", np.abs(R["yaw"]), ANGLE_BANDS, big)
    out["by_pitch"] = curve(f"|pitch| (degrees; pupil distance >= {min_iod:g}, unblurred)", np.abs(R["pitch"]), ANGLE_BANDS, big)
    yaw_hi, pitch_hi = ceiling(out["by_yaw"]), ceiling(out["by_pitch"])
    out["derived"] = {"min_iod_px": min_iod, "min_sharpness": min_sharp, "yaw_measured_to": yaw_hi, "pitch_measured_to": pitch_hi}
    print(f"derived (bar F1(5) >= {args.bar}, bins of >= {args.min_faces} faces): min_iod_px {min_iod:g}, min_sharpness "
          f"{min_sharp:g}; |yaw| and |pitch| reach the bar in every measured bin up to {yaw_hi:g} and {pitch_hi:g} degrees "
          "(beyond: too few development faces to measure)")

    # Head pose at small sizes against the same face's native-size pose: how small a face still gives a usable turn.
    nat = {str(f): i for i, f in enumerate(_fnames(R, "native"))}
    print("head pose against the same face at native size (|difference|, degrees: median / 90th percentile), by face width:")
    out["pose_error"] = []
    for z in ("12",) * (1 if "12" in extra else 0) + SIZES[:-1]:
        m = np.flatnonzero((R["size"] == z) & (R["blur"] == 0) & R["found"])
        j = np.array([nat.get(str(f), -1) for f in R["fname"][m]])
        keep = j >= 0
        m, j = m[keep], j[keep]
        nat_rows = np.flatnonzero((R["size"] == "native") & (R["blur"] == 0))[j]
        ok = R["found"][nat_rows]
        m, nat_rows = m[ok], nat_rows[ok]
        dy, dp = np.abs(R["yaw"][m] - R["yaw"][nat_rows]), np.abs(R["pitch"][m] - R["pitch"][nat_rows])
        row = {"set": z, "faces": int(len(m)), "median_iod": float(np.median(R["iod"][m])),
               "yaw_median": float(np.median(dy)), "yaw_p90": float(np.percentile(dy, 90)),
               "pitch_median": float(np.median(dp)), "pitch_p90": float(np.percentile(dp, 90))}  # fmt: skip
        out["pose_error"].append(row)
        print(f"{z:>6} px {row['faces']:4d} faces, pupil distance {row['median_iod']:5.1f}: yaw {row['yaw_median']:4.1f} / "
              f"{row['yaw_p90']:4.1f}, pitch {row['pitch_median']:4.1f} / {row['pitch_p90']:4.1f}")

    cur = ReadabilityParams()
    new = ReadabilityParams(min_iod_px=min_iod, min_sharpness=min_sharp, max_abs_yaw=cur.max_abs_yaw, max_abs_pitch=cur.max_abs_pitch)
    print("per set, the gate now and derived: coverage = read / labelled images; figures over the read faces (cv)")
    out["gates"] = {}
    old = ReadabilityParams(min_iod_px=14.0, min_sharpness=60.0)  # gate version 1, chosen on the mini-Xception alone
    for gname, P in (("gate 1 (14 px, 60)", old), ("current", cur), ("derived", new)):
        g = gate(P)
        res = []
        print(f"  {gname}: {P}")
        for z, b in sets:
            m = (R["size"] == z) & (R["blur"] == b)
            rd = m & det & g.readable
            st = stats(rd)
            reasons = {}
            for r in np.array(g.reason)[m & det & ~g.readable]:
                reasons[str(r)] = reasons.get(str(r), 0) + 1
            reasons["not_detected"] = int((m & ~det).sum())
            sure = float((rd & (p_cv.max(1) >= 0.5)).sum() / m.sum())  # above the default uncertain threshold
            res.append({"set": z + (f" blur{b:g}" if b else ""), "coverage": float(rd.sum() / m.sum()), "confident": sure, **st,
                        "reasons": reasons})  # fmt: skip
            print(f"{res[-1]['set']:>14} coverage {res[-1]['coverage']:5.3f} (conf >= 0.5: {sure:5.3f}) F1 {st['f1']:5.3f} "
                  f"acc {st['acc']:5.3f}  {reasons}")
        out["gates"][gname] = res
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=float))


def _fnames(R: dict, size: str) -> np.ndarray:
    return R["fname"][(R["size"] == size) & (R["blur"] == 0)]


def _probs_from_x(head, x: np.ndarray) -> np.ndarray:
    """The shipped head's probabilities from its stacked design matrix (as ``ExpressionHead.probs``)."""
    xs = (x - head.mean) / head.scale
    xs = np.where(np.isfinite(xs), xs, 0.0)
    z = (xs @ head.coef.T + head.intercept) / head.temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


if __name__ == "__main__":
    main()
