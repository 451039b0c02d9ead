"""Jobs: submit a manifest (202), watch it (server-sent events), abort it; resolve and override items."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse, StreamingResponse

from markctl.api.deps import Service, require
from markctl.api.schemas import JobIn, OverrideIn, ResolveIn
from markctl.auth import Identity
from markctl.service import JobRun, MarkService

router = APIRouter(tags=["jobs"])


@router.post("/jobs", status_code=202)
async def submit(
    body: JobIn, service: Service, who: Annotated[Identity, Depends(require("jobs:run"))]
) -> JSONResponse:
    """Pre-check a manifest and start marking it. 202 with the job; 422 with the per-row report if rows block it."""
    if body.overrides and not who.may("jobs:override"):
        raise HTTPException(403, f"role {who.role.value} may not override compliance findings")
    job = await service.submit(
        body.manifest_csv.encode(),
        body.catalogue_toml,
        machine=body.machine,
        operator=who.name,
        exclude=set(body.exclude),
        overrides=body.overrides,
        override_by=who.name if body.overrides else None,
    )
    return JSONResponse(job.summary(), status_code=422 if job.state == "rejected" else 202)


@router.get("/jobs")
async def list_jobs(
    service: Service, who: Annotated[Identity, Depends(require("jobs:read"))]
) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in job.summary().items() if k not in ("rows", "results")}
        for job in service.jobs.values()
    ]


def _job(service: MarkService, job_id: str) -> JobRun:
    if job_id not in service.jobs:
        raise HTTPException(404, f"no job {job_id!r} in this service")
    return service.jobs[job_id]


@router.get("/jobs/{job_id}")
async def get_job(
    job_id: str, service: Service, who: Annotated[Identity, Depends(require("jobs:read"))]
) -> dict[str, Any]:
    return _job(service, job_id).summary()


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, service: Service, who: Annotated[Identity, Depends(require("jobs:read"))],
                     after: int = 0) -> StreamingResponse:  # fmt: skip
    """Progress as server-sent events until the job ends."""
    job = _job(service, job_id)

    async def stream() -> AsyncIterator[str]:
        async for event in job.follow(max(0, after)):
            yield f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
        yield f"event: end\ndata: {json.dumps({'state': job.state})}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.post("/jobs/{job_id}/abort")
async def abort(
    job_id: str, service: Service, who: Annotated[Identity, Depends(require("jobs:run"))]
) -> dict[str, Any]:
    """Stop the job: the machine is made safe and the item in progress is recorded."""
    _job(service, job_id)
    return (await service.abort(job_id)).summary()


@router.post("/items/{item_key}/resolve", tags=["items"])
async def resolve(item_key: str, body: ResolveIn, service: Service,
                  who: Annotated[Identity, Depends(require("items:resolve"))]) -> dict[str, Any]:  # fmt: skip
    """A supervisor records what inspection found on an item whose cycle outcome was unknown."""
    return service.resolve(item_key, body.outcome, body.reason, f"supervisor:{who.name}").as_dict()


@router.post("/items/{item_key}/override", tags=["items"])
async def allow_remark(item_key: str, body: OverrideIn, service: Service,
                       who: Annotated[Identity, Depends(require("jobs:override"))]) -> dict[str, Any]:  # fmt: skip
    """A supervisor allows a marked item to be marked again, with a reason."""
    return service.allow_remark(item_key, body.reason, f"supervisor:{who.name}").as_dict()
