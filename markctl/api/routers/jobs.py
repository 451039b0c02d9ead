"""Jobs: submit a manifest (202), watch it (server-sent events), abort it; resolve and override items.

Who may abort a job: the operator who submitted it, or any supervisor (docs/service.md). Item keys
contain the weapon's serial, which may hold ``/``: the item routes take the rest of the path.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse

from markctl.api.deps import Service, require, until_client_leaves
from markctl.api.schemas import JobIn, OverrideIn, ResolveIn, problems
from markctl.auth import Identity, Role
from markctl.service import JobRun, MarkService

router = APIRouter(tags=["jobs"])


@router.post("/jobs", status_code=202, responses=problems(503))
async def submit(
    body: JobIn, request: Request, service: Service, who: Annotated[Identity, Depends(require("jobs:run"))]
) -> JSONResponse:
    """Pre-check a manifest and start marking it on a registered machine. 202 with the job; 422 with
    the per-row report if rows block it (the job is not kept). The pre-check stops if the client goes
    away, the job is aborted or the service shuts down."""
    if body.overrides and not who.may("jobs:override"):
        raise HTTPException(403, f"role {who.role.value} may not override compliance findings")
    if service.closing:
        raise HTTPException(503, "the service is shutting down; submit the job again once it is back")
    if body.machine not in service.machine_names():
        registered = ", ".join(service.machine_names()) or "none"
        raise HTTPException(
            422,
            f"machine {body.machine!r} is not registered (registered: {registered}); "
            "a supervisor registers machines with POST /machines",
        )
    job = await until_client_leaves(
        request,
        service.submit(body.manifest_csv.encode(), body.catalogue_toml, machine=body.machine, operator=who.name,
                       exclude=set(body.exclude), overrides=body.overrides,
                       # a supervisor's token names who gives overrides and records exemptions
                       override_by=who.name if who.may("jobs:override") else None),
        "the pre-check was cancelled and nothing was marked",
    )  # fmt: skip
    return await _rendered(job, 422 if job.state == "rejected" else 202)


async def _rendered(job: JobRun, status_code: int = 200) -> JSONResponse:
    """The job's summary as JSON, made in a thread: with a 10,000-row pre-check report it is tens of
    milliseconds of Python that would otherwise hold up the loop that drives the machines."""
    return await asyncio.to_thread(lambda: JSONResponse(job.summary(), status_code=status_code))


@router.get("/jobs")
async def list_jobs(
    service: Service, who: Annotated[Identity, Depends(require("jobs:read"))]
) -> list[dict[str, Any]]:
    """Jobs of this service: running ones, and finished ones until they expire (their records stay)."""
    return [
        {k: v for k, v in job.summary().items() if k not in ("rows", "results")}
        for job in service.list_jobs()
    ]


def _job(service: MarkService, job_id: str) -> JobRun:
    if job_id not in service.jobs:
        raise HTTPException(404, f"no job {job_id!r} in this service (finished jobs expire; records stay)")
    return service.jobs[job_id]


@router.get("/jobs/{job_id}", responses=problems(404), response_model=None)
async def get_job(
    job_id: str, service: Service, who: Annotated[Identity, Depends(require("jobs:read"))]
) -> JSONResponse:
    return await _rendered(_job(service, job_id))


@router.get("/jobs/{job_id}/events", responses=problems(404))
async def job_events(job_id: str, service: Service, who: Annotated[Identity, Depends(require("jobs:read"))],
                     after: int = 0) -> StreamingResponse:  # fmt: skip
    """Progress as server-sent events until the job ends (or the service shuts down). Only the
    latest events of a job are kept: ``after`` (the last ``id`` seen) resumes a stream."""
    job = _job(service, job_id)

    async def stream() -> AsyncIterator[str]:
        async for event in job.follow(max(0, after)):
            yield f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
        yield f"event: end\ndata: {json.dumps({'state': job.state})}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.post("/jobs/{job_id}/abort", responses=problems(404))
async def abort(
    job_id: str, service: Service, who: Annotated[Identity, Depends(require("jobs:run"))]
) -> dict[str, Any]:
    """Stop the job (its submitter or a supervisor): the machine is made safe and the item in
    progress is recorded; the answer shows the counts and results so far."""
    job = _job(service, job_id)
    if who.role is not Role.SUPERVISOR and who.name != job.operator:
        raise HTTPException(
            403, f"only {job.operator!r} (who submitted it) or a supervisor may abort this job"
        )
    return (await service.abort(job_id)).summary()


@router.post("/items/{item_key:path}/resolve", tags=["items"], responses=problems(404, 409))
async def resolve(item_key: str, body: ResolveIn, service: Service,
                  who: Annotated[Identity, Depends(require("items:resolve"))]) -> dict[str, Any]:  # fmt: skip
    """A supervisor records what inspection found on an item whose cycle outcome was unknown."""
    record = await asyncio.to_thread(
        service.resolve, item_key, body.outcome, body.reason, f"supervisor:{who.name}"
    )
    return record.as_dict()


@router.post("/items/{item_key:path}/override", tags=["items"], responses=problems(404, 409))
async def allow_remark(item_key: str, body: OverrideIn, service: Service,
                       who: Annotated[Identity, Depends(require("jobs:override"))]) -> dict[str, Any]:  # fmt: skip
    """A supervisor allows a marked item to be marked again, with a reason."""
    record = await asyncio.to_thread(service.allow_remark, item_key, body.reason, f"supervisor:{who.name}")
    return record.as_dict()


@router.post("/items/{item_key:path}/end-exemption", tags=["items"], responses=problems(404, 409))
async def end_exemption(item_key: str, body: OverrideIn, service: Service,
                        who: Annotated[Identity, Depends(require("jobs:override"))]) -> dict[str, Any]:  # fmt: skip
    """A supervisor ends a temporary-import exemption, with a reason (the weapon stays and is to be
    marked): the item is planned again, and the next job marks it."""
    record = await asyncio.to_thread(service.end_exemption, item_key, body.reason, f"supervisor:{who.name}")
    return record.as_dict()
