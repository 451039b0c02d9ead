"""Records: list, show, verify, export (auditors and supervisors)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import weakref
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import PlainTextResponse

from markctl.api.deps import Service, require
from markctl.api.schemas import VerifyImageIn
from markctl.auth import Identity
from markctl.records import ItemState
from markctl.verify.photo import PhotoRejectedError, photo_workers
from markctl.verify.photo import max_bytes as photo_max_bytes

router = APIRouter(prefix="/records", tags=["records"])


@router.get("")
async def list_records(service: Service, who: Annotated[Identity, Depends(require("records:read"))],
                       after: int = 0, limit: int = 100) -> list[dict[str, Any]]:  # fmt: skip
    if not 1 <= limit <= 10_000 or after < 0:
        raise HTTPException(422, "limit must be 1-10000 and after >= 0")
    return [r.as_dict() for r in service.store.records(after=after, limit=limit)]


@router.get("/items")
async def list_items(service: Service, who: Annotated[Identity, Depends(require("records:read"))],
                     state: ItemState | None = None, batch: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    return [i.as_dict() for i in service.store.items(state=state, batch_id=batch)]


@router.get("/verify")
async def verify(service: Service, who: Annotated[Identity, Depends(require("records:verify"))],
                 expect_head: str | None = None) -> dict[str, Any]:  # fmt: skip
    report = service.store.verify(expect_head=expect_head)
    return {"ok": report.ok, "rows": report.rows, "head_seq": report.head_seq, "head_hash": report.head_hash,
            "problems": [{"seq": p.seq, "kind": p.kind, "detail": p.detail} for p in report.problems]}  # fmt: skip


@router.get("/export")
async def export(service: Service, who: Annotated[Identity, Depends(require("records:export"))],
                 format: str = "json") -> PlainTextResponse:  # noqa: A002  # fmt: skip
    if format not in ("json", "csv"):
        raise HTTPException(422, "format must be json or csv")
    media = "application/json" if format == "json" else "text/csv"
    return PlainTextResponse(service.store.export_text(format), media_type=media)


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
async def show(
    seq: int, service: Service, who: Annotated[Identity, Depends(require("records:read"))]
) -> dict[str, Any]:
    record = service.store.get(seq)
    if record is None:
        raise HTTPException(404, f"no record {seq}")
    return record.as_dict()
