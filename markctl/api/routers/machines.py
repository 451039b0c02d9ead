"""Registered machines: their state, registering one (checked at once), recovering one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from markctl.api.deps import Service, require
from markctl.api.schemas import MachineIn, problems
from markctl.auth import Identity
from markctl.config import MachineEntry

router = APIRouter(prefix="/machines", tags=["machines"])


@router.get("")
async def list_machines(
    service: Service, who: Annotated[Identity, Depends(require("machines:read"))]
) -> list[dict[str, Any]]:
    """Every machine the service knows, with its state (never blocks on a running job)."""
    return service.machine_status()


@router.post("", status_code=201, responses=problems(409))
async def add_machine(body: MachineIn, service: Service,
                      who: Annotated[Identity, Depends(require("machines:manage"))]) -> dict[str, Any]:  # fmt: skip
    """Register a machine (supervisor). The address and profile are checked together now (422 naming
    the bad part: scheme, transport, location, an unknown option, the profile); nothing is opened."""
    if body.name in service.machine_names():
        raise HTTPException(409, f"machine {body.name!r} exists already")
    entry = service.add_machine(body.name, MachineEntry(address=body.address, profile=body.profile))
    return {"name": body.name, "address": entry.address, "profile": entry.profile, "added_by": who.name}


@router.post("/{name}/recover", responses=problems(404, 409, 502))
async def recover(name: str, service: Service,
                  who: Annotated[Identity, Depends(require("machines:manage"))]) -> dict[str, Any]:  # fmt: skip
    """After a lost link or an unconfirmed safe state (supervisor, once the machine is inspected):
    reconnect and confirm its safe state. 502 if the safe state still cannot be confirmed."""
    if name not in service.machine_names():
        raise HTTPException(
            404, f"no machine {name!r} (registered: {', '.join(service.machine_names()) or 'none'})"
        )
    if any(m["busy"] for m in service.machine_status() if m["name"] == name):
        raise HTTPException(409, f"machine {name!r} is running a job; abort it first")
    return await service.recover(name)
