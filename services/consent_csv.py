"""The consent register in and out of a spreadsheet: a class's 30 signed forms in one file.

File format (one row per person and purpose; the export writes the same columns, so an export
edited and imported again changes only what was edited):

========== ======================================================================================
person_id  the person's number (as on the Consent page); or leave it empty and give group + person
person     the person's name; with person_id it must match (a guard against a shifted column)
group      the person's group; with person_id it must match
purpose    ``analysis`` (default when empty) or ``thumbnails``
answer     ``yes`` (consent given), ``no`` (refused or withdrawn: deletes what it covered), or
           empty (no change: rows of persons who have not answered)
scope      what was agreed, as on the signed form
expires    ``YYYY-MM-DD`` (valid until the end of that day, UTC) or empty (no expiry)
========== ======================================================================================

The export adds ``state``, ``recorded_by`` and ``recorded_at``, which an import ignores.

An import is all or nothing: every row is checked first, each bad row is reported in one line
(its spreadsheet row number, the column and what is wrong), and if any row is bad nothing is
stored. The good file is applied in one transaction through ``storage.consent`` (whose rules
and per-person audit rows apply), and one ``consent_import`` audit row records the counts.
Rows that already match the register are left alone (counted ``unchanged``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime

import pandas as pd
from sqlalchemy import select

from affectline import csvsafe
from affectline.lines import one_line
from services.actor import Actor, require
from services.db import scope
from services.privacy import ACTION, expiry_of
from storage import consent, repo
from storage.models import ConsentPurpose, Group, Person

COLUMNS = ("person_id", "person", "group", "purpose", "answer", "scope", "expires")
INFO_COLUMNS = ("state", "recorded_by", "recorded_at")  # written by the export, ignored on import
YES, NO = ("yes", "y", "granted", "given", "true", "1"), ("no", "n", "refused", "withdrawn", "false", "0")
MAX_ROWS = 20_000
MAX_BYTES = 5_000_000


@dataclass(frozen=True)
class Problem:
    row: int  # the spreadsheet row (the header is row 1)
    column: str
    what: str

    def line(self) -> str:
        return f"row {self.row}, column {self.column}: {self.what}"


class ConsentFileError(ValueError):
    """The file was refused; ``problems`` holds one entry per bad row (``str`` joins their lines)."""

    def __init__(self, name: str, problems: list[Problem]):
        self.name, self.problems = name, problems
        super().__init__("\n".join(f"{name}: {p.line()}" for p in problems))


@dataclass(frozen=True)
class Row:
    row: int
    person_id: int
    purpose: ConsentPurpose
    answer: str  # "yes" | "no"
    scope: str
    expires: date | None


@dataclass(frozen=True)
class ImportResult:
    rows: int  # data rows read
    granted: int
    refused: int
    unchanged: int
    blank: int  # rows without an answer
    deleted: dict[str, int] = field(default_factory=dict)  # what "no" answers deleted, by table

    def sentence(self) -> str:
        gone = ", ".join(f"{v} {k}" for k, v in self.deleted.items() if v and k != "sessions_folded")
        return (f"{self.rows} row(s): {self.granted} consent(s) recorded, {self.refused} refusal(s) recorded, "
                f"{self.unchanged} unchanged, {self.blank} without an answer" + (f"; deleted {gone}" if gone else ""))  # fmt: skip


# --- reading the file ------------------------------------------------------------------------------


def _text(raw: bytes | str, name: str) -> str:
    if isinstance(raw, str):
        return raw
    if len(raw) > MAX_BYTES:
        raise ConsentFileError(name, [Problem(1, "-", f"the file is {len(raw)} bytes; at most {MAX_BYTES}")])
    try:
        return raw.decode("utf-8-sig")  # a spreadsheet's BOM is not part of the first column's name
    except UnicodeDecodeError as e:
        raise ConsentFileError(name, [Problem(1, "-", f"not UTF-8 text (byte {e.start + 1}); save it as CSV UTF-8")]) from None


def _cell(rec: dict, col: str) -> str:
    v = rec.get(col)
    return "" if v is None else csvsafe.restore(" ".join(str(v).split()))


def _answer(text: str) -> str | None:
    t = text.lower()
    return "yes" if t in YES else "no" if t in NO else None


def parse(raw: bytes | str, name: str = "consent.csv") -> list[dict]:
    """The file's data rows as dicts (columns lower-cased), each with its spreadsheet row number under
    ``_row``; refuses a file without the needed columns or with unknown ones."""
    text = _text(raw, name)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ConsentFileError(name, [Problem(1, "-", "the file is empty; the first row must name the columns")]) from None
    except csv.Error as e:
        raise ConsentFileError(name, [Problem(1, "-", f"not CSV ({e})")]) from None
    cols = [h.strip().lower().replace(" ", "_") for h in header]
    problems = []
    if len(cols) == 1 and ";" in cols[0]:
        problems.append(Problem(1, "-", "columns are separated by ';'; save the file with commas"))
    else:
        for c in cols:
            if c not in COLUMNS and c not in INFO_COLUMNS:
                problems.append(Problem(1, one_line(c) or "(empty)", f"unknown column; expected {', '.join(COLUMNS)}"))
        if "person_id" not in cols and not {"person", "group"} <= set(cols):
            problems.append(Problem(1, "person_id", "missing: give person_id, or group and person"))
        if "answer" not in cols:
            problems.append(Problem(1, "answer", "missing: yes, no, or empty for no change"))
        dup = sorted({c for c in cols if cols.count(c) > 1})
        problems += [Problem(1, c, "appears twice") for c in dup]
    if problems:
        raise ConsentFileError(name, problems)
    rows = []
    try:
        for i, values in enumerate(reader, start=2):
            if not any(v.strip() for v in values):
                continue  # blank lines at the end of a spreadsheet export
            if len(rows) >= MAX_ROWS:
                raise ConsentFileError(name, [Problem(i, "-", f"more than {MAX_ROWS} rows; split the file")])
            rec = {"_row": i, "_extra": len(values) > len(cols)}
            rec.update(zip(cols, values))
            rows.append(rec)
    except csv.Error as e:
        raise ConsentFileError(name, [Problem(reader.line_num, "-", f"not CSV ({e})")]) from None
    return rows


def check(s, actor: Actor, records: list[dict], name: str, today: date | None = None) -> list[Row]:
    """Each record as a ``Row``, or ``ConsentFileError`` naming every bad row (nothing is written)."""
    today = today or consent.now().date()
    persons = {p.id: p for p in s.scalars(select(Person))}
    groups = dict(s.execute(select(Group.id, Group.name)).all())
    by_name: dict[tuple[str, str], list[Person]] = {}
    for p in persons.values():
        if p.group_id is not None and actor.sees(p.group_id):
            by_name.setdefault((groups.get(p.group_id, "").casefold(), p.label.casefold()), []).append(p)
    problems: list[Problem] = []
    out: list[Row] = []
    seen: dict[tuple[int, ConsentPurpose], int] = {}
    for rec in records:
        i, bad = rec["_row"], []
        if rec["_extra"]:
            bad.append(Problem(i, "-", "more cells than columns (a comma inside a cell needs quotes)"))
        pid_text, label, gname = _cell(rec, "person_id"), _cell(rec, "person"), _cell(rec, "group")
        p = None
        if pid_text:
            if not pid_text.isdigit():
                bad.append(Problem(i, "person_id", f"{one_line(pid_text)!r} is not a person number"))
            elif (p := persons.get(int(pid_text))) is None or not actor.sees(p.group_id):
                bad.append(Problem(i, "person_id", f"unknown person {pid_text} (none with that number you can see)"))
                p = None
            else:
                if label and label.casefold() != p.label.casefold():
                    bad.append(Problem(i, "person", f"person {p.id} is {p.label!r} here, the file says {label!r}"))
                if gname and gname.casefold() != groups.get(p.group_id, "").casefold():
                    bad.append(Problem(i, "group", f"person {p.id} is in {groups.get(p.group_id, 'no group')!r}, "
                                                   f"the file says {gname!r}"))  # fmt: skip
        elif not (label and gname):
            bad.append(Problem(i, "person_id", "empty: give the person's number, or their group and name"))
        else:
            found = by_name.get((gname.casefold(), label.casefold()), [])
            if not found:
                bad.append(Problem(i, "person", f"unknown person {label!r} in group {gname!r}"))
            elif len(found) > 1:
                bad.append(Problem(i, "person", f"{len(found)} persons are called {label!r} in {gname!r}; "
                                                f"give person_id ({', '.join(str(q.id) for q in found)})"))  # fmt: skip
            else:
                p = found[0]
        if p is not None and not p.enrolled:
            bad.append(Problem(i, "person_id", f"person {p.id} ({p.label}) is not enrolled; name them first"))
        purpose_text = _cell(rec, "purpose").lower() or "analysis"
        try:
            purpose = ConsentPurpose(purpose_text)
        except ValueError:
            bad.append(Problem(i, "purpose", f"{one_line(purpose_text)!r} is not analysis or thumbnails"))
            purpose = None
        answer_text = _cell(rec, "answer")
        answer = _answer(answer_text) if answer_text else ""
        if answer is None:
            bad.append(Problem(i, "answer", f"{one_line(answer_text)!r} is not yes, no or empty"))
        scope_text = _cell(rec, "scope")
        if len(scope_text) > consent.MAX_SCOPE:
            bad.append(Problem(i, "scope", f"{len(scope_text)} characters; at most {consent.MAX_SCOPE}"))
        elif any(ord(ch) < 32 or ord(ch) == 127 for ch in scope_text):
            bad.append(Problem(i, "scope", "contains control characters"))
        exp_text, expires = _cell(rec, "expires"), None
        if exp_text:
            try:
                expires = date.fromisoformat(exp_text)
            except ValueError:
                bad.append(Problem(i, "expires", f"{one_line(exp_text)!r} is not a date (YYYY-MM-DD)"))
            else:
                if answer == "yes" and expires < today:
                    bad.append(Problem(i, "expires", f"{expires} is in the past"))
        if p is not None and purpose is not None:
            if (p.id, purpose) in seen:
                bad.append(Problem(i, "person_id", f"person {p.id} ({purpose.value}) is also on row {seen[p.id, purpose]}"))
            seen.setdefault((p.id, purpose), i)
        problems += bad
        if not bad and answer:
            out.append(Row(i, p.id, purpose, answer, scope_text, expires))
    if problems:
        raise ConsentFileError(name, problems)
    return out


# --- applying it -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    rows: int
    grants: int  # answers "yes" that change the register
    refusals: int  # answers "no" that change it: each deletes what the consent covered
    unchanged: int
    blank: int

    def sentence(self) -> str:
        return (f"{self.rows} row(s): {self.grants} consent(s) to record, {self.refusals} refusal(s) to record "
                f"(a refusal deletes what the consent covered), {self.unchanged} unchanged, {self.blank} without an answer")  # fmt: skip


def preview(url: str, actor: Actor, raw: bytes | str, name: str = "consent.csv") -> Preview:
    """What ``import_csv`` would do with the file, or ``ConsentFileError``; writes nothing."""
    require(actor, ACTION)
    records = parse(raw, name)
    with scope(url) as s:
        rows = check(s, actor, records, name)
        changes = [r for r in rows if not _same(_record(s, r), r)]
        yes = sum(r.answer == "yes" for r in changes)
        return Preview(len(records), yes, len(changes) - yes, len(rows) - len(changes), len(records) - len(rows))


def _record(s, r: Row):
    return s.scalar(select(consent.Consent).where(consent.Consent.person_id == r.person_id,
                                                  consent.Consent.purpose == r.purpose))  # fmt: skip


def _same(c, r: Row) -> bool:
    """The register already says what the row says."""
    if c is None:
        return False
    if r.answer == "no":
        return consent.state(c) in ("refused", "withdrawn")
    exp = consent.aware(c.expires_at)
    return consent.is_valid(c) and c.scope == r.scope and (exp.date() if exp else None) == r.expires


def import_csv(url: str, actor: Actor, raw: bytes | str, name: str = "consent.csv") -> ImportResult:
    """Check the whole file, then apply it in one transaction (all or nothing); audited."""
    require(actor, ACTION)
    records = parse(raw, name)
    blank = 0
    try:
        with scope(url) as s:
            rows = check(s, actor, records, name)
            blank = len(records) - len(rows)
            granted = refused = unchanged = 0
            deleted: dict[str, int] = {}
            problems: list[Problem] = []
            # Analysis answers before thumbnails: a thumbnails "yes" needs the analysis "yes" of the same file.
            for r in sorted(rows, key=lambda r: (r.purpose is ConsentPurpose.thumbnails, r.row)):
                if _same(_record(s, r), r):
                    unchanged += 1
                    continue
                try:
                    if r.answer == "yes":
                        consent.grant(s, r.person_id, r.purpose, actor.audit_name, r.scope, expiry_of(r.expires))
                        granted += 1
                    else:
                        for k, v in consent.withdraw(s, r.person_id, r.purpose, actor.audit_name).items():
                            deleted[k] = deleted.get(k, 0) + v
                        refused += 1
                except (ValueError, LookupError) as e:  # storage's own rules (thumbnails need analysis consent)
                    problems.append(Problem(r.row, "answer", str(e)))
            if problems:
                raise ConsentFileError(name, sorted(problems, key=lambda p: p.row))  # rolls back every row above
            result = ImportResult(len(records), granted, refused, unchanged, blank, deleted)
            repo.audit(s, actor.audit_name, "consent_import", "consent", file=one_line(name), rows=len(records),
                       granted=granted, refused=refused, unchanged=unchanged, blank=blank,
                       deleted={k: v for k, v in deleted.items() if v})  # fmt: skip
            return result
    except ConsentFileError as e:
        with scope(url) as s:  # a refused file is recorded too (it changed nothing)
            repo.audit(s, actor.audit_name, "consent_import_refused", "consent", file=one_line(name),
                       rows=len(records), problems=len(e.problems))  # fmt: skip
        raise


# --- the export ------------------------------------------------------------------------------------


def _answer_of(state: str) -> str:
    return {"valid": "yes", "withdrawn": "no", "refused": "no"}.get(state, "")


def export_frame(rows: list[consent.ConsentRow], thumbnails: dict[int, tuple]) -> pd.DataFrame:
    """The register as the file's rows: analysis and thumbnails of each person (thumbnails only where answered)."""
    def day(t: datetime | None) -> str:
        return t.date().isoformat() if t else ""

    out = []
    for r in rows:
        out.append({"person_id": r.person_id, "person": r.label, "group": r.group or "", "purpose": "analysis",
                    "answer": _answer_of(r.analysis), "scope": r.scope,
                    "expires": day(r.expires_at) if r.analysis in ("valid", "expired") else "", "state": r.analysis,
                    "recorded_by": r.recorded_by or "", "recorded_at": r.recorded_at.isoformat() if r.recorded_at else ""})  # fmt: skip
        if r.thumbnails != "none":
            scope_text, expires, by, at = thumbnails.get(r.person_id, ("", None, None, None))
            out.append({"person_id": r.person_id, "person": r.label, "group": r.group or "", "purpose": "thumbnails",
                        "answer": _answer_of(r.thumbnails), "scope": scope_text,
                        "expires": day(expires) if r.thumbnails in ("valid", "expired") else "", "state": r.thumbnails,
                        "recorded_by": by or "", "recorded_at": at.isoformat() if at else ""})  # fmt: skip
    return pd.DataFrame(out, columns=[*COLUMNS, *INFO_COLUMNS])


def export_csv(url: str, actor: Actor, group: int | str | None = None, write=None) -> tuple[bytes, int]:
    """The visible register (or one group's) as formula-safe CSV and its row count; audited. ``write(data)``
    (the CLI's file) runs before the audit row commits: a failed write leaves no row saying it was exported."""
    from services.privacy import _visible_group

    require(actor, ACTION)
    with scope(url) as s:
        ids = [_visible_group(s, actor, group).id] if group is not None else actor.group_ids
        rows = consent.register(s, ids)
        thumbs = {c.person_id: (c.scope, consent.aware(c.expires_at), c.recorded_by, consent.aware(c.recorded_at))
                  for c in s.scalars(select(consent.Consent).where(consent.Consent.purpose == ConsentPurpose.thumbnails))}  # fmt: skip
        df = export_frame(rows, thumbs)
        data = csvsafe.frame_to_csv(df).encode()
        if write is not None:
            write(data)
        repo.audit(s, actor.audit_name, "consent_export", "consent", rows=len(df), persons=len(rows),
                   group=str(group) if group is not None else None)  # fmt: skip
    return data, len(df)
