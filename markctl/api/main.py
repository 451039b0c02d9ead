"""``create_app``: the FastAPI application, its lifespan, error mapping and offline API docs.

Shutdown must reach a safe state whatever clients are connected. uvicorn, on SIGTERM, first waits
for open connections to finish and only then runs the lifespan's shutdown; a server-sent-events
client never finishes on its own, so jobs would go on marking. The lifespan therefore chains the
server's own signal handler: the signal starts ``MarkService.close()`` at once (pre-checks
cancelled, jobs aborted, machines made safe, event streams ended), which lets the connections end
and the server exit.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from markctl import __version__
from markctl.api.deps import AuthLimiter
from markctl.api.routers import jobs, machines, profiles, records
from markctl.api.schemas import AUTH
from markctl.auth import TokenStore
from markctl.config import Settings
from markctl.errors import DriverNotFoundError, DuplicateMarkError, ItemStateError, MarkctlError
from markctl.records import RecordStore
from markctl.service import MarkService

_Handler = Callable[[int, FrameType | None], Any]


def _docs_assets() -> Path:
    """Swagger UI and ReDoc, as shipped inside the fastapi-offline wheel (no CDN: depots are offline)."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def _chain_shutdown_signals(start_shutdown: Callable[[], None]) -> dict[int, _Handler]:
    """Run ``start_shutdown`` on SIGTERM/SIGINT before the server's own handler; returns what to restore.

    Only a server that handles the signal itself (uvicorn does) is chained; signals can only be
    handled in the main thread (an in-process test client runs the app elsewhere: nothing to do).
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    loop = asyncio.get_running_loop()
    previous: dict[int, _Handler] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        old = signal.getsignal(sig)
        if not callable(old):
            continue

        def handler(signum: int, frame: FrameType | None, old: _Handler = old) -> None:
            loop.call_soon_threadsafe(start_shutdown)
            old(signum, frame)

        signal.signal(sig, handler)
        previous[sig] = old
    return previous


def create_app(
    settings: Settings | None = None, *, store: RecordStore | None = None, out_dir: Path | None = None
) -> FastAPI:
    """Build the service; its lifespan opens the records and closes every machine to a safe state."""
    settings = settings or Settings()
    limits = settings.service

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store = store is None
        records_store = store if store is not None else RecordStore.open(settings.records_location())
        service = MarkService(settings, records_store, out_dir=out_dir, addresses_as_machines=False,
                              event_window=limits.event_window, keep_finished=limits.keep_finished_jobs,
                              keep_finished_s=limits.keep_finished_s, precheck_process=True)  # fmt: skip
        app.state.service = service
        app.state.tokens = TokenStore(records_store)
        closing: list[asyncio.Task[None]] = []

        def start_shutdown() -> None:
            if not closing:
                closing.append(asyncio.get_running_loop().create_task(service.close()))

        previous = _chain_shutdown_signals(start_shutdown)
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
            if closing:
                await asyncio.gather(*closing, return_exceptions=True)
            await service.close()  # abort jobs, beam off, close machines (idempotent)
            if own_store:
                records_store.close()

    app = FastAPI(
        title="markctl",
        version=__version__,
        description="Mark firearms compliantly on laser and dot-peen machines, with durable records.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.limits = limits
    app.state.auth_limiter = AuthLimiter(limits.auth_failures_per_minute)

    @app.exception_handler(MarkctlError)
    async def _markctl_error(request: Request, exc: MarkctlError) -> JSONResponse:
        if isinstance(exc, (DuplicateMarkError, ItemStateError)):
            status = 409
        elif isinstance(exc, (ValueError, DriverNotFoundError)):  # bad input: configuration, address, layout
            status = 422
        else:
            status = 502  # the machine failed, not the request
        return JSONResponse({"detail": str(exc), "code": exc.code}, status_code=status)

    @app.exception_handler(ValueError)
    async def _value_error(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """One line naming the first bad part (as every markctl error), the full list beside it."""
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]  # fmt: skip
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(first["loc"])
        return JSONResponse(
            {"detail": f"{where}: {first['msg']}" if where else str(first["msg"]), "code": "invalid-request",
             "errors": errors},
            status_code=422,
        )  # fmt: skip

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness; needs no token."""
        return {"status": "ok", "version": __version__}

    app.mount("/docs-assets", StaticFiles(directory=_docs_assets()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="markctl API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="markctl API",
            redoc_js_url="/docs-assets/redoc.standalone.js",
            redoc_favicon_url="/docs-assets/favicon.png",
            with_google_fonts=False,
        )

    for router in (profiles.router, machines.router, jobs.router, records.router):
        app.include_router(router, responses=AUTH)  # every route needs a token and may be refused
    return app
