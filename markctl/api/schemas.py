"""Request and response bodies of the API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobIn(_In):
    manifest_csv: str = Field(min_length=1, max_length=50_000_000, description="The manifest, as CSV text.")
    catalogue_toml: str = Field(
        min_length=1, max_length=1_000_000, description="The parts catalogue, as TOML."
    )
    machine: str = Field(min_length=1, max_length=300, description="A configured machine name or an address.")
    exclude: list[int] = Field(default_factory=list, description="Manifest lines to leave out.")
    overrides: dict[int, Annotated[str, Field(min_length=3, max_length=2000)]] = Field(
        default_factory=dict,
        description="Manifest line -> reason: mark despite compliance errors (supervisor).",
    )


class ResolveIn(_In):
    outcome: Literal["marked", "not-marked"]
    reason: str = Field(min_length=3, max_length=2000)


class OverrideIn(_In):
    reason: str = Field(min_length=3, max_length=2000)


class MachineIn(_In):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    address: str = Field(min_length=1, max_length=300)
    profile: str | None = Field(default=None, max_length=64)


class PreviewIn(_In):
    request: dict[str, Any] = Field(description="A MarkRequest (the same structure as the TOML files).")


class VerifyImageIn(_In):
    image_base64: str = Field(
        min_length=4, max_length=40_000_000, description="The photo (PNG or JPEG), base64."
    )
    px_per_mm: float | None = Field(
        default=None, gt=0, le=1000, description="Pixels per mm, if known; the scale is measured anyway."
    )


class Problem(BaseModel):
    """Every error answer: one line naming the cause (and, for a malformed request, every bad part)."""

    detail: str = Field(description="What went wrong and, where it helps, what to do next.")
    code: str | None = Field(default=None, description="A short machine-readable code, e.g. `address`.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For a malformed request: each bad part (`loc`, `msg`, `type`)."
    )


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all with the :class:`Problem` body."""
    what = {
        401: "No token, an unknown, revoked or expired one.",
        403: "The token's role may not do this.",
        404: "No such resource.",
        409: "The resource's state forbids it (busy machine, item already marked, exists already).",
        422: "The request is malformed or refused (the detail names the part).",
        429: "Too many failed authentications from this client; see Retry-After.",
        502: "The machine failed (not the request).",
        503: "The service is shutting down.",
    }
    return {s: {"model": Problem, "description": what[s]} for s in statuses}


AUTH = problems(401, 403, 422, 429)
