"""Firmware and rule profiles, and layout previews."""

from __future__ import annotations

import io
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from markctl import profiles as prof
from markctl.api.deps import require
from markctl.api.schemas import PreviewIn
from markctl.auth import Identity
from markctl.layouts import MarkRequest, check, compose, render_svg
from markctl.layouts.preview import render_image

router = APIRouter(tags=["profiles"])


@router.get("/profiles")
async def list_profiles(who: Annotated[Identity, Depends(require("profiles:read"))]) -> list[dict[str, Any]]:
    """Every firmware profile."""
    out = []
    for info in prof.list_profiles():
        p = prof.load_profile(info.id)
        out.append({"id": p.id, "name": p.name, "kind": p.machine.kind.value, "protocol": p.family})
    return out


@router.get("/profiles/{profile_id}")
async def show_profile(
    profile_id: str, who: Annotated[Identity, Depends(require("profiles:read"))]
) -> dict[str, Any]:
    """One merged firmware profile, provenance included."""
    return prof.load_profile(profile_id).model_dump(mode="json")


@router.post("/layouts/preview", tags=["layouts"])
async def preview(body: PreviewIn, who: Annotated[Identity, Depends(require("layouts:read"))],
                  fmt: str = "json") -> Any:  # fmt: skip
    """Compose and check a mark request; ``fmt=svg`` returns the preview picture."""
    request = MarkRequest.parse(body.request)
    layout = compose(request)
    report = check(layout)
    if fmt == "svg":
        return Response(render_svg(layout, report), media_type="image/svg+xml")
    if fmt == "png":
        buffer = io.BytesIO()
        render_image(layout, report.findings, px_per_mm=20).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")
    if fmt != "json":
        raise HTTPException(422, "fmt must be json, svg or png")
    return report.to_dict()
