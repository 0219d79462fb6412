"""Clinician tags to and from the behaviour coders' files: ELAN ``.eaf`` and BORIS "aggregated events" CSV.

The pure half reads and writes small ``TagRecord``s (a person's name, a label, a range in seconds, a note,
the baseline flag); it knows nothing of the database. A record whose start equals its end is a point
event (BORIS ``POINT``); everything else is a state (a range).

* ELAN (EAF 3.0, read by ELAN 6): times are integer milliseconds in ``TIME_ORDER``; one tier per person
  and label (``TIER_ID`` "Child Y - fear", ``PARTICIPANT`` the person, ``ANNOTATION_VALUE`` the label),
  split into a second tier where two tags of one label overlap (ELAN forbids overlap on a tier). Notes
  ride on a dependent tier (Symbolic_Association); baseline tiers are listed in header properties.
  Reading takes any tier layout: the label is the annotation's value (the tier's id when the value is
  empty), the person the tier's ``PARTICIPANT``.
* BORIS: the columns of BORIS's aggregated-events export (``BORIS_COLUMNS``); ``Behavior`` is the label,
  ``Subject`` the person, ``Comment start`` the note, ``Behavioral category`` "baseline" for baseline tags.

XML is parsed with ``defusedxml`` (no DTD, no entities, no external references: a file cannot make the
parser read a local file or expand a billion laughs). CSV cells are neutralised (``affectline.csvsafe``).

The service half (``export_tags``, ``import_tags``) reads and writes through storage in one transaction:
an import stores every tag of the file or none, skips (and counts) tags equal to a current one, refuses
times outside the session and persons without consent, and names every bad row or annotation on its
own line. Both are audited.
"""

from __future__ import annotations

import csv
import io
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from affectline.csvsafe import header_row, restore, writer_row

Format = Literal["eaf", "boris"]
FORMATS: tuple[str, ...] = ("eaf", "boris")
MAX_BYTES = 20 * 1024 * 1024  # a tag file is kilobytes; refuse anything that could only be a mistake or an attack
MAX_RECORDS = 100_000
TOLERANCE_S = 0.001  # a millisecond: ELAN's resolution, and what "the same range" means on import

BORIS_COLUMNS: tuple[str, ...] = (
    "Observation id", "Observation date", "Description", "Media file name", "Media duration (s)", "FPS",
    "Subject", "Behavior", "Behavioral category", "Behavior type", "Start (s)", "Stop (s)", "Duration (s)",
    "Comment start", "Comment stop",
)  # fmt: skip
_BORIS_REQUIRED = ("Behavior", "Start (s)")
BASELINE_CATEGORY = "baseline"
_BASELINE_PROPERTY = "affectline:baseline-tier"
_POINT_PROPERTY = "affectline:point-tier"
_LT_TAG, _LT_NOTE = "affectline-behaviour", "affectline-note"


class TagFileError(ValueError):
    """A tag file that cannot be imported: ``lines`` holds one line per bad row or annotation."""

    def __init__(self, name: str, lines: Sequence[str]):
        self.name = name
        self.lines = list(lines)
        shown = self.lines[:20]
        more = f" (and {len(self.lines) - 20} more)" if len(self.lines) > 20 else ""
        super().__init__(f"{name}: nothing imported; " + "; ".join(shown) + more)


@dataclass(frozen=True)
class TagRecord:
    """One coded event as a file holds it. ``where`` names its row or annotation for error lines."""

    person: str
    label: str
    t_start: float
    t_end: float
    note: str = ""
    is_baseline: bool = False
    where: str = ""

    @property
    def kind(self) -> str:
        return "point" if self.t_end == self.t_start else "state"


@dataclass
class Parsed:
    records: list[TagRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# --- ELAN ----------------------------------------------------------------------------------


def _ms(seconds: float) -> int:
    return int(round(float(seconds) * 1000))


def _tiers(records: Sequence[TagRecord]) -> list[tuple[str, str, bool, list[TagRecord]]]:
    """(tier id, person, baseline, records) with no two records of a tier overlapping."""
    lanes: dict[tuple[str, str, bool, bool], list[list[TagRecord]]] = {}
    for r in sorted(records, key=lambda r: (r.person, r.label, r.is_baseline, r.t_start, r.t_end)):
        rows = lanes.setdefault((r.person, r.label, r.is_baseline, r.kind == "point"), [])
        for lane in rows:
            if _slot_ms(lane[-1])[1] <= _slot_ms(r)[0]:
                lane.append(r)
                break
        else:
            rows.append([r])
    out, used = [], set()
    for (person, label, base, point), rows in lanes.items():
        for i, lane in enumerate(rows):
            what = ("baseline " if base else "") + label + (" (points)" if point else "")
            tid = " - ".join(x for x in (person, what) if x) + (f" ({i + 1})" if i else "")
            while tid in used:  # two people or labels whose names collide after joining
                tid += "'"
            used.add(tid)
            out.append((tid, person, base, lane))
    return out


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """Text XML 1.0 can hold: control characters (a pasted note may carry one) dropped."""
    return _XML_BAD.sub("", text)


def write_eaf(records: Sequence[TagRecord], *, media_url: str = "", author: str = "", when: datetime | None = None,
              session: str = "") -> bytes:  # fmt: skip
    """An EAF 3.0 document holding ``records`` (times rounded to the millisecond).

    A point event becomes a 1 ms annotation (ELAN draws nothing of length 0) on a tier the header
    lists as a point tier, so it reads back as a point."""
    when = when or datetime.now(timezone.utc)
    author = _xml_text(author)
    root = ET.Element("ANNOTATION_DOCUMENT", {
        "AUTHOR": author, "DATE": when.isoformat(timespec="seconds"), "FORMAT": "3.0", "VERSION": "3.0",
        "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
        "xsi:noNamespaceSchemaLocation": "http://www.mpi.nl/tools/elan/EAFv3.0.xsd",
    })  # fmt: skip
    header = ET.SubElement(root, "HEADER", {"MEDIA_FILE": "", "TIME_UNITS": "milliseconds"})
    if media_url:  # only a real file URL: ELAN tries to open it (the clinician links the video in ELAN otherwise)
        ET.SubElement(header, "MEDIA_DESCRIPTOR", {"MEDIA_URL": _xml_text(media_url), "MIME_TYPE": "video/mp4"})
    if session:
        ET.SubElement(header, "PROPERTY", {"NAME": "affectline:session"}).text = _xml_text(session)
    tiers = _tiers(records)
    # Time slots numbered in time order, as ELAN writes them.
    times = sorted({v for _, _, _, lane in tiers for r in lane for v in _slot_ms(r)})
    slot_id = {t: f"ts{i + 1}" for i, t in enumerate(times)}
    order = ET.SubElement(root, "TIME_ORDER")
    for t in times:
        ET.SubElement(order, "TIME_SLOT", {"TIME_SLOT_ID": slot_id[t], "TIME_VALUE": str(t)})
    tier_elems, n_ann, notes_any = [], 0, False
    for tid, person, base, lane in tiers:
        tid, person = _xml_text(tid), _xml_text(person)
        tier = ET.Element("TIER", {"LINGUISTIC_TYPE_REF": _LT_TAG, "TIER_ID": tid, "PARTICIPANT": person,
                                   "ANNOTATOR": author})  # fmt: skip
        note_tier = ET.Element("TIER", {"LINGUISTIC_TYPE_REF": _LT_NOTE, "PARENT_REF": tid, "TIER_ID": f"{tid} - note",
                                        "PARTICIPANT": person, "ANNOTATOR": author})  # fmt: skip
        for r in lane:
            a, b = _slot_ms(r)
            n_ann += 1
            aid = f"a{n_ann}"
            ann = ET.SubElement(ET.SubElement(tier, "ANNOTATION"), "ALIGNABLE_ANNOTATION",
                                {"ANNOTATION_ID": aid, "TIME_SLOT_REF1": slot_id[a], "TIME_SLOT_REF2": slot_id[b]})  # fmt: skip
            ET.SubElement(ann, "ANNOTATION_VALUE").text = _xml_text(r.label)
            if r.note:
                n_ann += 1
                ref = ET.SubElement(ET.SubElement(note_tier, "ANNOTATION"), "REF_ANNOTATION",
                                    {"ANNOTATION_ID": f"a{n_ann}", "ANNOTATION_REF": aid})  # fmt: skip
                ET.SubElement(ref, "ANNOTATION_VALUE").text = _xml_text(r.note)
        tier_elems.append(tier)
        if len(note_tier):
            tier_elems.append(note_tier)
            notes_any = True
        if base:
            ET.SubElement(header, "PROPERTY", {"NAME": _BASELINE_PROPERTY}).text = tid
        if lane[0].kind == "point":
            ET.SubElement(header, "PROPERTY", {"NAME": _POINT_PROPERTY}).text = tid
    ET.SubElement(header, "PROPERTY", {"NAME": "lastUsedAnnotationId"}).text = str(n_ann)
    root.extend(tier_elems)
    ET.SubElement(root, "LINGUISTIC_TYPE", {"GRAPHIC_REFERENCES": "false", "LINGUISTIC_TYPE_ID": _LT_TAG,
                                            "TIME_ALIGNABLE": "true"})  # fmt: skip
    if notes_any:
        ET.SubElement(root, "LINGUISTIC_TYPE", {"CONSTRAINTS": "Symbolic_Association", "GRAPHIC_REFERENCES": "false",
                                                "LINGUISTIC_TYPE_ID": _LT_NOTE, "TIME_ALIGNABLE": "false"})  # fmt: skip
        ET.SubElement(root, "CONSTRAINT", {"DESCRIPTION": "1-1 association with a parent annotation",
                                           "STEREOTYPE": "Symbolic_Association"})  # fmt: skip
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode").encode("utf-8") + b"\n"


def _slot_ms(r: TagRecord) -> tuple[int, int]:
    a = _ms(r.t_start)
    return (a, a + 1) if r.kind == "point" else (a, max(_ms(r.t_end), a + 1))


def _safe_xml(data: bytes) -> ET.Element:
    """Parse without DTDs, entities or external references (defusedxml); ``ValueError`` with the reason."""
    try:
        from defusedxml import DefusedXmlException
        from defusedxml.ElementTree import fromstring
    except ImportError:  # the same rules by hand: refuse any DTD before the standard parser sees it
        if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
            raise ValueError("it declares a DTD or entities, which are not accepted") from None
        try:
            return ET.fromstring(data)
        except ET.ParseError as e:
            raise ValueError(f"it is not well-formed XML ({e})") from None
    try:
        return fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise ValueError("it declares a DTD or entities, which are not accepted") from None
    except ET.ParseError as e:
        raise ValueError(f"it is not well-formed XML ({e})") from None


def read_eaf(data: bytes) -> Parsed:
    """Every time-aligned annotation of an EAF file as a record; one error line per unusable annotation.

    Annotations whose slots have no time (ELAN's unaligned slots between aligned ones) are refused by
    name: a tag needs both ends."""
    root = _safe_xml(data)
    if root.tag != "ANNOTATION_DOCUMENT":
        raise ValueError(f"it is not an ELAN file (root element <{root.tag}>, expected <ANNOTATION_DOCUMENT>)")
    header = root.find("HEADER")
    units = header.get("TIME_UNITS", "milliseconds") if header is not None else "milliseconds"
    if units != "milliseconds":
        raise ValueError(f"its TIME_UNITS is {units!r}; only milliseconds are read")
    props = header.findall("PROPERTY") if header is not None else []
    baseline = {p.text or "" for p in props if p.get("NAME") == _BASELINE_PROPERTY}
    points = {p.text or "" for p in props if p.get("NAME") == _POINT_PROPERTY}
    out = Parsed()
    slots: dict[str, int | None] = {}
    for ts in root.iterfind("TIME_ORDER/TIME_SLOT"):
        sid, value = ts.get("TIME_SLOT_ID", ""), ts.get("TIME_VALUE")
        try:
            slots[sid] = None if value is None else int(value)
        except ValueError:
            out.errors.append(f"time slot {sid}: TIME_VALUE {value!r} is not a whole number of milliseconds")
            slots[sid] = None
    tiers = root.findall("TIER")
    notes: dict[str, str] = {}
    for tier in tiers:
        for ref in tier.iterfind("ANNOTATION/REF_ANNOTATION"):
            notes[ref.get("ANNOTATION_REF", "")] = (ref.findtext("ANNOTATION_VALUE") or "").strip()
    for tier in tiers:
        tid = tier.get("TIER_ID", "")
        person = (tier.get("PARTICIPANT") or "").strip()
        for ann in tier.iterfind("ANNOTATION/ALIGNABLE_ANNOTATION"):
            aid = ann.get("ANNOTATION_ID", "?")
            where = f"annotation {aid} (tier {tid!r})"
            a, b = slots.get(ann.get("TIME_SLOT_REF1", ""), None), slots.get(ann.get("TIME_SLOT_REF2", ""), None)
            if a is None or b is None:
                out.errors.append(f"{where}: a time slot it refers to is missing or has no time")
                continue
            label = (ann.findtext("ANNOTATION_VALUE") or "").strip() or tid.strip()
            if not label:
                out.errors.append(f"{where}: no label (empty value on a tier without a name)")
                continue
            if tid in points:
                b = a
            out.records.append(TagRecord(person, label, a / 1000.0, b / 1000.0, notes.get(aid, ""), tid in baseline,
                                         where))  # fmt: skip
    return out


# --- BORIS ---------------------------------------------------------------------------------


def write_boris(records: Sequence[TagRecord], *, observation: str = "", media: str = "", duration: float | None = None,
                fps: float | None = None, when: datetime | None = None) -> str:  # fmt: skip
    """BORIS aggregated-events CSV of ``records`` (text cells neutralised against spreadsheet formulas)."""
    when = when or datetime.now(timezone.utc)
    lines = [header_row(BORIS_COLUMNS)]
    for r in sorted(records, key=lambda r: (r.t_start, r.t_end, r.person, r.label)):
        point = r.kind == "point"
        lines.append(writer_row([
            observation, when.isoformat(timespec="seconds"), "", media,
            None if duration is None else float(duration), None if fps is None else float(fps),
            r.person, r.label, BASELINE_CATEGORY if r.is_baseline else "", "POINT" if point else "STATE",
            float(r.t_start), float(r.t_end), "NA" if point else float(r.t_end - r.t_start), r.note, "",
        ], float_format="%.3f"))  # fmt: skip
    return "\r\n".join(lines) + "\r\n"


def _float(text: str, column: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number of seconds") from None
    if not math.isfinite(v):
        raise ValueError(f"{column} {text!r} is not a number of seconds")
    return v


def read_boris(text: str) -> Parsed:
    """Records from a BORIS aggregated-events table (CSV or TSV, header line first)."""
    text = text.lstrip("\ufeff")
    first = text.split("\n", 1)[0]
    dialect = "excel-tab" if first.count("\t") > first.count(",") else "excel"
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    cols = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in _BORIS_REQUIRED if c not in cols]
    if missing:
        raise ValueError(f"it is not a BORIS aggregated-events table: column(s) {', '.join(map(repr, missing))} "
                         f"missing (found {', '.join(map(repr, cols[:8])) or 'no header'})")  # fmt: skip
    out = Parsed()
    for line, row in enumerate(reader, start=2):
        if len(out.records) >= MAX_RECORDS:
            out.errors.append(f"line {line}: more than {MAX_RECORDS} events in one file")
            break
        row = {(k or "").strip(): restore((v or "").strip()) for k, v in row.items() if k is not None}
        if not any(row.values()):
            continue
        where = f"line {line}"
        try:
            label = row.get("Behavior", "")
            if not label:
                raise ValueError("Behavior is empty")
            kind = row.get("Behavior type", "").upper()
            if kind not in ("", "STATE", "POINT"):
                raise ValueError(f"Behavior type {row['Behavior type']!r} is neither STATE nor POINT")
            start = _float(row["Start (s)"], "Start (s)")
            stop_text = row.get("Stop (s)", "")
            if kind == "POINT" or (not stop_text or stop_text.upper() == "NA") and kind != "STATE":
                stop = start
            elif not stop_text or stop_text.upper() == "NA":
                raise ValueError("a STATE event needs Stop (s)")
            else:
                stop = _float(stop_text, "Stop (s)")
            out.records.append(TagRecord(row.get("Subject", ""), label, start, stop, row.get("Comment start", ""),
                                         row.get("Behavioral category", "").lower() == BASELINE_CATEGORY, where))  # fmt: skip
        except ValueError as e:
            out.errors.append(f"{where}: {e}")
    return out


def read(data: bytes, fmt: Format | None = None, name: str = "") -> Parsed:
    """Parse a tag file (``fmt`` None: by the name's ending, else by its first bytes)."""
    if len(data) > MAX_BYTES:
        raise ValueError(f"it is {len(data) / 1e6:.0f} MB; tag files are at most {MAX_BYTES // 2**20} MB")
    fmt = fmt or guess_format(data, name)
    if fmt == "eaf":
        return read_eaf(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"it is not UTF-8 text (byte {e.start})") from None
    return read_boris(text)


def guess_format(data: bytes, name: str = "") -> Format:
    low = name.lower()
    if low.endswith(".eaf") or low.endswith(".xml"):
        return "eaf"
    if low.endswith((".csv", ".tsv", ".txt")):
        return "boris"
    return "eaf" if data.lstrip(b"\xef\xbb\xbf \r\n\t").startswith(b"<") else "boris"


def write(records: Sequence[TagRecord], fmt: Format, **meta) -> bytes:
    if fmt == "eaf":
        return write_eaf(records, author=meta.get("author", ""), when=meta.get("when"),
                         session=" ".join(x for x in (meta.get("observation", ""), meta.get("media", "")) if x))  # fmt: skip
    if fmt == "boris":
        return write_boris(records, observation=meta.get("observation", ""), media=meta.get("media", ""),
                           duration=meta.get("duration"), fps=meta.get("fps"), when=meta.get("when")).encode("utf-8")  # fmt: skip
    raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


# --- through storage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TagFile:
    data: bytes
    file_name: str
    mime: str
    n_tags: int


@dataclass(frozen=True)
class ImportSummary:
    added: int
    skipped_duplicates: int
    file_name: str

    def phrase(self) -> str:
        dup = f", {self.skipped_duplicates} skipped (already tagged: same label and range)" if self.skipped_duplicates else ""
        return f"{self.file_name}: {self.added} tags imported{dup}."


EXTENSIONS = {"eaf": ("eaf", "application/xml"), "boris": ("csv", "text/csv")}


def session_person(url: str, actor, session_id: int, ref: str) -> int:
    """A person of a visible session by id or exact label (the CLI's ``--person``); one clear error otherwise."""
    from services.db import scope, visible_session
    from storage import repo

    with scope(url) as s:
        visible_session(s, actor.group_ids, session_id)
        persons = [p for p, _ in repo.session_persons(s, session_id)]
    text = str(ref).strip()
    found = [p.id for p in persons if (text.isdigit() and p.id == int(text)) or p.label == text]
    if len(found) != 1:
        raise LookupError(f"person {text!r} was not seen in session {session_id}" if not found else
                          f"{len(found)} persons of session {session_id} are called {text!r}; give the id")  # fmt: skip
    return found[0]


def export_tags(url: str, actor, session_id: int, fmt: Format, person_id: int | None = None, sink=None) -> TagFile:
    """The current tags of a visible session (one person or all) as an ELAN or BORIS file; audited.

    ``sink`` (``services.exports.FileSink``, the CLI): the file is written before the audit row commits,
    so a failed write leaves no row saying the tags were exported."""
    from services.actor import require
    from services.db import visible_session
    from services.exports import audited_delivery, deliver
    from storage import repo, tags
    from storage.models import Person

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    require(actor, "review")
    require(actor, "export")
    with audited_delivery(url, sink) as s:
        rec = visible_session(s, actor.group_ids, session_id)
        names = {p.id: p.label for p, _ in repo.session_persons(s, session_id)}
        rows = tags.latest_tags(s, session_id=session_id, person_id=person_id)
        for t in rows:  # a tag can outlive the bins of its person (re-analysis): name them anyway
            if t.person_id not in names:
                p = s.get(Person, t.person_id)
                names[t.person_id] = p.label if p is not None else f"person {t.person_id}"
        records = records_of(rows, names)
        data = write(records, fmt, media=rec.title, author=actor.audit_name, observation=f"session {session_id}",
                     duration=rec.duration, fps=rec.fps)  # fmt: skip
        ext, mime = EXTENSIONS[fmt]
        name = f"affectline_tags_session_{session_id}" + (f"_person_{person_id}" if person_id else "") + f".{ext}"
        repo.audit(s, actor.audit_name, "export_tags", f"session:{session_id}", format=fmt, tags=len(records),
                   person_id=person_id)  # fmt: skip
        return deliver(TagFile(data, name, mime, len(records)), sink)


def _person_of(r: TagRecord, by_label: dict[str, list[int]], ids: set[int], default: int | None) -> int:
    text = r.person.strip()
    if not text:
        if default is None:
            raise ValueError(f"no person named, and the session has {len(ids)} persons: name one per row (or choose "
                             "the person to import for)")  # fmt: skip
        return default
    if text in by_label:
        if len(by_label[text]) > 1:
            raise ValueError(f"{len(by_label[text])} persons of the session are called {text!r}")
        return by_label[text][0]
    digits = text.removeprefix("person ").strip()
    if digits.isdigit() and int(digits) in ids:
        return int(digits)
    known = ", ".join(repr(k) for k in sorted(by_label) if k)
    raise ValueError(f"person {text!r} was not seen in this session (persons seen: {known or 'none named'}); "
                     "the tier's PARTICIPANT or the Subject must be one of them")  # fmt: skip


def _position(line: str) -> tuple[int, int]:
    """Where an error line points, for listing them in file order (rows read, then rows checked)."""
    m = re.match(r"(?:line |annotation \D*|time slot \D*)(\d+)", line)
    return (0, int(m.group(1))) if m else (1, 0)


def import_tags(url: str, actor, session_id: int, data: bytes, file_name: str, fmt: Format | None = None,
                person_id: int | None = None, author: str | None = None) -> ImportSummary:  # fmt: skip
    """Add the tags of an ELAN or BORIS file to a visible session: all or nothing, audited.

    ``person_id``: whom rows without a person belong to (and the only person read: rows naming
    someone else are refused). ``author``: the tags' author (default: the actor's name).
    Raises ``TagFileError`` listing every bad row or annotation."""
    from services.actor import require
    from services.db import scope, visible_session
    from storage import consent, repo, tags

    require(actor, "tag")
    try:
        parsed = read(data, fmt, file_name)
    except ValueError as e:
        raise TagFileError(file_name, [str(e)]) from None
    errors = list(parsed.errors)
    with scope(url) as s:
        rec = visible_session(s, actor.group_ids, session_id)
        persons = [p for p, _ in repo.session_persons(s, session_id)]
        ids = {p.id for p in persons}
        if person_id is not None and person_id not in ids:
            raise LookupError(f"person {person_id} was not seen in session {session_id}")
        by_label: dict[str, list[int]] = {}
        for p in persons:
            by_label.setdefault(p.label or "", []).append(p.id)
        default = person_id if person_id is not None else (next(iter(ids)) if len(ids) == 1 else None)
        vocab = {v.lower(): v for v in tags.vocabulary(s)}
        current = tags.latest_tags(s, session_id=session_id)
        seen = [(t.person_id, t.label.lower(), t.t_start, t.t_end) for t in current]
        refused_consent: dict[int, str] = {}
        todo: list[tuple[TagRecord, int, str]] = []
        skipped = 0
        duration = float(rec.duration) if rec.duration else None
        for r in parsed.records:
            try:
                pid = _person_of(r, by_label, ids, default)
                if person_id is not None and pid != person_id:
                    raise ValueError(f"it is for person {r.person!r}, not the person chosen for this import")
                label = vocab.get(r.label.strip().lower())
                if label is None:
                    raise ValueError(f"label {r.label!r} is not in the vocabulary ({', '.join(vocab.values())})")
                if r.t_start < 0 or r.t_end < r.t_start:
                    raise ValueError(f"range {r.t_start:.3f}-{r.t_end:.3f} s must have 0 <= start <= end")
                if duration is not None and r.t_end > duration + TOLERANCE_S:
                    raise ValueError(f"range {r.t_start:.3f}-{r.t_end:.3f} s ends after the session "
                                     f"({duration:.3f} s)")  # fmt: skip
                if pid not in refused_consent:
                    try:
                        consent.guard(s, "tags", [pid])
                        refused_consent[pid] = ""
                    except consent.ConsentMissing as e:
                        refused_consent[pid] = str(e).removeprefix("tags: ")
                if refused_consent[pid]:
                    raise ValueError(refused_consent[pid])
            except ValueError as e:
                errors.append(f"{r.where}: {e}")
                continue
            key = (pid, label.lower(), r.t_start, r.t_end)
            if any(k[:2] == key[:2] and abs(k[2] - r.t_start) <= TOLERANCE_S and abs(k[3] - r.t_end) <= TOLERANCE_S
                   for k in seen):  # fmt: skip
                skipped += 1
                continue
            seen.append(key)
            todo.append((r, pid, label))
        if errors:
            raise TagFileError(file_name, sorted(errors, key=_position))
        for r, pid, label in todo:
            try:
                tags.add_tag(s, session_id=session_id, person_id=pid, t_start=r.t_start, t_end=r.t_end, label=label,
                             author=author or actor.username, note=r.note, is_baseline=r.is_baseline)  # fmt: skip
            except ValueError as e:  # storage's own rules (e.g. a point event where only ranges are stored)
                why = (f"a point event at {r.t_start:.3f} s, and this database's tags hold only ranges ({e})"
                       if r.kind == "point" else str(e))  # fmt: skip
                errors.append(f"{r.where}: {why}")
        if errors:
            raise TagFileError(file_name, errors)  # raised inside the scope: nothing of the file is stored
        repo.audit(s, actor.audit_name, "import_tags", f"session:{session_id}", file=file_name,
                   format=fmt or guess_format(data, file_name), added=len(todo), skipped_duplicates=skipped)  # fmt: skip
    return ImportSummary(len(todo), skipped, file_name)


def records_of(rows: Iterable, names: dict[int, str]) -> list[TagRecord]:
    """``TagRecord``s of storage tags (for callers that hold them already)."""
    return [TagRecord(names.get(t.person_id) or f"person {t.person_id}", t.label, t.t_start, t.t_end, t.note or "",
                      bool(t.is_baseline)) for t in rows]  # fmt: skip
