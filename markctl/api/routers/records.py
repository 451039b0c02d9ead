"""Records: list, show, verify, export, the register (auditors and supervisors).

Short reads (a page of a list, one record) are plain ``def`` endpoints (FastAPI's threadpool).
Verify, export and the register run in a worker process at the lowest CPU priority
(:mod:`markctl.records.worker`): minutes of hashing and formatting on a large registry neither
run on the event loop nor contend with it for the interpreter, so they cannot starve a machine's
I/O. Lists are paged (``after``/``limit``); exports and the register are streamed, never built whole
in memory, and stop (their worker killed) when the client goes away.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import tempfile
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from markctl.api.deps import Service, require, until_client_leaves
from markctl.api.schemas import VerifyImageIn, problems
from markctl.auth import Identity
from markctl.errors import RecordError
from markctl.records import ItemState, RecordStore
from markctl.records.register import Filters, entries, write_register
from markctl.records.worker import (
    export_chunks,
    register_chunks,
    run_task,
    stream_task,
    uses_worker,
    verify_answer,
)
from markctl.verify.photo import PhotoRejectedError, photo_workers
from markctl.verify.photo import max_bytes as photo_max_bytes

router = APIRouter(prefix="/records", tags=["records"])


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


@router.get("/verify", responses=problems(422, 503))
async def verify(request: Request, service: Service, who: Annotated[Identity, Depends(require("records:verify"))],
                 expect_head: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Recompute the chain (in a worker process: minutes on a large registry, never on the loop)."""
    store = service.store
    if uses_worker(store):
        try:
            answer = await until_client_leaves(request, run_task(store, "verify", {"expect_head": expect_head}),
                                               "the verification was stopped")  # fmt: skip
        except RecordError as exc:  # the worker could not run: not the request's fault
            raise HTTPException(503, str(exc)) from exc
    else:
        answer = await run_in_threadpool(_verify_here, store, expect_head)
    if "error" in answer:
        raise HTTPException(422, str(answer["error"]))
    return answer


def _verify_here(store: RecordStore, expect_head: str | None) -> dict[str, Any]:
    try:
        return verify_answer(store, expect_head)
    except RecordError as exc:
        return {"error": str(exc)}


async def _streamed(store: RecordStore, task: str, args: dict[str, Any],
                    here: Callable[[], Iterator[str]]) -> AsyncIterator[bytes] | Iterator[str]:  # fmt: skip
    """The worker's bytes (its first chunk already read, so a worker that cannot start is an error
    status, not a cut stream), or, for a database only this process can open, the same chunks made
    in the threadpool."""
    if not uses_worker(store):
        return here()
    chunks = stream_task(store, task, args)
    try:
        first = await anext(chunks, b"")
    except RecordError as exc:
        raise HTTPException(503, str(exc)) from exc

    async def rest() -> AsyncIterator[bytes]:
        try:
            yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()  # kills the worker if the client went away

    return rest()


class _ClosingStream(StreamingResponse):
    """A streamed answer that closes its chunks however the response ends, a client that went away
    included: the worker making them is killed then, not whenever the iterator is collected."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()


@router.get("/export", responses=problems(422, 503))
async def export(service: Service, who: Annotated[Identity, Depends(require("records:export"))],
                 format: str = "json") -> StreamingResponse:  # noqa: A002  # fmt: skip
    """Every record, streamed (JSON list or formula-safe CSV), made in a worker process."""
    if format not in ("json", "csv"):
        raise HTTPException(422, "format must be json or csv")
    media = "application/json" if format == "json" else "text/csv"
    store = service.store
    body = await _streamed(store, "export", {"format": format}, lambda: export_chunks(store, format))
    return _ClosingStream(body, media_type=media)


@router.get("/register", response_model=None, responses=problems(422, 503))
async def register(service: Service, who: Annotated[Identity, Depends(require("records:export"))],
                   format: str = "jsonl", since: str | None = None, until: str | None = None,  # noqa: A002
                   batch: str | None = None, profile: str | None = None,
                   state: ItemState | None = None) -> StreamingResponse | FileResponse:  # fmt: skip
    """The bound book, one weapon per entry: JSON lines or CSV streamed; XLSX or PDF as a file.
    Made in a worker process."""
    filters = Filters(since, until, batch, profile, state)
    args = {"since": since, "until": until, "batch": batch, "profile": profile,
            "state": state.value if state else None}  # fmt: skip
    store = service.store
    if format in ("jsonl", "csv"):
        media = "text/csv" if format == "csv" else "application/x-ndjson"
        body = await _streamed(store, "register", {**args, "format": format},
                               lambda: register_chunks(store, format, filters))  # fmt: skip
        return _ClosingStream(body, media_type=media)
    if format not in ("xlsx", "pdf"):
        raise HTTPException(422, "format must be jsonl, csv, xlsx or pdf")
    folder = Path(tempfile.mkdtemp(prefix="markctl-register-"))
    path = folder / f"register.{format}"
    try:
        if uses_worker(store):
            await run_task(store, "register-file", {**args, "format": format, "path": str(path)})
        else:
            await run_in_threadpool(write_register, store, format, path, filters)
    except BaseException as exc:
        _remove(folder)
        if isinstance(exc, RecordError):
            raise HTTPException(503, str(exc)) from exc
        raise
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
