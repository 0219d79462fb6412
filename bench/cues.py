"""How well the cue model's academic classes separate labelled faces: ROC AUC, absolute vs person-relative.

    PYTHONPATH=. .venv/bin/python bench/cues.py [--dir ../shared/fixtures/expressions] [--cache /tmp/affectline_cues_feats.npz]

Per photo, as the pipeline does: the pipeline's detector (``Settings.detector``) on the
whole image, the most confident face, then the pipeline's face step (landmarker +
blendshapes + pose, FER) on that box. Features are cached in ``--cache`` (the expensive
part; delete it to recompute). Then, for three readings of the same features:

  * absolute: ``CueModel().predict`` with no baseline (the cue model before issue 17);
  * relative: each photo against its person's baseline. A photo has no session, so the
    baseline is the per-identity median of the dev set's photos of that person (LFW name,
    ``George_W_Bush_0012.jpg`` -> ``George_W_Bush``), over the *other* photos of the person
    (leave-one-out, so a face is never its own baseline), shrunk toward the population
    baseline by ``n / (n + CueParams.baseline_prior_n)`` exactly as a session is; a person
    with one photo gets the population baseline (no shift);
  * relative, all photos: as above, the photo itself included (what a session does: its
    median includes every sample).

ROC AUCs printed (higher = the score ranks the labelled faces first; 0.5 = chance):
  Confusion  vs angry/disgust/fear/sad faces (the rest: happy, surprise, neutral)
  Neutrality vs neutral faces
  Enjoyment  vs happy faces
over all readable photos (the gate's judgement: the pipeline gives no academic emotion
for the others) and over those of identities with more than one photo (where a baseline
exists at all), and how many identities had more than one photo. No timing: nothing here is a speed figure.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NEGATIVE = ("angry", "disgust", "fear", "sad")


def identity(name: str) -> str:
    return Path(name).stem.rsplit("_", 1)[0]


def extract(folder: Path, cache: Path) -> dict[str, np.ndarray]:
    """Blendshapes, pose, FER and 'found' of the most confident face per labelled photo (cached)."""
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        return {k: z[k] for k in z.files}
    import cv2

    from affectline.settings import Settings
    from affectline.types import Detections
    from pipeline.analyse import Pipeline

    rows = list(csv.DictReader(open(folder / "labels.csv")))
    s = Settings(torch_threads=1)
    pipe = Pipeline(s, device="cpu")
    out = {k: [] for k in ("name", "label", "blend", "pose", "expr", "found", "detected", "readable")}
    for i, r in enumerate(rows):
        bgr = cv2.imread(str(folder / "images" / r["file"]))
        frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        d = pipe.detector.detect([frame])[0]
        ok = len(d) > 0
        if ok:
            j = int(np.argmax(d.scores))
            one = Detections(d.boxes[j : j + 1], d.scores[j : j + 1])
            fr = pipe.faces.run([frame], [one])[0]
            blend, pose, expr, found = fr.blend[0], fr.pose[0], fr.expr[0], bool(fr.found[0])
            readable = bool(fr.readable[0])
        else:
            blend, pose, expr, found = np.full(52, np.nan), np.full(3, np.nan), np.full(7, np.nan), False
            readable = False
        for k, v in (("name", r["file"]), ("label", r["label"]), ("blend", blend), ("pose", pose), ("expr", expr),
                     ("found", found), ("detected", ok), ("readable", readable)):  # fmt: skip
            out[k].append(v)
        if i % 200 == 0:
            print(f"  features {i}/{len(rows)}", file=sys.stderr, flush=True)
    pipe.close()
    arrays = {k: np.asarray(v) for k, v in out.items()}
    np.savez(cache, **arrays)
    return arrays


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by ranks (ties share their mean rank): P(score of a positive > score of a negative)."""
    from scipy.stats import rankdata

    score, positive = np.asarray(score, np.float64), np.asarray(positive, bool)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    r = rankdata(score)
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def baselines(f: dict[str, np.ndarray], leave_one_out: bool):
    """One ``CueBaseline`` per photo: its identity's other photos (or all of them), shrunk toward the population."""
    from recognition.academic.cues import CueModel

    model = CueModel()
    ids = np.array([identity(x) for x in f["name"]])
    raw = model.inputs(f["blend"], f["pose"], f["expr"], np.ones(len(ids), bool))
    out = []
    groups: dict[str, np.ndarray] = {}
    for name in np.unique(ids):
        groups[name] = np.flatnonzero(ids == name)
    readable = f["readable"].astype(bool)
    for i, name in enumerate(ids):
        idx = groups[name]
        if leave_one_out:
            idx = idx[idx != i]
        out.append(model.fit_baseline(raw[idx[readable[idx]]]))  # readable photos only, as a session
    multi = sum(len(v) > 1 for v in groups.values())
    return out, multi, len(groups)


def scores(f: dict[str, np.ndarray], per_photo=None) -> np.ndarray:
    from recognition.academic.cues import CueModel

    model = CueModel()
    n = len(f["name"])
    vis = np.ones(n, bool)
    if per_photo is None:
        return model.predict(f["blend"], f["pose"], f["expr"], vis)[0]
    return np.concatenate([
        model.predict(f["blend"][i : i + 1], f["pose"][i : i + 1], f["expr"][i : i + 1], vis[:1], baseline=b)[0]
        for i, b in enumerate(per_photo)
    ])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=ROOT.parent / "shared" / "fixtures" / "expressions")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/affectline_cues_feats.npz"))
    args = ap.parse_args()
    f = extract(args.dir, args.cache)
    keep = f["detected"].astype(bool)
    f = {k: v[keep] for k, v in f.items()}
    print(f"{args.dir}: {len(keep)} photos, {int(keep.sum())} with a face detected, "
          f"{int(f['found'].sum())} with landmarks, {int(f['readable'].sum())} readable (the gate)")  # fmt: skip
    loo, multi, n_ids = baselines(f, leave_one_out=True)
    incl, _, _ = baselines(f, leave_one_out=False)
    reads = {"absolute": scores(f), "relative (LOO)": scores(f, loo), "relative (all)": scores(f, incl)}
    # Scored over the readable faces: the only ones the pipeline gives an academic emotion.
    ok = f["readable"].astype(bool)
    reads = {k: a[ok] for k, a in reads.items()}
    lab = f["label"][ok]
    print(f"identities: {n_ids}, of which {multi} with more than one photo (the others: population baseline)")
    print(f"{'ROC AUC':40s}" + "".join(f"{k:>16s}" for k in reads))
    targets = {
        "Confusion vs angry/disgust/fear/sad": (2, np.isin(lab, NEGATIVE)),
        "Neutrality vs neutral": (0, lab == "neutral"),
        "Enjoyment vs happy": (1, lab == "happy"),
    }
    for name, (j, pos) in targets.items():
        print(f"{name:40s}" + "".join(f"{auc(a[:, j], pos):16.3f}" for a in reads.values()))
    # Where the person-relative reading can act at all: photos whose identity has other photos.
    ids = np.array([identity(x) for x in f["name"][ok]])
    _, inv, counts = np.unique(ids, return_inverse=True, return_counts=True)
    many = counts[inv] > 1
    print(f"the {int(many.sum())} readable photos of identities with more than one photo:")
    for name, (j, pos) in targets.items():
        print(f"{name:40s}" + "".join(f"{auc(a[many, j], pos[many]):16.3f}" for a in reads.values()))
    top = {k: np.bincount(a.argmax(1), minlength=5) / len(a) for k, a in reads.items()}
    from affectline.types import ACADEMIC_CLASSES

    print(f"top-class share over the {int(ok.sum())} readable photos:")
    for k, v in top.items():
        print(f"  {k:16s} " + "  ".join(f"{c} {x:.2f}" for c, x in zip(ACADEMIC_CLASSES, v)))


if __name__ == "__main__":
    main()
