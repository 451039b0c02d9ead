"""Shared dependencies: the service, and who is calling with what right."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from markctl.auth import Identity, TokenStore
from markctl.service import MarkService

bearer = HTTPBearer(auto_error=False, description="An API token: `markctl tokens create NAME --role ROLE`.")


def get_service(request: Request) -> MarkService:
    service: MarkService = request.app.state.service
    return service


def get_tokens(request: Request) -> TokenStore:
    tokens: TokenStore = request.app.state.tokens
    return tokens


def identity(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    tokens: Annotated[TokenStore, Depends(get_tokens)],
) -> Identity:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    who = tokens.identify(credentials.credentials)
    if who is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or revoked token",
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    return who


def require(permission: str) -> Callable[[Identity], Identity]:
    """A dependency that lets through only identities whose role has ``permission``."""

    def check(who: Annotated[Identity, Depends(identity)]) -> Identity:
        if not who.may(permission):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {who.role.value} may not {permission}")
        return who

    return check


Service = Annotated[MarkService, Depends(get_service)]
