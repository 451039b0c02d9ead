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

:func:`open_manifest` streams: rows are read one at a time from the file, so memory does not grow
with the manifest's length but for the duplicate check, which keeps a 64-bit digest of each item
key and the line that had it (about 100 bytes per item in a dict), and for the issues of bad rows.
Each row's byte offset and digest let a pre-checked plan read the row again when it is marked
(:meth:`ManifestReader.row_at`) instead of keeping every item. :func:`read_manifest` and
:func:`parse_manifest` give the whole manifest as a list (small manifests, the service's uploads).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import BinaryIO

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
    "ManifestReader",
    "RowIssue",
    "RowRef",
    "open_manifest",
    "parse_manifest",
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
    """Read a whole manifest file; raises ManifestError only when no row can be judged."""
    reader = open_manifest(path, default_mark_profile=default_mark_profile)
    reader.manifest.items.extend(reader)
    return reader.manifest


def parse_manifest(
    raw: bytes, *, source: str = "<manifest>", default_mark_profile: str | None = None
) -> Manifest:
    """Parse manifest bytes; ``default_mark_profile`` fills a missing ``mark_profile`` column or cell."""
    reader = ManifestReader(raw, source, default_mark_profile)
    reader.manifest.items.extend(reader)
    return reader.manifest


def open_manifest(path: str | Path, *, default_mark_profile: str | None = None) -> ManifestReader:
    """A manifest file read row by row (its header is read and judged now)."""
    file = Path(path)
    try:
        file.open("rb").close()
    except OSError as exc:
        raise ManifestError(f"{file}: cannot read: {exc.strerror}") from exc
    return ManifestReader(file, str(file), default_mark_profile)


@dataclass(frozen=True, slots=True)
class RowRef:
    """Where a row is in its manifest: its byte offset, its (last) line, a digest of its bytes."""

    offset: int
    line: int
    digest: int


_READ_BYTES = 1 << 20


class _Lines:
    """The physical lines of a byte stream (split as ``bytes.splitlines`` does), decoded one by one,
    with the byte offset and the raw bytes of the lines handed out since :meth:`mark`."""

    def __init__(self, stream: BinaryIO, offset: int, first_line: int, chunk: int | None = None) -> None:
        self._stream = stream
        self._chunk = chunk or _READ_BYTES
        self._pending: list[bytes] = []
        self._carry = b""
        self.offset = offset  # of the next line to hand out
        self.number = first_line - 1  # of the last line handed out
        self.issues: list[RowIssue] = []
        self._since: list[bytes] = []

    def mark(self) -> None:
        self._since = []

    def marked_bytes(self) -> bytes:
        return b"".join(self._since)

    def _refill(self) -> bool:
        while not self._pending:
            chunk = self._stream.read(self._chunk)
            if not chunk:
                if self._carry:
                    self._pending, self._carry = [self._carry], b""
                    return True
                return False
            lines = (self._carry + chunk).splitlines(keepends=True)
            # The last piece may be cut (or a \r whose \n is in the next chunk): keep it for later.
            self._carry = lines.pop() if lines else b""
            self._pending = lines[::-1]
        return True

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if not self._refill():
            raise StopIteration
        raw = self._pending.pop()
        self.number += 1
        self.offset += len(raw)
        self._since.append(raw)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.issues.append(
                RowIssue(self.number, "encoding", f"byte {exc.start} (0x{raw[exc.start]:02X}) is not UTF-8")
            )
            return raw.decode("utf-8", errors="replace")


class _Seen:
    """The items read so far, as 64-bit digests of their keys with the line that had each first:
    about 100 bytes per item, where the keys themselves would take twice that."""

    def __init__(self) -> None:
        self._lines: dict[int, int] = {}

    @staticmethod
    def _key(item_key: str) -> int:
        return int.from_bytes(hashlib.blake2b(item_key.encode(), digest_size=8).digest(), "little")

    def get(self, item_key: str) -> int | None:
        return self._lines.get(self._key(item_key))

    def __setitem__(self, item_key: str, line: int) -> None:
        self._lines[self._key(item_key)] = line


class ManifestReader:
    """A manifest read row by row: iterate it once for its items; ``manifest`` holds the header,
    the row count and the issues found so far (its ``items`` stay empty).

    Raises:
        ManifestError: at once, when the header cannot be used; while iterating, past MAX_ROWS.
    """

    def __init__(self, source: Path | bytes, name: str, default_mark_profile: str | None = None) -> None:
        self._source = source
        with self._open() as stream:
            self._start = 3 if stream.read(3) == b"\xef\xbb\xbf" else 0  # a spreadsheet's byte-order mark
            stream.seek(self._start)
            lines = _Lines(stream, self._start, 1)
            try:
                header = next(csv.reader(lines, strict=True))
            except StopIteration:
                raise ManifestError(f"{name}: the manifest is empty") from None
            except csv.Error as exc:
                raise ManifestError(f"{name}: line 1: no readable header ({exc})") from exc
            self._body, self._body_line = lines.offset, lines.number + 1
        columns = tuple(h.strip().lower().replace(" ", "_").replace("-", "_") for h in header)
        missing = [
            c for c in REQUIRED if c not in columns and not (c == "mark_profile" and default_mark_profile)
        ]
        if missing:
            raise ManifestError(
                f"{name}: line 1: missing column(s) {', '.join(missing)} (have: {', '.join(columns) or 'none'})"
            )
        bad = [c for c in columns if not _HEADER.fullmatch(c)]
        if bad or len(set(columns)) != len(columns):
            dupes = sorted({c for c in columns if columns.count(c) > 1})
            raise ManifestError(f"{name}: line 1: bad or repeated column names {bad + dupes}")
        self.manifest = Manifest(
            name, columns, issues=list(lines.issues), default_mark_profile=default_mark_profile
        )
        self._read = False

    def _open(self) -> BinaryIO:
        if isinstance(self._source, bytes):
            return io.BytesIO(self._source)
        try:
            return self._source.open("rb")
        except OSError as exc:
            raise ManifestError(f"{self._source}: cannot read: {exc.strerror}") from exc

    def __iter__(self) -> Iterator[ManifestItem]:
        return (item for items, _ in self.rows() for item in items)

    def rows(self) -> Iterator[tuple[list[ManifestItem], RowRef]]:
        """Each row's items (none for a bad row: its issue is in ``manifest.issues``) and where it is."""
        if self._read:
            raise ManifestError(f"{self.manifest.source}: a manifest is read once; open it again")
        self._read = True
        manifest = self.manifest
        # _read_row adds a row's items to this one (and its issues to the manifest's).
        row_of = Manifest(manifest.source, manifest.columns, issues=manifest.issues,
                          default_mark_profile=manifest.default_mark_profile)  # fmt: skip
        seen = _Seen()
        with self._open() as stream:
            stream.seek(self._body)
            lines = _Lines(stream, self._body, self._body_line)
            reader = csv.reader(lines, strict=True)
            while True:
                lines.mark()
                offset = lines.offset
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    manifest.issues.extend(lines.issues)
                    lines.issues.clear()
                    manifest.issues.append(RowIssue(lines.number, "csv", str(exc)))
                    continue
                undecodable = bool(lines.issues)
                manifest.issues.extend(lines.issues)
                lines.issues.clear()
                if not any(cell.strip() for cell in row):
                    continue  # blank lines are allowed
                manifest.rows += 1
                if manifest.rows > MAX_ROWS:
                    raise ManifestError(f"{manifest.source}: more than {MAX_ROWS} rows; split the shipment")
                ref = RowRef(offset, lines.number, _digest(lines.marked_bytes()))
                if undecodable:
                    yield [], ref
                    continue
                _read_row(lines.number, row, row_of, seen)
                items, row_of.items = row_of.items, []
                yield items, ref

    def row_at(self, ref: RowRef) -> list[ManifestItem]:
        """The items of the row at ``ref``, read again (a plan marks them without keeping them).

        Raises:
            ManifestError: the row is no longer what was read (the file changed since).
        """
        with self._open() as stream:
            stream.seek(ref.offset)
            lines = _Lines(stream, ref.offset, 1, chunk=4096)  # a row is a few hundred bytes
            try:
                row = next(csv.reader(lines, strict=True))
            except (StopIteration, csv.Error):
                row = None
        if row is None or _digest(lines.marked_bytes()) != ref.digest:
            raise ManifestError(
                f"{self.manifest.source}: line {ref.line} changed since the pre-check; nothing more is marked "
                "from it: pre-check the manifest again"
            )
        scratch = Manifest(self.manifest.source, self.manifest.columns,
                           default_mark_profile=self.manifest.default_mark_profile)  # fmt: skip
        _read_row(ref.line, row, scratch, _Seen())
        return scratch.items


def _digest(raw: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")


def _read_row(line: int, row: list[str], manifest: Manifest, seen: _Seen) -> None:
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
