"""``create_app``: the FastAPI application, its lifespan, and error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from markctl import __version__
from markctl.api.routers import jobs, machines, profiles, records
from markctl.auth import TokenStore
from markctl.config import Settings
from markctl.errors import DuplicateMarkError, ItemStateError, MarkctlError
from markctl.records import RecordStore
from markctl.service import MarkService


def create_app(
    settings: Settings | None = None, *, store: RecordStore | None = None, out_dir: Path | None = None
) -> FastAPI:
    """Build the service; its lifespan opens the records and closes every machine to a safe state."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        records = store if store is not None else RecordStore.open(settings.records_location())
        app.state.service = MarkService(settings, records, out_dir=out_dir)
        app.state.tokens = TokenStore(records)
        try:
            yield
        finally:
            await app.state.service.close()  # abort jobs, beam off, close machines
            if own_store:
                records.close()

    app = FastAPI(
        title="markctl",
        version=__version__,
        description="Mark firearms compliantly on laser and dot-peen machines, with durable records.",
        lifespan=lifespan,
    )

    @app.exception_handler(MarkctlError)
    async def _markctl_error(request: Request, exc: MarkctlError) -> JSONResponse:
        if isinstance(exc, (DuplicateMarkError, ItemStateError)):
            status = 409
        elif isinstance(exc, ValueError):  # bad input: configuration, layout, manifest
            status = 422
        else:
            status = 502  # the machine failed, not the request
        return JSONResponse({"detail": str(exc), "code": exc.code}, status_code=status)

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness; needs no token."""
        return {"status": "ok", "version": __version__}

    for router in (profiles.router, machines.router, jobs.router, records.router):
        app.include_router(router)
    return app
