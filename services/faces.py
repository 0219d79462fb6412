"""Faces to name people by sight: a crop of the review copy at a moment the person was seen, and the
frame at any moment, cut on demand with PyAV.

Who sees what (``face_of``):

- the viewer must see the session, with the same rights as for its review copy
  (``services.review.review_file``: the session's group, ``view_sessions``, and the group's
  video-review setting), and may name people (``manage_people``);
- the person's face may be shown: ``storage.consent.face_image_allowed`` (valid thumbnails consent
  where the group requires consent; a recorded "no" for analysis or thumbnails honoured in every
  group), the same rule that decides whether a thumbnail may be stored;
- a stored thumbnail (kept only with ``Settings.store_thumbnails``) is shown as it is; otherwise the
  face is cut from the review copy, which exists only where the group allows video review. No face
  image is written anywhere: the crop lives in the reply only.

A refusal for a session or person the viewer may not see raises ``LookupError`` (the same words
whether it is missing or hidden); a face the rules do not allow comes back without an image and
with the reason in words, for the page to show. Viewing is not audited, as watching the review copy
is not: what a viewer may see is decided by the rules above; changes, exports and deletions are
audited where they happen.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from services.actor import Actor, require
from services.db import scope
from services.review import review_file
from storage import consent
from storage.db import from_blob
from storage.models import FeatureSeries, Group, Person, Recording, Track

CROP_MARGIN = 0.6  # of the face box's size on each side: hair, chin and ears help people recognise a child
CROP_HEIGHT = 160  # px of the image shown (small faces of a 360p copy are scaled up for the eye)
JPEG_QUALITY = 85


@dataclass(frozen=True)
class Face:
    """One person's face for the naming page: ``jpeg`` or, when it may not be shown, ``reason``."""

    person_id: int
    label: str
    session_id: int | None
    t: float | None  # seconds into the session of the moment shown
    jpeg: bytes | None
    source: str  # "thumbnail", "review copy" or "" (nothing shown)
    reason: str = ""

    @property
    def shown(self) -> bool:
        return self.jpeg is not None


def _visible_person(s, actor: Actor, person_id: int) -> Person:
    p = s.get(Person, person_id)
    if p is None or not actor.sees(p.group_id):
        raise LookupError(f"person {person_id} does not exist or is not visible to you")
    return p


def clearest_moment(series: list[FeatureSeries]) -> float | None:
    """Midpoint of the bin with the clearest frontal view: face height times a frontal factor from
    the bin's head pose (a tilted or turned head is hard to recognise, for people and detectors
    alike); None when no bin has pose and size."""
    best: tuple[float, float] | None = None
    for fs in series:
        col = {n: i for i, n in enumerate(fs.names)}
        if not fs.n or not {"yaw", "pitch", "roll", "face_px"} <= set(col):
            continue
        X = from_blob(fs.data, len(fs.names)).astype(np.float64)
        yaw, pitch, roll, px = (np.abs(X[:, col[k]]) for k in ("yaw", "pitch", "roll", "face_px"))
        frontal = np.clip(1 - yaw / 45, 0, 1) * np.clip(1 - pitch / 40, 0, 1) * np.clip(1 - roll / 30, 0, 1)
        score = np.nan_to_num(frontal * px, nan=-1.0)
        i = int(np.argmax(score))
        if score[i] > 0 and (best is None or score[i] > best[0]):
            best = (float(score[i]), fs.grid_start + (i + 0.5) * fs.grid_step)
    return None if best is None else best[1]


def best_sample(tracks: list[Track], t: float | None = None) -> tuple[Track, float, np.ndarray] | None:
    """(track, time, box) of the sample to show: the one nearest ``t``, else the largest face box."""
    best = None
    for tr in tracks:
        times, boxes = from_blob(tr.times), from_blob(tr.face_boxes, 4)
        ok = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        for i in np.flatnonzero(ok[: len(times)]):
            area = float((boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1]))
            score = -abs(float(times[i]) - t) if t is not None else area
            if best is None or score > best[0]:
                best = (score, tr, float(times[i]), boxes[i].astype(np.float64))
    return None if best is None else best[1:]


def decode_frame(path: Path, t: float):
    """The review copy's frame shown at ``t`` seconds (a PIL image): seek to the keyframe before it
    (one every 2 s), decode forward to the last frame starting at or before ``t``."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        v.thread_type = "AUTO"
        c.seek(max(0, int(t / v.time_base)), stream=v, backward=True, any_frame=False)
        last = None
        for f in c.decode(v):
            ft = float(f.pts * f.time_base) if f.pts is not None else 0.0
            if last is not None and ft > t + 1e-6:
                break
            last = f
            if ft >= t - 1e-6:
                break
        if last is None:
            raise LookupError(f"the review copy has no frame at {t:.2f} s")
        return last.to_image()


def _jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def crop_face(img, box: np.ndarray, src_size: tuple[int, int], margin: float = CROP_MARGIN,
              height: int = CROP_HEIGHT):  # fmt: skip
    """The face ``box`` (source pixels, x0 y0 x1 y1) cut from ``img`` (the review copy's smaller
    frame) with ``margin`` around it, scaled to ``height`` pixels."""
    from PIL import Image

    sx, sy = img.width / max(src_size[0], 1), img.height / max(src_size[1], 1)
    x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    mw, mh = (x1 - x0) * margin, (y1 - y0) * margin
    left, top = max(0, int(x0 - mw)), max(0, int(y0 - mh))
    right, bottom = min(img.width, int(np.ceil(x1 + mw))), min(img.height, int(np.ceil(y1 + mh)))
    if right - left < 2 or bottom - top < 2:
        raise ValueError(f"face box {box.round(1).tolist()} lies outside the {img.width}x{img.height} frame")
    face = img.crop((left, top, right, bottom))
    w = max(1, round(face.width * height / face.height))
    return face.resize((w, height), Image.Resampling.LANCZOS)


def face_of(url: str, data_dir: Path, actor: Actor, person_id: int, session_id: int | None = None,
            t: float | None = None) -> Face:  # fmt: skip
    """The person's face in ``session_id`` (default: their latest session with a track), at ``t`` (default:
    their clearest frontal view, ``clearest_moment``), if the rules allow; else the reason. ``LookupError`` for a person
    or session the actor may not see."""
    require(actor, "manage_people")
    with scope(url) as s:
        p = _visible_person(s, actor, person_id)
        label = p.label
        q = select(Track).where(Track.person_id == person_id)
        if session_id is not None:
            q = q.where(Track.session_id == session_id)
        tracks = list(s.scalars(q.order_by(Track.session_id.desc(), Track.t_start)))
        if session_id is None and tracks:
            session_id = tracks[0].session_id
            tracks = [tr for tr in tracks if tr.session_id == session_id]
        if not tracks:
            return Face(person_id, label, session_id, None, None, "", f"{label} has no track in this session")
        rec = s.get(Recording, session_id)
        if rec is None or not actor.sees(rec.group_id):
            raise LookupError(f"session {session_id} does not exist or is not visible to you")
        ok, why = consent.face_image_allowed(s, person_id)
        if not ok:
            return Face(person_id, label, session_id, None, None, "", f"no thumbnail: {why}")
        if t is None:
            fs = s.scalars(select(FeatureSeries).where(FeatureSeries.person_id == person_id,
                                                       FeatureSeries.session_id == session_id)).all()  # fmt: skip
            clear = clearest_moment(list(fs))
        sample = best_sample(tracks, t if t is not None else clear)
        if sample is None:
            return Face(person_id, label, session_id, None, None, "", f"no thumbnail: no face box stored for {label}")
        track, when, box = sample
        if t is None and track.thumbnail is not None:  # kept by the store_thumbnails setting
            return Face(person_id, label, session_id, when, bytes(track.thumbnail), "thumbnail")
        src = (int(rec.width or 0), int(rec.height or 0))
        group = s.get(Group, rec.group_id) if rec.group_id is not None else None
        where = f"group {group.name}" if group is not None else "this session"
    try:
        path = review_file(url, data_dir, actor, session_id)
    except LookupError:
        return Face(person_id, label, session_id, when, None, "",
                    f"no thumbnail: no review copy of this session may be shown (video review is off for {where}, "
                    "or the copy was not written), and this installation keeps no thumbnails")  # fmt: skip
    img = decode_frame(path, when)
    if src[0] <= 0 or src[1] <= 0:
        src = (img.width, img.height)
    return Face(person_id, label, session_id, when, _jpeg(crop_face(img, box, src)), "review copy")


def frame_at(url: str, data_dir: Path, actor: Actor, session_id: int, t: float) -> bytes:
    """The review copy's frame at ``t`` seconds as JPEG, for anyone who may watch the copy
    (``LookupError`` otherwise, as for the copy itself)."""
    path = review_file(url, data_dir, actor, session_id)
    return _jpeg(decode_frame(path, max(0.0, float(t))))


def unknown_faces(url: str, data_dir: Path, actor: Actor, session_id: int | None = None,
                  limit: int | None = None) -> list[Face]:  # fmt: skip
    """A face (or the reason there is none) for each 'Unknown N' person the actor sees, of one session or
    all (newest persons first; at most ``limit``: each face is a decode, ~35 ms)."""
    require(actor, "manage_people")
    with scope(url) as s:
        q = select(Person.id).where(Person.enrolled.is_(False)).order_by(Person.id.desc())
        if session_id is not None:
            q = q.where(Person.id.in_(select(Track.person_id).where(Track.session_id == session_id)))
        pids = [pid for pid, gid in s.execute(q.add_columns(Person.group_id)) if actor.sees(gid)][:limit]
    return [face_of(url, data_dir, actor, pid, session_id) for pid in pids]
