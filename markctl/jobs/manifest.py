"""Shipment manifests: one weapon per CSV row, expanded into one item per component to mark.

Columns (header names are case-insensitive; order does not matter):

``serial``, ``manufacturer``      the weapon's identity (required)
``mark_profile``                  the rule profile of the mark, e.g. ``iti-import`` (required)
``components``                    what to mark, ``;``-separated: ``frame;slide;barrel`` (required)
``model``, ``calibre``, ``country_of_manufacture``, ...   identity fields (optional)
``has_unique_mark``, ``serial_contains_year``   yes/no facts (``maybe`` is an error, not "no")
``exemption``, ``exemption_purpose``, ``exemption_re_export_by``, ``exemption_reference``
                                  a temporary-import exemption (ITI 8(b)): ``exemption`` =
                                  ``temporary-import``, the lawful purpose, the expected re-export
                                  date (YYYY-MM-DD) and the permit/customs reference (optional).
                                  The row is recorded exempt, not marked (docs/compliance.md)
any other column                  a mark field handed to the layout (``country``, ``year``, ``importer`` ...)

``markctl profiles rules ID`` lists the columns each mark profile reads.

Reading never stops at the first problem: every row gets a verdict, so an import depot sees the
whole shipment's report at once. Bytes that are not UTF-8 are reported with the line and byte
offset; a duplicate weapon/component/mark is reported against the line that had it first.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from markctl.errors import MarkctlError
from markctl.layouts.content import KNOWN_FACTS, parse_flag
from markctl.records.store import item_key_of

__all__ = [
    "COMPONENTS",
    "EXEMPTION_COLUMNS",
    "FACT_COLUMNS",
    "REQUIRED",
    "Manifest",
    "ManifestError",
    "ManifestItem",
    "RowIssue",
    "read_manifest",
]

REQUIRED = ("serial", "manufacturer", "mark_profile", "components")
# Yes/no columns stating facts of the weapon (has_unique_mark, serial_contains_year); anything but
# yes/no/true/false/1/0 is an error, never read as "no".
FACT_COLUMNS = tuple(KNOWN_FACTS)
# A temporary-import exemption (ITI 8(b)): the exemption's fact -> its column. The runner records it.
EXEMPTION_COLUMNS = {
    "kind": "exemption",
    "purpose": "exemption_purpose",
    "re_export_by": "exemption_re_export_by",
    "reference": "exemption_reference",
}
EXEMPTION_KINDS = ("temporary-import",)
IDENTITY = ("serial", "manufacturer", "model", "calibre", "country_of_manufacture")
COMPONENTS = frozenset({"frame", "receiver", "upper-receiver", "lower-receiver", "slide", "barrel", "bolt",
                        "breech-block", "cylinder", "embedded-plate"})  # fmt: skip
SERIAL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 \-/.]{0,39}")
_HEADER = re.compile(r"[a-z][a-z0-9_]{0,39}")
MAX_ROWS = 1_000_000


class ManifestError(MarkctlError, ValueError):
    """The manifest as a whole is unusable (no header, a required column missing...)."""


@dataclass(frozen=True, slots=True)
class RowIssue:
    """A problem with one row (line numbers count the header as line 1)."""

    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class ManifestItem:
    """One mark on one component of one weapon."""

    line: int
    weapon_key: str
    component: str
    mark_profile: str
    identity: dict[str, str]
    fields: dict[str, str]

    @property
    def item_key(self) -> str:
        return item_key_of(self.weapon_key, self.component, self.mark_profile)


@dataclass(slots=True)
class Manifest:
    source: str
    columns: tuple[str, ...]
    rows: int = 0
    items: list[ManifestItem] = field(default_factory=list)
    issues: list[RowIssue] = field(default_factory=list)
    default_mark_profile: str | None = None

    @property
    def ok(self) -> bool:
        return not self.issues

    def bad_lines(self) -> set[int]:
        return {i.line for i in self.issues}


def weapon_key_of(manufacturer: str, serial: str) -> str:
    """Canonical identity: upper case, inner white space collapsed."""
    return f"{_norm(manufacturer)}|{_norm(serial)}"


def _norm(text: str) -> str:
    return " ".join(text.split()).upper()


def read_manifest(path: str | Path, *, default_mark_profile: str | None = None) -> Manifest:
    """Read a manifest file; raises ManifestError only when no row can be judged."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ManifestError(f"{file}: cannot read: {exc.strerror}") from exc
    return parse_manifest(raw, source=str(file), default_mark_profile=default_mark_profile)


def parse_manifest(
    raw: bytes, *, source: str = "<manifest>", default_mark_profile: str | None = None
) -> Manifest:
    """Parse manifest bytes; ``default_mark_profile`` fills a missing ``mark_profile`` column or cell."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # spreadsheet exports often start with a UTF-8 byte-order mark
    lines = raw.splitlines(keepends=True)
    if not lines:
        raise ManifestError(f"{source}: the manifest is empty")
    text_lines, issues = _decode_lines(lines)
    reader = csv.reader(io.StringIO("".join(text_lines)), strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise ManifestError(f"{source}: line 1: no readable header ({exc})") from exc
    columns = tuple(h.strip().lower().replace(" ", "_").replace("-", "_") for h in header)
    missing = [c for c in REQUIRED if c not in columns and not (c == "mark_profile" and default_mark_profile)]
    if missing:
        raise ManifestError(
            f"{source}: line 1: missing column(s) {', '.join(missing)} (have: {', '.join(columns) or 'none'})"
        )
    bad = [c for c in columns if not _HEADER.fullmatch(c)]
    if bad or len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise ManifestError(f"{source}: line 1: bad or repeated column names {bad + dupes}")
    manifest = Manifest(source, columns, issues=issues, default_mark_profile=default_mark_profile)
    seen: dict[str, int] = {}
    undecodable = {i.line for i in issues}
    for line, row in _rows(reader, manifest):
        manifest.rows += 1
        if manifest.rows > MAX_ROWS:
            raise ManifestError(f"{source}: more than {MAX_ROWS} rows; split the shipment")
        if line in undecodable:
            continue
        _read_row(line, row, manifest, seen)
    return manifest


def _decode_lines(lines: list[bytes]) -> tuple[list[str], list[RowIssue]]:
    out, issues = [], []
    for number, line in enumerate(lines, start=1):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            issues.append(
                RowIssue(number, "encoding", f"byte {exc.start} (0x{line[exc.start]:02X}) is not UTF-8")
            )
            out.append(line.decode("utf-8", errors="replace"))
    return out, issues


def _rows(reader: Iterator[list[str]], manifest: Manifest) -> Iterator[tuple[int, list[str]]]:
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = getattr(reader, "line_num", 0)
            manifest.issues.append(RowIssue(line, "csv", str(exc)))
            continue
        line = getattr(reader, "line_num", 0)
        if not any(cell.strip() for cell in row):
            continue  # blank lines are allowed
        yield line, row


def _read_row(line: int, row: list[str], manifest: Manifest, seen: dict[str, int]) -> None:
    columns = manifest.columns
    if len(row) != len(columns):
        manifest.issues.append(RowIssue(line, "row", f"has {len(row)} cells, the header has {len(columns)}"))
        return
    values = {c: v.strip() for c, v in zip(columns, row, strict=True)}
    if not values.get("mark_profile") and manifest.default_mark_profile:
        values["mark_profile"] = manifest.default_mark_profile
    issues_before = len(manifest.issues)
    for column in REQUIRED:
        if not values[column]:
            manifest.issues.append(RowIssue(line, column, "is empty"))
    for column, value in values.items():
        if any(ord(ch) < 0x20 for ch in value):
            manifest.issues.append(RowIssue(line, column, "contains control characters"))
    serial = values["serial"]
    if serial and not SERIAL_PATTERN.fullmatch(serial):
        manifest.issues.append(
            RowIssue(line, "serial", f"{serial!r} is not a serial (letters, digits, space, - / . ; up to 40)")
        )
    components = [c.strip().lower() for c in values["components"].split(";") if c.strip()]
    for component in components:
        if component not in COMPONENTS:
            manifest.issues.append(
                RowIssue(
                    line,
                    "components",
                    f"unknown component {component!r} (known: {', '.join(sorted(COMPONENTS))})",
                )
            )
    if len(set(components)) != len(components):
        manifest.issues.append(RowIssue(line, "components", "lists a component twice"))
    manifest.issues.extend(exemption_issues(line, values))
    if len(manifest.issues) > issues_before:
        return
    for column in FACT_COLUMNS:
        if values.get(column):
            try:
                parse_flag(values[column])
            except ValueError as exc:  # 'maybe' is not silently false
                manifest.issues.append(RowIssue(line, column, str(exc)))
                # The row is blocked by this issue; its items are still pre-checked (without the
                # fact) so that every other problem of the row is reported in the same run.
                values[column] = ""
    weapon_key = weapon_key_of(values["manufacturer"], serial)
    identity = {c: values[c] for c in IDENTITY if values.get(c)}
    fields = {c: v for c, v in values.items() if c not in REQUIRED and c not in IDENTITY and v}
    fields["serial"] = serial
    for name in ("manufacturer", "model", "calibre", "country_of_manufacture"):
        if values.get(name):
            fields.setdefault(name, values[name])
    for component in components:
        item = ManifestItem(
            line, weapon_key, component, values["mark_profile"].lower(), identity, dict(fields)
        )
        first = seen.get(item.item_key)
        if first is not None:
            manifest.issues.append(
                RowIssue(
                    line,
                    "serial",
                    f"duplicate: {weapon_key} {component} {item.mark_profile} is already on line {first}",
                )
            )
            continue
        seen[item.item_key] = line
        manifest.items.append(item)


def exemption_issues(line: int, values: dict[str, str]) -> list[RowIssue]:
    """The problems of a row's exemption columns, all at once (none when the row has no exemption)."""
    kind = values.get(EXEMPTION_COLUMNS["kind"], "").lower()
    given = [c for c in EXEMPTION_COLUMNS.values() if values.get(c)]
    if not kind:
        if not given:
            return []
        return [RowIssue(line, "exemption", f"is empty but {', '.join(given)} is given: write "
                         "temporary-import to record the exemption, or clear those cells")]  # fmt: skip
    values[EXEMPTION_COLUMNS["kind"]] = kind
    issues = []
    if kind not in EXEMPTION_KINDS:
        issues.append(
            RowIssue(line, "exemption", f"unknown exemption {kind!r} (known: {', '.join(EXEMPTION_KINDS)})")
        )
    if not values.get(EXEMPTION_COLUMNS["purpose"]):
        issues.append(RowIssue(line, EXEMPTION_COLUMNS["purpose"],
                               "is empty: an exemption names its verifiable lawful purpose"))  # fmt: skip
    by = values.get(EXEMPTION_COLUMNS["re_export_by"], "")
    try:
        date.fromisoformat(by)
    except ValueError:
        issues.append(RowIssue(line, EXEMPTION_COLUMNS["re_export_by"],
                               f"{by!r} is not the expected re-export date (YYYY-MM-DD)" if by
                               else "is empty: an exemption names the expected re-export date (YYYY-MM-DD)"))  # fmt: skip
    return issues
