"""Configured machines and their state."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from markctl.api.deps import Service, require
from markctl.api.schemas import MachineIn
from markctl.auth import Identity
from markctl.config import MachineEntry

router = APIRouter(prefix="/machines", tags=["machines"])


@router.get("")
async def list_machines(
    service: Service, who: Annotated[Identity, Depends(require("machines:read"))]
) -> list[dict[str, Any]]:
    """Every machine the service knows, with its state (never blocks on a running job)."""
    return service.machine_status()


@router.post("", status_code=201)
async def add_machine(body: MachineIn, service: Service,
                      who: Annotated[Identity, Depends(require("machines:manage"))]) -> dict[str, Any]:  # fmt: skip
    """Add a machine by address (supervisor)."""
    service.add_machine(body.name, MachineEntry(address=body.address, profile=body.profile))
    return {"name": body.name, "address": body.address, "profile": body.profile, "added_by": who.name}
