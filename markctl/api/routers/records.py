"""Records: list, show, verify, export (auditors and supervisors)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import PlainTextResponse
from PIL import UnidentifiedImageError

from markctl.api.deps import Service, require
from markctl.api.schemas import VerifyImageIn
from markctl.auth import Identity
from markctl.records import ItemState

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


@router.post("/{seq}/verify-image")
async def verify_image(seq: int, body: VerifyImageIn, service: Service,
                       who: Annotated[Identity, Depends(require("records:verify"))]) -> dict[str, Any]:  # fmt: skip
    """Check a photo of an applied mark against the item's recorded layout; the result is recorded."""
    try:
        raw = base64.b64decode(body.image_base64, validate=True)
    except binascii.Error as exc:
        raise HTTPException(422, f"image_base64 is not base64: {exc}") from exc
    try:
        record = await asyncio.to_thread(service.verify_image, seq, io.BytesIO(raw), f"auditor:{who.name}",
                                         px_per_mm=body.px_per_mm)  # fmt: skip
    except UnidentifiedImageError as exc:
        raise HTTPException(422, "image_base64 is not a PNG or JPEG image") from exc
    return record.as_dict()


@router.get("/{seq}")
async def show(
    seq: int, service: Service, who: Annotated[Identity, Depends(require("records:read"))]
) -> dict[str, Any]:
    record = service.store.get(seq)
    if record is None:
        raise HTTPException(404, f"no record {seq}")
    return record.as_dict()
