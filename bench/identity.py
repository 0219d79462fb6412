"""Detection, tracking and identity figures on real footage, as ratios against baselines of the same run.

    .venv/bin/python bench/identity.py [--skip-mmod] [--frames 80] [--device cpu]

1. Detectors (MTCNN, dlib HOG, dlib MMOD, MediaPipe) on the hand-checked faces of
   tests/fixtures/faces_gt.json: the group photo, four crowd frames at 1080p, the same
   frames downscaled so faces are 20-40 px, and nine classroom frames (faces 10-20 px).
   Recall, false positives, ms per frame, and time relative to MTCNN (the baseline).
   MMOD is run on one frame per set with its upsampled image capped at 2 MP (dlib here
   has no BLAS: a full-HD frame upsampled would take minutes).
2. Tracking overhead at 30 faces: a 1080p classroom composed of real faces, 4 fps.
   Baseline: MTCNN on these frames. Then the tracker fed with the boxes MTCNN found, with
   the default embedder (``Settings.embedder``: dlib's network in torch, as the pipeline
   loads it) computing embeddings (a) of every face in every frame, (b) only where the
   tracker asks (``Tracker.needs_embedding``), whole run and steady state (after 4 s).
3. Local search between full searches (``Settings.full_search_every_s``): the 30-face
   classroom at 1080p and the real crowd at 4 fps, MTCNN searching every frame whole
   (baseline) against a whole search once a second and ``detect_near`` around the
   tracker's predicted boxes in between (the pipeline's rule, fallback included):
   detection time as a ratio, recall and false positives of both against ground truth
   (the crowd: against the whole search of the same frame).
4. Identity figures (id switches, fragments, ids shared by two people) on the real
   sequences: faces of the group photo leaving/returning, crossing, turning back; the
   crowd video (every frame at full size, and at 4 fps); the classroom; two people turning
   their heads; and chunked vs single pass on the crowd.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import itertools

from affectline.settings import Settings
from affectline.types import Detections
from recognition.detection import load_detector
from recognition.detection.evaluate import Score, score_frame
from recognition.reid import EMBEDDING_DIM, load_embedder
from pipeline.faces import embed_one_frame
from recognition.tracking import Tracker, link_chunks
from recognition.tracking.follow import FaceFollower, embed_then_update
from recognition.tracking.evaluate import final_ids, identity_figures, label_rows
from tests import realseq


def detection_sets() -> dict[str, tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]]:
    """name -> (frames, [(faces, optional)]) with faces under 20 px after downscaling made optional."""
    import cv2

    sets = {}
    faces, hard = realseq.annotated("group_multiface.jpg")[0]
    sets["group photo (6 faces, 75-100 px)"] = ([realseq.read_image("group_multiface.jpg")], [(faces, hard)])
    gt = realseq.annotated("crowd_walk_1080p.mp4")
    idx = sorted(gt)
    frames, _ = realseq.read_frames("crowd_walk_1080p.mp4", idx)
    sets["crowd 1080p (4 frames, 30-125 px)"] = (frames, [gt[i] for i in idx])
    s = 0.4
    small = [cv2.resize(f, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) for f in frames]
    ann = []
    for i in idx:
        f, h = gt[i][0] * s, gt[i][1] * s
        big = (f[:, 2] - f[:, 0]) >= 20
        ann.append((f[big], np.concatenate([h, f[~big]])))
    sets["crowd x0.4 (faces 20-40 px)"] = (small, ann)
    gt = realseq.annotated("classroom_4students_270p.mp4")
    idx = sorted(gt)
    frames, _ = realseq.read_frames("classroom_4students_270p.mp4", idx)
    sets["classroom 270p (9 frames, 10-20 px)"] = (frames, [gt[i] for i in idx])
    return sets


def bench_detectors(skip_mmod: bool, device: str) -> None:
    print("\n## 1. Detectors on hand-checked real faces (recall over annotated faces; FP = boxes on no face)")
    sets = detection_sets()
    names = ["mtcnn", "dlib_hog", "mediapipe"] + ([] if skip_mmod else ["dlib_mmod"])
    base_ms: dict[str, float] = {}
    print(f"{'set':38s} {'detector':10s} {'recall':>12s} {'FP':>4s} {'ms/frame':>9s} {'x MTCNN':>8s}")
    for set_name, (frames, ann) in sets.items():
        for name in names:
            kw = {"max_upsampled_pixels": 2_100_000} if name == "dlib_mmod" else {}
            det = load_detector(name, Settings(), device=device) if not kw else _mmod(**kw)
            fr, an = (frames[:1], ann[:1]) if name == "dlib_mmod" else (frames, ann)
            det.detect(fr[:1])  # warm-up: lazy allocations are not throughput
            t0 = time.perf_counter()
            out = det.detect(fr)
            ms = (time.perf_counter() - t0) * 1000 / len(fr)
            det.close()
            sc = sum((score_frame(d.boxes, f, h) for d, (f, h) in zip(out, an)), Score())
            base_ms.setdefault(set_name, ms)  # MTCNN runs first
            tag = " (1 frame)" if name == "dlib_mmod" else ""
            print(f"{set_name:38s} {name + tag:10s} {sc.tp:>3d}/{sc.tp + sc.fn:<3d}={sc.recall:4.2f} {sc.fp:>4d} "
                  f"{ms:9.0f} {ms / base_ms[set_name]:8.2f}")  # fmt: skip


def _mmod(**kw):
    from recognition.detection.dlib_detectors import DlibMMODDetector

    return DlibMMODDetector(Settings(), **kw)


def _ids_stable(ids: list[np.ndarray], dets: list[Detections], truth: list[np.ndarray]) -> bool:
    """Each true face keeps one track id over the frames, through the detection matched to it (IoU
    >= 0.5; a frame where it was missed, or a false positive, says nothing either way)."""
    from recognition.tracking.geometry import iou

    first: dict[int, int] = {}
    for tid, d, gt in zip(ids, dets, truth):
        if not len(d.boxes) or not len(gt):
            continue
        m = iou(gt, d.boxes)
        for g, j in enumerate(m.argmax(1)):
            if m[g, j] >= 0.5 and first.setdefault(g, int(tid[j])) != int(tid[j]):
                return False
    return len(first) == len(truth[0])


def bench_overhead(n_frames: int, device: str) -> None:
    print(f"\n## 2. Tracking + re-identification overhead at 30 faces (1080p, 4 fps, {n_frames} frames)")
    seq = realseq.classroom_of(n_faces=30, n_frames=n_frames, fps=4.0, size=(1080, 1920))
    s = Settings()
    det = load_detector(s.detector, s, device=device)
    k = min(6, n_frames)
    det.detect(seq.frames[:1])
    t0 = time.perf_counter()
    found = det.detect(seq.frames[:k])
    detect_s = (time.perf_counter() - t0) / k
    print(f"baseline: {s.detector} detection {detect_s * 1000:.0f} ms/frame (mean of {k} frames, "
          f"{np.mean([len(d) for d in found]):.1f} faces found of 30)")  # fmt: skip
    # The boxes the detector finds (not the truth), as the pipeline's tracker gets them.
    found += [det.detect([f])[0] for f in seq.frames[k:n_frames]]
    embedder = load_embedder(s, device)
    print(f"embedder: {s.embedder} ({type(embedder).__name__})")
    embed = embed_one_frame(embedder)
    steady_from = 4.0
    for mode in ("embed every face", "embed where needed"):
        # Embedding every face costs the same every frame: a few frames measure it.
        n = 8 if mode == "embed every face" else n_frames
        tr = Tracker()
        cost, embedded, steady_cost, steady_frames, ids = [], 0, 0.0, 0, []
        for frame, t, d in zip(seq.frames[:n], seq.times[:n], found[:n]):
            d = Detections(d.boxes, d.scores)
            t0 = time.perf_counter()
            out, n_emb = embed_then_update(tr, embed, frame, float(t), d, embed_all=mode == "embed every face")
            dt = time.perf_counter() - t0
            cost.append(dt)
            embedded += n_emb
            ids.append(out.track_id)
            if t >= steady_from:
                steady_cost += dt
                steady_frames += 1
        t0 = time.perf_counter()
        tr.finish()
        finish_s = time.perf_counter() - t0
        total = np.mean(cost)
        steady = steady_cost / max(steady_frames, 1)
        stable = _ids_stable(ids, found[:n], seq.gt_boxes[:n])
        line = (f"{mode:20s}: {embedded / n:5.1f} embeddings/frame, tracker+re-id {total * 1000:6.0f} ms/frame "
                f"= {total / detect_s:5.2f} x detection over {n} frames")  # fmt: skip
        if steady_frames:
            line += (
                f"; steady state (t >= {steady_from:.0f} s) {steady * 1000:.0f} ms/frame = {steady / detect_s:.2f} x"
            )
        print(f"{line}; finish() {finish_s * 1000:.0f} ms; each of the 30 faces keeps one id: {stable}")


def _figures(times, dets, labels, summaries) -> str:
    t = np.concatenate([[ti] * len(d) for ti, d in zip(times, dets)])
    k = np.concatenate([final_ids(d.track_id, summaries) for d in dets])
    f = identity_figures(t, np.concatenate(labels), k)
    return (f"people {f.people}, ids {f.ids}, id switches {f.id_switches}, fragments {f.fragments}, "
            f"ids shared by two people {f.shared_ids}")  # fmt: skip


def bench_identity(device: str) -> None:
    print("\n## 3. Identity on real sequences (final ids after Tracker.finish)")
    det = load_detector("mtcnn", Settings(), device=device)
    emb = load_embedder(Settings(), device)  # the default embedder, as the pipeline loads it
    for name in ("leave_and_return", "crossing", "meet_and_turn_back"):
        seq = getattr(realseq, name)()
        run = realseq.run_tracker(seq.frames, seq.times, det.detect(seq.frames), emb)
        f = realseq.sequence_figures(seq, run)
        print(f"{name:34s}: people {f.people}, ids {f.ids}, id switches {f.id_switches}, fragments {f.fragments}, "
              f"ids shared {f.shared_ids}; embedded {run.embedded}/{run.rows} faces")  # fmt: skip

    people = realseq.crowd_people()
    n_people = len(people["faces_1s"])
    for scale, step in ((1.0, 1), (1.0, 6), (0.75, 5)):
        frames, times, dets, idx = realseq.crowd_detections(scale=scale, step=step)
        run = realseq.run_tracker(frames, times, dets, emb)
        step_s = float(times[1] - times[0])
        n_vis = sum(len(s.times) * step_s >= 1.0 for s in run.summaries)
        labels = realseq.crowd_labels(dets, idx, scale)
        print(f"crowd x{scale} every {step} frame(s) ({1 / step_s:4.1f} fps): tracks with >= 1 s of face {n_vis} "
              f"(people who show their face >= 1 s: {n_people}); {_figures(times, run.dets, labels, run.summaries)}; "
              f"embedded {run.embedded}/{run.rows}")  # fmt: skip
        if (scale, step) == (0.75, 5):
            single = [final_ids(d.track_id, run.summaries) for d in run.dets]
            bounds = [0, 7, 14, len(frames)]
            runs = [realseq.run_tracker(frames[a:b], times[a:b], dets[a:b], emb) for a, b in itertools.pairwise(bounds)]
            mapping = link_chunks([r.summaries for r in runs])
            chunked = [np.array([mapping.get((c, int(k)), -1) if k >= 0 else -1 for k in final_ids(d.track_id, r.summaries)])
                       for c, r in enumerate(runs) for d in r.dets]  # fmt: skip
            x, y = np.concatenate(single), np.concatenate(chunked)
            ok = (x >= 0) & (y >= 0)
            bad = int(((x[ok][:, None] == x[ok][None]) != (y[ok][:, None] == y[ok][None])).sum() // 2)
            print(f"  chunked (3 chunks of 1.4 s, link_chunks) vs single pass: {ok.sum()} rows compared, "
                  f"{bad} row pairs disagree on 'same person'; persons {len(set(y[ok]))} vs {len(set(x[ok]))}")  # fmt: skip

    gt = realseq.annotated("classroom_4students_270p.mp4")
    idx = sorted(gt)
    frames, fps = realseq.read_frames("classroom_4students_270p.mp4", idx)
    run = realseq.run_tracker(frames, np.array(idx) / fps, det.detect(frames), emb)
    labels = [label_rows(d.boxes, gt[i][0], np.argsort(np.argsort(gt[i][0][:, 0]))) for i, d in zip(idx, run.dets)]
    print(f"classroom 270p (9 frames, 3.3 fps)  : {_figures(np.array(idx), run.dets, labels, run.summaries)}")
    frames, fps = realseq.read_frames("two_people_head_turns_270p.mp4")
    times = np.arange(len(frames)) / fps
    run = realseq.run_tracker(frames, times, det.detect(frames), emb)
    labels = [(d.centers[:, 0] > frames[0].shape[1] / 2).astype(np.int64) for d in run.dets]  # the man sits right
    print(f"two people turning heads (56 frames): {_figures(times, run.dets, labels, run.summaries)}")


def bench_local_search(device: str) -> None:
    print("\n## 3. Local search between whole-frame searches (MTCNN, 4 fps, one whole search a second)")
    det = load_detector("mtcnn", Settings(), device=device)
    seq = realseq.classroom_of(n_faces=30, n_frames=12, fps=4.0, size=(1080, 1920))
    crowd, fps = realseq.read_frames("crowd_walk_1080p.mp4", list(range(0, 105, 6)))
    sets = [("30-face classroom, 1080p", seq.frames, seq.times, seq.gt_boxes),
            ("crowd, 1080p (truth: whole search)", crowd, np.arange(len(crowd)) * 6 / fps, None)]  # fmt: skip
    det.detect(seq.frames[:1])
    for name, frames, times, gt in sets:
        t0 = time.perf_counter()
        whole = [det.detect([f])[0] for f in frames]
        whole_s = time.perf_counter() - t0
        truth = gt or [d.boxes for d in whole]
        # The pipeline's own rule (whole once a second, else near the tracks), motion-only tracking.
        follower = FaceFollower(det, None, 1.0)
        t0 = time.perf_counter()
        local = [d for f, t in zip(frames, times) for d in follower.step([f], np.array([t]))]
        n_whole = follower.counts.full_searches
        local_s = time.perf_counter() - t0
        sw = sum((score_frame(d.boxes, g) for d, g in zip(whole, truth)), Score())
        sl = sum((score_frame(d.boxes, g) for d, g in zip(local, truth)), Score())
        print(f"{name}: {len(frames)} frames; whole search every frame {1000 * whole_s / len(frames):.0f} ms/frame, "
              f"recall {sw.recall:.3f}, {sw.fp} FP | local search {1000 * local_s / len(frames):.0f} ms/frame "
              f"({n_whole} frames searched whole), recall {sl.recall:.3f}, {sl.fp} FP | time ratio {local_s / whole_s:.2f}x")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-mmod", action="store_true", help="leave out dlib MMOD (minutes on CPU)")
    ap.add_argument("--frames", type=int, default=80, help="frames of the 30-face sequence (4 fps)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", choices=["detectors", "overhead", "local", "identity"], help="run one part")
    a = ap.parse_args()
    if a.only in (None, "detectors"):
        bench_detectors(a.skip_mmod, a.device)
    if a.only in (None, "overhead"):
        bench_overhead(a.frames, a.device)
    if a.only in (None, "local"):
        bench_local_search(a.device)
    if a.only in (None, "identity"):
        bench_identity(a.device)


if __name__ == "__main__":
    main()
