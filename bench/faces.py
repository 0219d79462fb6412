"""Faces for naming people: what cutting a face from the review copy on demand costs, against
decoding the frame alone (the part no crop can avoid), measured in the same run.

    .venv/bin/python bench/faces.py [--minutes 10] [--n 40]

A review copy is written as the analysis writes one (H.264, 12.5 fps, a keyframe every 2 s, no
B-frames) from the real two-people clip's frames looped to ``--minutes``; a temporary SQLite
database gets its session, a group that allows video review, a teacher and an 'Unknown' person
whose track has a sample every 0.25 s. Timed at ``--n`` random moments, median and 90th centile:

- decode: ``services.faces.decode_frame`` (seek to the keyframe before, decode to the moment);
- face: ``services.faces.face_of`` at that moment (login rights, consent, track read, decode, crop,
  resize to 160 px, JPEG);
- frame: ``services.faces.frame_at`` (rights, decode, JPEG of the whole 480x270 frame).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_copy(src: Path, out: Path, minutes: float) -> tuple[int, int, float]:
    """The clip's frames looped into a review-copy-like MP4; returns (width, height, seconds)."""
    import av

    from tasks.review_copy import CRF, GOP_SECONDS, PRESET

    with av.open(str(src)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    h, w = frames[0].shape[:2]
    fps = 12.5
    n = int(minutes * 60 * fps)
    with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as o:
        v = o.add_stream("libx264", rate=Fraction(25, 2))
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        gop = str(int(GOP_SECONDS * fps))
        v.options = {"preset": PRESET, "crf": str(CRF), "bf": "0", "g": gop, "keyint_min": gop}
        for k in range(n):
            k_loop = k % (2 * len(frames) - 2)  # forwards then backwards: no jump at the loop
            img = frames[k_loop if k_loop < len(frames) else 2 * len(frames) - 2 - k_loop]
            for p in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                o.mux(p)
        for p in v.encode(None):
            o.mux(p)
    return w, h, n / fps


def timed(fn, moments) -> tuple[float, float]:
    runs = []
    for t in moments:
        t0 = time.perf_counter()
        fn(t)
        runs.append(time.perf_counter() - t0)
    runs.sort()
    return statistics.median(runs), runs[int(0.9 * (len(runs) - 1))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--n", type=int, default=40)
    args = ap.parse_args()

    import numpy as np

    from services import faces
    from services.actor import actor_for_user
    from storage import access, review
    from storage.db import migrate, session_scope, to_blob
    from storage.models import Person, Track
    from storage.repo import create_recording, get_or_create_group

    tmp = Path(tempfile.mkdtemp(prefix="affectline-bench-faces-"))
    data = tmp / "data"
    url = f"sqlite:///{tmp / 'bench.db'}"
    migrate(url)
    with session_scope(url) as s:
        g = get_or_create_group(s, "bench class", "classroom")
        review.set_group_setting(s, g.id, True, "bench")
        user = access.create_user(s, "bench-teacher", "teacher")
        access.grant(s, user.id, g.id)
        rec = create_recording(s, "bench.mp4", "classroom", group_id=g.id)
        sid, uid = rec.id, user.id
    path = review.copy_path(data, sid)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    w, h, seconds = write_copy(ROOT / "data" / "media" / "two_people_head_turns_270p.mp4", path, args.minutes)
    write_s = time.perf_counter() - t0
    times = np.arange(0.0, seconds, 0.25)
    with session_scope(url) as s:
        r = s.get(type(rec), sid)
        r.review_path, r.width, r.height, r.duration = review.relative(data, path), w, h, seconds
        p = Person(label="Unknown 1", enrolled=False, group_id=r.group_id)
        s.add(p)
        s.flush()
        box = np.tile(np.array([[60.0, 60.0, 140.0, 150.0]]), (len(times), 1))  # the woman's face on the left
        s.add(Track(session_id=sid, track_key=0, person_id=p.id, t_start=0.0, t_end=float(times[-1]),
                    n_samples=len(times), times=to_blob(times), face_boxes=to_blob(box),
                    context_boxes=to_blob(box)))  # fmt: skip
        pid = p.id
        actor = actor_for_user(s, uid)
    rng = np.random.default_rng(0)
    moments = [float(x) for x in rng.uniform(0, seconds - 1, args.n)]
    faces.decode_frame(path, 1.0)  # warm the codec and the file cache once
    dec = timed(lambda t: faces.decode_frame(path, t), moments)
    face = timed(lambda t: faces.face_of(url, data, actor, pid, sid, t=t), moments)
    frame = timed(lambda t: faces.frame_at(url, data, actor, sid, t), moments)
    size_mb = path.stat().st_size / 1e6
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; review copy {w}x{h}, "
          f"{seconds / 60:.1f} min, {size_mb:.1f} MB (written in {write_s:.1f} s)")
    print(f"{args.n} random moments, median / 90th centile:")
    print(f"  decode the frame (baseline): {dec[0] * 1e3:6.1f} / {dec[1] * 1e3:6.1f} ms")
    for name, (med, p90) in (("face crop (face_of):", face), ("whole frame (frame_at):", frame)):
        print(f"  {name:28} {med * 1e3:6.1f} / {p90 * 1e3:6.1f} ms  ({med / dec[0]:.2f}x decode)")


if __name__ == "__main__":
    main()
