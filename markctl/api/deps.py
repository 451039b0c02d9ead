"""Shared dependencies: the service, and who is calling with what right.

Tokens expire (``[service] token_max_age_days``) and failed authentications are rate-limited per
client address (``auth_failures_per_minute``), so a token cannot be guessed by trying, and a
leaked old token stops working on its own.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from markctl.auth import Identity, TokenStore
from markctl.config import ServiceSection
from markctl.service import MarkService

bearer = HTTPBearer(auto_error=False, description="An API token: `markctl tokens create NAME --role ROLE`.")


class AuthLimiter:
    """At most ``limit`` failed authentications per client address in any 60 s.

    Token checks run in FastAPI's thread pool (they read the database), hence the lock.
    """

    window_s = 60.0

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.setdefault(client, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 if it may now."""
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            if not times:
                self._failures.pop(client, None)  # bounded by clients failing within the window
            if len(times) < self.limit:
                return 0
            return max(1, math.ceil(times[0] + self.window_s - now))

    def failed(self, client: str) -> None:
        with self._lock:
            self._recent(client, self._clock()).append(self._clock())


def get_service(request: Request) -> MarkService:
    service: MarkService = request.app.state.service
    return service


def get_tokens(request: Request) -> TokenStore:
    tokens: TokenStore = request.app.state.tokens
    return tokens


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def identity(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    tokens: Annotated[TokenStore, Depends(get_tokens)],
) -> Identity:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("a bearer token is required")
    limiter: AuthLimiter = request.app.state.auth_limiter
    limits: ServiceSection = request.app.state.limits
    client = request.client.host if request.client else "unknown"
    wait = limiter.retry_after(client)
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed authentications from {client}; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    who = tokens.identify(credentials.credentials)
    if who is None:
        limiter.failed(client)
        raise _unauthorized("unknown or revoked token")
    if limits.token_max_age_days and who.created_at:
        created = datetime.fromisoformat(who.created_at)
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        age_days = (datetime.now(UTC) - created).total_seconds() / 86400
        if age_days > limits.token_max_age_days:
            raise _unauthorized(
                f"token {who.name!r} expired (older than {limits.token_max_age_days:g} days): "
                "create a new one with `markctl tokens create`"
            )
    return who


def require(permission: str) -> Callable[[Identity], Identity]:
    """A dependency that lets through only identities whose role has ``permission``."""

    def check(who: Annotated[Identity, Depends(identity)]) -> Identity:
        if not who.may(permission):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {who.role.value} may not {permission}")
        return who

    return check


Service = Annotated[MarkService, Depends(get_service)]


T = TypeVar("T")


async def until_client_leaves(request: Request, work: Awaitable[T], stopped: str) -> T:
    """Await ``work``, cancelling it if the client disconnects first (its body is read already, so
    the next message the server can send us is the disconnect); then 499 with ``stopped``."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
        raise HTTPException(499, f"the client went away; {stopped}")
    return task.result()
