"""Records: list, show, verify, export, the register (auditors and supervisors).

Every endpoint that reads the database is a plain ``def`` (FastAPI runs it in its threadpool) or
streams from a generator that Starlette iterates in the threadpool: a long verify or a 100,000-weapon
export never runs on the event loop, so it cannot starve a machine's I/O. Lists are paged
(``after``/``limit``); exports and the register are streamed, never built whole in memory.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import json
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from markctl.api.deps import Service, require
from markctl.api.schemas import VerifyImageIn
from markctl.auth import Identity
from markctl.errors import RecordError
from markctl.records import ItemState, RecordStore
from markctl.records.register import COLUMNS, Filters, csv_safe, entries, write_register
from markctl.verify.photo import PhotoRejectedError, photo_workers
from markctl.verify.photo import max_bytes as photo_max_bytes

router = APIRouter(prefix="/records", tags=["records"])

_CHUNK = 500  # records or weapons per streamed chunk


def _page(after: int, limit: int) -> None:
    if not 1 <= limit <= 10_000 or after < 0:
        raise HTTPException(422, "limit must be 1-10000 and after >= 0")


@router.get("")
def list_records(service: Service, who: Annotated[Identity, Depends(require("records:read"))],
                 after: int = 0, limit: int = 100) -> list[dict[str, Any]]:  # fmt: skip
    """Journal rows after sequence number ``after`` (page with the last ``seq`` you received)."""
    _page(after, limit)
    return [r.as_dict() for r in service.store.records(after=after, limit=limit)]


@router.get("/items")
def list_items(service: Service, who: Annotated[Identity, Depends(require("records:read"))],
               state: ItemState | None = None, batch: str | None = None, after: int = 0,
               limit: int = 1000) -> list[dict[str, Any]]:  # fmt: skip
    """Items by their last record number; page with ``after`` = the last ``last_seq`` received."""
    _page(after, limit)
    return [i.as_dict() for i in service.store.items(state=state, batch_id=batch, after=after, limit=limit)]


@router.get("/verify")
def verify(service: Service, who: Annotated[Identity, Depends(require("records:verify"))],
           expect_head: str | None = None) -> dict[str, Any]:  # fmt: skip
    try:
        report = service.store.verify(expect_head=expect_head)
    except RecordError as exc:
        raise HTTPException(422, str(exc)) from exc
    info = service.store.registry
    return {**report.as_dict(), "site": info.site, "training": info.training}


def _export_chunks(store: RecordStore, fmt: str) -> Iterator[str]:
    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buffer)
        writer.writerow(["seq", "at", "item_key", "event", "state", "actor", "data", "prev_hash", "hash"])
    else:
        buffer.write("[")
    n = 0
    for n, r in enumerate(store.records(), start=1):
        if fmt == "csv":
            writer.writerow(csv_safe([r.seq, r.at, r.item_key, r.event, r.state, r.actor,
                                      json.dumps(r.data, sort_keys=True, ensure_ascii=False), r.prev_hash, r.hash]))  # fmt: skip
        else:
            buffer.write(("\n  " if n == 1 else ",\n  ") + json.dumps(r.as_dict(), sort_keys=True))
        if n % _CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if fmt == "json":
        buffer.write("\n]\n" if n else "]\n")
    yield buffer.getvalue()


@router.get("/export")
def export(service: Service, who: Annotated[Identity, Depends(require("records:export"))],
           format: str = "json") -> StreamingResponse:  # noqa: A002  # fmt: skip
    """Every record, streamed (JSON list or formula-safe CSV)."""
    if format not in ("json", "csv"):
        raise HTTPException(422, "format must be json or csv")
    media = "application/json" if format == "json" else "text/csv"
    return StreamingResponse(_export_chunks(service.store, format), media_type=media)


def _filters(since: str | None, until: str | None, batch: str | None, profile: str | None,
             state: ItemState | None) -> Filters:  # fmt: skip
    return Filters(since, until, batch, profile, state)


def _register_chunks(store: RecordStore, fmt: str, filters: Filters) -> Iterator[str]:
    site = store.registry.site
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if fmt == "csv":
        writer.writerow(COLUMNS)
    for n, weapon in enumerate(entries(store, filters), start=1):
        if fmt == "csv":
            for row in weapon.rows(site):
                writer.writerow(csv_safe(row))
        else:
            buffer.write(json.dumps(weapon.as_dict(site), ensure_ascii=False) + "\n")
        if n % _CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@router.get("/register", response_model=None)
def register(service: Service, who: Annotated[Identity, Depends(require("records:export"))],
             format: str = "jsonl", since: str | None = None, until: str | None = None,  # noqa: A002
             batch: str | None = None, profile: str | None = None,
             state: ItemState | None = None) -> StreamingResponse | FileResponse:  # fmt: skip
    """The bound book, one weapon per entry: JSON lines or CSV streamed; XLSX or PDF as a file."""
    filters = _filters(since, until, batch, profile, state)
    if format in ("jsonl", "csv"):
        media = "text/csv" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(_register_chunks(service.store, format, filters), media_type=media)
    if format not in ("xlsx", "pdf"):
        raise HTTPException(422, "format must be jsonl, csv, xlsx or pdf")
    folder = Path(tempfile.mkdtemp(prefix="markctl-register-"))
    path = folder / f"register.{format}"
    write_register(service.store, format, path, filters)
    media = "application/pdf" if format == "pdf" else (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")  # fmt: skip
    return FileResponse(path, media_type=media, filename=path.name,
                        background=BackgroundTask(_remove, folder))  # fmt: skip


def _remove(folder: Path) -> None:
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


@router.get("/weapons")
def weapons(service: Service, who: Annotated[Identity, Depends(require("records:read"))],
            serial: str) -> list[str]:  # fmt: skip
    """Weapon keys that carry ``serial`` (any maker, any case): the candidates of a lookup by serial."""
    return service.store.weapons_by_serial(serial)


@router.get("/weapons/{weapon_key}")
def weapon(weapon_key: str, service: Service,
           who: Annotated[Identity, Depends(require("records:read"))]) -> dict[str, Any]:  # fmt: skip
    """One weapon's bound-book entry (the key in any case: MAKER|SERIAL)."""
    key = "|".join(" ".join(p.split()).upper() for p in weapon_key.split("|"))
    entry = next(entries(service.store, Filters(weapon_key=key)), None)
    if entry is None:
        raise HTTPException(404, f"no weapon {weapon_key!r}")
    return entry.as_dict(service.store.registry.site)


class _ImageGate:
    """At most ``MARKCTL_PHOTO_WORKERS`` photos are decoded and checked at once; a few more may
    wait; beyond that a request is refused (503) rather than queued without bound, so photo
    checks never hold memory without limit nor take every worker thread the machines' jobs use."""

    def __init__(self) -> None:
        self.slots = asyncio.Semaphore(photo_workers())
        self.waiting = 0


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ImageGate] = weakref.WeakKeyDictionary()
_MAX_WAITING = 4


def _gate() -> _ImageGate:
    loop = asyncio.get_running_loop()
    if loop not in _gates:
        _gates[loop] = _ImageGate()
    return _gates[loop]


@router.post("/{seq}/verify-image")
async def verify_image(seq: int, body: VerifyImageIn, service: Service,
                       who: Annotated[Identity, Depends(require("records:verify"))]) -> dict[str, Any]:  # fmt: skip
    """Read a photo of an applied mark back against the item's recorded layout; the result is recorded.

    413: the photo has too many bytes or pixels (refused before decoding); 422: not a PNG/JPEG,
    truncated or corrupt; 503: too many photos are being checked, try again shortly.
    """
    limit = photo_max_bytes()
    if len(body.image_base64) // 4 * 3 > limit + 3:
        raise HTTPException(
            413, f"the photo is more than the {limit / 1e6:.0f} MB allowed (MARKCTL_PHOTO_MAX_BYTES)"
        )
    try:
        raw = base64.b64decode(body.image_base64, validate=True)
    except binascii.Error as exc:
        raise HTTPException(422, f"image_base64 is not base64: {exc}") from exc
    gate = _gate()
    if gate.slots.locked() and gate.waiting >= _MAX_WAITING:
        raise HTTPException(503, "too many photos are being checked; try again in a minute")
    gate.waiting += 1
    try:
        await gate.slots.acquire()
    finally:
        gate.waiting -= 1
    try:
        record = await asyncio.to_thread(service.verify_image, seq, io.BytesIO(raw), f"auditor:{who.name}",
                                         px_per_mm=body.px_per_mm)  # fmt: skip
    except PhotoRejectedError as exc:
        raise HTTPException(413 if exc.too_large else 422, str(exc)) from exc
    finally:
        gate.slots.release()
    return record.as_dict()


@router.get("/{seq}")
def show(
    seq: int, service: Service, who: Annotated[Identity, Depends(require("records:read"))]
) -> dict[str, Any]:
    record = service.store.get(seq)
    if record is None:
        raise HTTPException(404, f"no record {seq}")
    return record.as_dict()
