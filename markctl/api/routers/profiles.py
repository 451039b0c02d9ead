"""Firmware and rule profiles, and layout previews."""

from __future__ import annotations

import asyncio
import io
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from markctl import profiles as prof
from markctl.api.deps import require
from markctl.api.schemas import PreviewIn, problems
from markctl.auth import Identity
from markctl.layouts import MarkRequest, check, compose, render_svg
from markctl.layouts.preview import render_image

router = APIRouter(tags=["profiles"])


@router.get("/profiles")
async def list_profiles(who: Annotated[Identity, Depends(require("profiles:read"))]) -> list[dict[str, Any]]:
    """Every firmware profile."""
    return await asyncio.to_thread(_profiles)


def _profiles() -> list[dict[str, Any]]:
    out = []
    for info in prof.list_profiles():
        p = prof.load_profile(info.id)
        out.append({"id": p.id, "name": p.name, "kind": p.machine.kind.value, "protocol": p.family})
    return out


@router.get("/profiles/{profile_id}", responses=problems(404))
async def show_profile(
    profile_id: str, who: Annotated[Identity, Depends(require("profiles:read"))]
) -> dict[str, Any]:
    """One merged firmware profile, provenance included."""
    profile = await asyncio.to_thread(prof.load_profile, profile_id)
    return profile.model_dump(mode="json")


@router.post("/layouts/preview", tags=["layouts"])
async def preview(body: PreviewIn, who: Annotated[Identity, Depends(require("layouts:read"))],
                  fmt: str = "json") -> Any:  # fmt: skip
    """Compose and check a mark request; ``fmt=svg`` returns the preview picture. The work runs in a
    thread: a large layout never holds up machine I/O."""
    if fmt not in ("json", "svg", "png"):
        raise HTTPException(422, "fmt must be json, svg or png")
    return await asyncio.to_thread(_preview, body.request, fmt)


def _preview(data: dict[str, Any], fmt: str) -> Any:
    request = MarkRequest.parse(data)
    layout = compose(request)
    report = check(layout)
    if fmt == "svg":
        return Response(render_svg(layout, report), media_type="image/svg+xml")
    if fmt == "png":
        buffer = io.BytesIO()
        render_image(layout, report.findings, px_per_mm=20).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")
    return report.to_dict()
