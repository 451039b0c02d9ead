"""API tokens and roles.

Tokens are random (``secrets.token_urlsafe``), shown once when created, and stored only as their
SHA-256 in the records database. Roles:

* ``operator``   — run jobs and read their progress;
* ``supervisor`` — everything an operator may, plus compliance overrides, resolving unknown items,
  re-mark overrides and managing machines;
* ``auditor``    — read and verify records, export them.

Every override or resolution records the token's name as who did it. Creating and revoking a token
are events in the records' hash chain: a token written straight into the table is not on the chain,
so :meth:`TokenStore.identify` refuses it and ``records verify`` names it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from markctl.errors import ConfigError
from markctl.records import RecordStore
from markctl.records.schema import api_tokens

__all__ = ["Identity", "Role", "TokenStore"]


class Role(StrEnum):
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    AUDITOR = "auditor"


#: What each role may do.
PERMISSIONS: dict[Role, frozenset[str]] = {
    Role.OPERATOR: frozenset({"jobs:run", "jobs:read", "machines:read", "layouts:read", "profiles:read"}),
    Role.SUPERVISOR: frozenset(
        {
            "jobs:run",
            "jobs:read",
            "jobs:override",
            "items:resolve",
            "machines:read",
            "machines:manage",
            "layouts:read",
            "profiles:read",
            "records:read",
        }  # fmt: skip
    ),
    Role.AUDITOR: frozenset(
        {"records:read", "records:verify", "records:export", "jobs:read", "profiles:read"}
    ),
}


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    role: Role
    created_at: str = ""  # ISO 8601, UTC: the service refuses tokens older than its limit

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Tokens kept (hashed) beside the records."""

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._engine = store.engine

    def create(self, name: str, role: Role | str, actor: str = "markctl:tokens") -> str:
        """A new token for ``name``; the only time the clear token exists is this return value."""
        try:
            role = Role(role)
        except ValueError as exc:
            raise ConfigError(f"role {role!r}: use one of {', '.join(r.value for r in Role)}") from exc
        if not name or len(name) > 100:
            raise ConfigError("a token needs a name of 1-100 characters (it is recorded as who acted)")
        token = secrets.token_urlsafe(32)
        try:
            self._store.add_token(name, role.value, _digest(token), actor)
        except IntegrityError as exc:
            raise ConfigError(f"a token named {name!r} exists already") from exc
        return token

    def identify(self, token: str) -> Identity | None:
        """The identity behind a token, or None if unknown or revoked."""
        if not token:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(
                select(
                    api_tokens.c.name, api_tokens.c.role, api_tokens.c.revoked, api_tokens.c.created_at
                ).where(api_tokens.c.token_hash == _digest(token))
            ).first()
        if row is None or row.revoked:
            return None
        if not self._store.token_on_chain(row.name, _digest(token), row.role):
            return None  # written into the table behind markctl's back: not a token it issued
        return Identity(row.name, Role(row.role), row.created_at)

    def revoke(self, name: str, actor: str = "markctl:tokens") -> bool:
        return self._store.revoke_token(name, actor)

    def list(self) -> list[tuple[str, Role, bool]]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(api_tokens.c.name, api_tokens.c.role, api_tokens.c.revoked))
            return [(r.name, Role(r.role), bool(r.revoked)) for r in rows]
