"""The bound-book view: one entry per weapon, as an auditor reads a register (ISSUE 10 §3).

Each weapon shows its identity (maker, model, serial, calibre) and, per component and mark, the
exact field values marked, date, site, operator, machine (and whether it was simulated), batch,
verification result, image and position in the chain. Entries are built from one streamed query
(items joined with their journal rows, in weapon order), so a register of 100,000 weapons is written
with memory independent of its length. Formats: table (plain text), CSV, XLSX (XlsxWriter in
constant-memory mode) and PDF (fpdf2, one page per weapon: for a filtered selection; an fpdf2
document is held in memory until it is written).

CSV and XLSX cells that a spreadsheet would run as a formula are escaped as OWASP's "CSV Injection"
page advises: a cell starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading
single quote.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Any

from sqlalchemy import and_, select

from markctl.records.schema import items, journal
from markctl.records.store import ItemState, RecordStore, overdue_exemption

__all__ = ["COLUMNS", "Filters", "WeaponEntry", "csv_safe", "entries", "write_register"]

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

#: Columns of the flat register (CSV, XLSX, table), one row per mark of a weapon.
COLUMNS = (
    "weapon", "manufacturer", "model", "serial", "calibre", "component", "mark_profile", "mark_text", "state",
    "marked_at", "site", "operator", "machine", "simulated", "batch", "verification", "image", "record",
)  # fmt: skip


def csv_safe(cells: Iterable[Any]) -> list[Any]:
    """Cells with formula-like text neutralised (leading ``'``); numbers and None pass unchanged."""
    return [f"'{c}" if isinstance(c, str) and c.startswith(_FORMULA_STARTS) else c for c in cells]


@dataclass(frozen=True, slots=True)
class Filters:
    """Which weapons to list; a weapon is listed when one of its marks matches every filter given."""

    since: str | None = None  # ISO date or time, compared with the mark's date
    until: str | None = None
    batch: str | None = None
    mark_profile: str | None = None
    state: ItemState | None = None
    weapon_key: str | None = None


@dataclass(slots=True)
class MarkEntry:
    item_key: str
    component: str
    mark_profile: str
    batch: str | None
    state: str
    fields: dict[str, str] = field(default_factory=dict)
    marked_at: str = ""
    operator: str = ""
    machine: str = ""
    simulated: bool | None = None
    verification: str = ""
    image: str = ""
    record: int = 0
    record_hash: str = ""
    findings: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    code: str | None = None
    exemption: dict[str, Any] | None = None  # the supervisor's exemption while the item is exempt
    overdue: str | None = None  # its re-export date, when that date has passed

    @property
    def text(self) -> str:
        """The mark as cut (its lines, then the Data Matrix content); older records: their fields.

        An exempt item has no mark: the text says so and gives the exemption's facts instead.
        """
        if self.exemption is not None:
            return exemption_text(self.exemption, self.overdue)
        if self.lines:
            return " / ".join(self.lines) + (f" / Data Matrix: {self.code}" if self.code else "")
        return " / ".join(f"{k}: {v}" for k, v in sorted(self.fields.items()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "item_key": self.item_key,
            "component": self.component,
            "mark_profile": self.mark_profile,
            "batch": self.batch,
            "state": self.state,
            "fields": self.fields,
            "mark_text": self.text,
            "marked_at": self.marked_at,
            "operator": self.operator,
            "machine": self.machine,
            "simulated": self.simulated,
            "verification": self.verification,
            "image": self.image,
            "record": self.record,
            "record_hash": self.record_hash,
            "findings": self.findings,
            "exemption": self.exemption,
            "re_export_overdue": self.overdue is not None,
        }


def exemption_text(exemption: dict[str, Any], overdue: str | None = None) -> str:
    """One line for an exempt item: not marked, why, until when, who recorded it."""
    ref = exemption.get("reference")
    return (
        f"NOT MARKED: exempt ({exemption.get('kind')}): {exemption.get('purpose')}; re-export by "
        f"{exemption.get('re_export_by')}{' (DATE PASSED)' if overdue else ''}; recorded by "
        f"{exemption.get('recorded_by')}" + (f"; ref {ref}" if ref else "")
    )


@dataclass(slots=True)
class WeaponEntry:
    weapon_key: str
    identity: dict[str, str] = field(default_factory=dict)
    marks: list[MarkEntry] = field(default_factory=list)

    def as_dict(self, site: str) -> dict[str, Any]:
        return {"weapon": self.weapon_key, "site": site, "identity": self.identity,
                "marks": [m.as_dict() for m in self.marks]}  # fmt: skip

    def rows(self, site: str) -> Iterator[list[Any]]:
        maker, _, serial = self.weapon_key.partition("|")
        for m in self.marks:
            yield [
                self.weapon_key, self.identity.get("manufacturer", maker), self.identity.get("model", ""),
                self.identity.get("serial", serial), self.identity.get("calibre", ""), m.component,
                m.mark_profile, m.text, m.state, m.marked_at, site, m.operator, m.machine,
                "" if m.simulated is None else ("yes" if m.simulated else "no"), m.batch or "", m.verification,
                m.image, m.record,
            ]  # fmt: skip


def _apply(entry: MarkEntry, identity: dict[str, str], seq: int, ev: str, at: str, actor: str,
           body: str, digest: str) -> None:  # fmt: skip
    data: dict[str, Any] = json.loads(body)["data"]
    if ev == "planned":
        identity.update({k: str(v) for k, v in (data.get("identity") or {}).items()})
    elif ev == "started":
        request = data.get("request") or {}
        entry.fields = {str(k): str(v) for k, v in (request.get("fields") or {}).items()}
        entry.lines = [str(line) for line in data.get("mark_lines") or []]
        entry.code = str(data["mark_code"]) if data.get("mark_code") else None
        entry.machine = str(data.get("machine", ""))
        entry.simulated = data.get("simulated")
        entry.findings = [str(f.get("message", f)) if isinstance(f, dict) else str(f)
                          for f in data.get("findings") or []]  # fmt: skip
    elif ev in ("marked", "resolved") and (ev == "marked" or data.get("outcome") == "marked"):
        entry.marked_at, entry.operator, entry.record, entry.record_hash = at, actor, seq, digest
        stored, image = data.get("image_stored"), data.get("image")
        if isinstance(stored, dict) and stored.get("path"):
            entry.image = str(stored["path"])  # in the registry's image store
        elif isinstance(image, str) and not image.startswith("not saved"):
            entry.image = image
    elif ev == "exempted":
        entry.exemption = dict(data.get("exemption") or {})
        entry.overdue = overdue_exemption(data, date.today())
        entry.marked_at, entry.operator, entry.record, entry.record_hash = at, actor, seq, digest
    elif ev == "exemption-ended":
        entry.findings.append(f"exemption ended by {actor}: {data.get('reason')}")
        entry.exemption = entry.overdue = None
        entry.marked_at, entry.operator, entry.record, entry.record_hash = "", "", 0, ""
    if ev in ("marked", "verified"):
        verification = data.get("verification")
        if isinstance(verification, dict):
            entry.verification = ("pass" if verification.get("passed") else "FAIL") + (
                f": {verification['detail']}" if verification.get("detail") else ""
            )


def entries(
    store: RecordStore, filters: Filters = Filters(), *, batch_rows: int = 2000
) -> Iterator[WeaponEntry]:
    """Weapons in key order, each with all its marks, streamed from one query."""
    query = (
        select(
            items.c.weapon_key, items.c.item_key, items.c.component, items.c.mark_profile, items.c.batch_id,
            items.c.state, journal.c.seq, journal.c.event, journal.c.at, journal.c.actor, journal.c.body,
            journal.c.hash,
        )
        .select_from(items.join(journal, journal.c.item_key == items.c.item_key))
        .order_by(items.c.weapon_key, items.c.item_key, journal.c.seq)
    )  # fmt: skip
    conditions = []
    if filters.batch is not None:
        conditions.append(items.c.batch_id == filters.batch)
    if filters.mark_profile is not None:
        conditions.append(items.c.mark_profile == filters.mark_profile.lower())
    if filters.state is not None:
        conditions.append(items.c.state == filters.state.value)
    if filters.weapon_key is not None:
        conditions.append(items.c.weapon_key == filters.weapon_key)
    if conditions:
        query = query.where(and_(*conditions))
    current: WeaponEntry | None = None
    entry: MarkEntry | None = None
    with store.engine.connect() as conn:
        rows = conn.execute(query.execution_options(yield_per=batch_rows))
        for (
            weapon_key,
            item_key,
            component,
            profile,
            batch,
            state,
            seq,
            event,
            at,
            actor,
            body,
            digest,
        ) in rows:
            if current is None or weapon_key != current.weapon_key:
                if current is not None and _wanted(current, filters):
                    yield current
                current, entry = WeaponEntry(weapon_key), None
            if entry is None or entry.item_key != item_key:
                entry = MarkEntry(item_key, component, profile, batch, state)
                current.marks.append(entry)
            _apply(entry, current.identity, seq, event, at, actor, body, digest)
    if current is not None and _wanted(current, filters):
        yield current


def _wanted(weapon: WeaponEntry, filters: Filters) -> bool:
    if filters.since is None and filters.until is None:
        return True
    return any(
        m.marked_at
        and (filters.since is None or m.marked_at >= filters.since)
        and (filters.until is None or m.marked_at[: len(filters.until)] <= filters.until)
        for m in weapon.marks
    )


def write_register(store: RecordStore, fmt: str, out: IO[str] | Path, filters: Filters = Filters()) -> int:
    """Write the register as table, csv, xlsx or pdf; returns the number of weapons written.

    ``out`` is a text stream for table and csv, a file path for xlsx and pdf (binary formats).
    """
    site = store.registry.site
    weapons = entries(store, filters)
    if fmt in ("table", "csv"):
        if isinstance(out, Path):
            with out.open("w", encoding="utf-8", newline="") as stream:
                return _write_text(fmt, weapons, site, stream)
        return _write_text(fmt, weapons, site, out)
    if not isinstance(out, Path):
        raise ValueError(f"the {fmt} register is written to a file: pass --output FILE")
    if fmt == "xlsx":
        return _write_xlsx(weapons, site, out)
    if fmt == "pdf":
        return _write_pdf(weapons, store, out)
    raise ValueError(f"register format must be table, csv, xlsx or pdf, got {fmt!r}")


def _write_text(fmt: str, weapons: Iterable[WeaponEntry], site: str, out: IO[str]) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for weapon in weapons:
            count += 1
            for row in weapon.rows(site):
                writer.writerow(csv_safe(row))
        return count
    for weapon in weapons:
        count += 1
        ident = weapon.identity
        head = " ".join(v for v in (ident.get("model"), ident.get("calibre")) if v)
        out.write(f"{weapon.weapon_key}{'  ' + head if head else ''}\n")
        for m in weapon.marks:
            sim = " (SIMULATED)" if m.simulated else ""
            out.write(
                f"  {m.component:<14} {m.mark_profile:<18} {m.state:<8} {m.marked_at[:19]:<19} "
                f"{m.operator} on {m.machine or '-'}{sim}  record {m.record or '-'}\n"
                f"    {m.text or '(no mark text recorded)'}"
                f"{'  [' + m.verification + ']' if m.verification else ''}\n"
            )
    out.write(f"{count} weapon(s), site {site}\n")
    return count


def _write_xlsx(weapons: Iterable[WeaponEntry], site: str, path: Path) -> int:
    import xlsxwriter  # type: ignore[import-untyped]

    # constant_memory: each row is flushed to disk once the next starts (rows in order only).
    book = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_formulas": False,
                                           "strings_to_urls": False})  # fmt: skip
    sheet = book.add_worksheet("register")
    bold = book.add_format({"bold": True})
    sheet.write_row(0, 0, COLUMNS, bold)
    row_no, count = 1, 0
    for weapon in weapons:
        count += 1
        for row in weapon.rows(site):
            for col, value in enumerate(csv_safe(row)):
                if isinstance(value, int):
                    sheet.write_number(row_no, col, value)
                else:
                    sheet.write_string(row_no, col, str(value))
            row_no += 1
    book.close()
    return count


def _write_pdf(weapons: Iterable[WeaponEntry], store: RecordStore, path: Path) -> int:
    from fpdf import FPDF

    site = store.registry.site
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    count = 0

    def line(text: str, size: int = 10, style: str = "") -> None:
        pdf.set_font("Helvetica", style, size)
        pdf.multi_cell(0, size * 0.5, _latin1(text), new_x="LMARGIN", new_y="NEXT")

    for weapon in weapons:
        count += 1
        pdf.add_page()
        line(f"Register of site {site} ({store.registry.kind})", 9)
        line(weapon.weapon_key, 16, "B")
        ident = ", ".join(f"{k}: {v}" for k, v in sorted(weapon.identity.items()))
        line(ident or "(no identity recorded)", 10)
        for m in weapon.marks:
            pdf.ln(3)
            line(f"{m.component} - {m.mark_profile} - {m.state}", 12, "B")
            line(f"Mark text: {m.text or '(none recorded)'}")
            sim = " (SIMULATED)" if m.simulated else ""
            if m.exemption is not None:  # nothing was cut: no machine, no verification
                line(f"Recorded exempt {m.marked_at or '-'} by {m.operator or '-'}; batch {m.batch or '-'}")
                if m.overdue:
                    line(f"WARNING: the re-export date {m.overdue} has passed", 10, "B")
            else:
                line(
                    f"Marked {m.marked_at or '-'} by {m.operator or '-'} on {m.machine or '-'}{sim}; batch {m.batch or '-'}"
                )
            line(f"Verification: {m.verification or 'not verified'}")
            for finding in m.findings:
                line(f"Finding: {finding}", 9)
            line(f"Chain position: record {m.record or '-'}, hash {m.record_hash or '-'}", 8)
            image = _image_file(store, m.image)
            if image is not None:
                pdf.image(str(image), w=60)
    pdf.output(str(path))
    return count


def _image_file(store: RecordStore, image: str) -> Path | None:
    if not image:
        return None
    candidate = Path(image)
    if not candidate.is_absolute():
        from markctl.records.images import image_root

        root = image_root(store)
        if root is None:
            return None
        candidate = root / image
    return candidate if candidate.is_file() else None


def _latin1(text: str) -> str:
    # The PDF's core fonts cover Latin-1; anything else is shown as '?', never dropped silently.
    return text.encode("latin-1", "replace").decode("latin-1")
