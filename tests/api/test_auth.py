"""Every endpoint but /health needs a token with the right role; nothing answers 500 to bad input."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import Api

# (method, path, roles allowed) — the whole surface; a test below checks nothing is missing.
SURFACE = [
    ("GET", "/profiles", {"operator", "supervisor", "auditor"}),
    ("GET", "/profiles/{profile_id}", {"operator", "supervisor", "auditor"}),
    ("POST", "/layouts/preview", {"operator", "supervisor"}),
    ("GET", "/machines", {"operator", "supervisor"}),
    ("POST", "/machines", {"supervisor"}),
    ("POST", "/machines/{name}/recover", {"supervisor"}),
    ("POST", "/jobs", {"operator", "supervisor"}),
    ("GET", "/jobs", {"operator", "supervisor", "auditor"}),
    ("GET", "/jobs/{job_id}", {"operator", "supervisor", "auditor"}),
    ("GET", "/jobs/{job_id}/events", {"operator", "supervisor", "auditor"}),
    ("POST", "/jobs/{job_id}/abort", {"operator", "supervisor"}),
    ("POST", "/items/{item_key}/resolve", {"supervisor"}),
    ("POST", "/items/{item_key}/override", {"supervisor"}),
    ("POST", "/items/{item_key}/end-exemption", {"supervisor"}),
    ("GET", "/records", {"supervisor", "auditor"}),
    ("GET", "/records/items", {"supervisor", "auditor"}),
    ("GET", "/records/verify", {"auditor"}),
    ("GET", "/records/export", {"auditor"}),
    ("GET", "/records/register", {"auditor"}),
    ("GET", "/records/weapons", {"supervisor", "auditor"}),
    ("GET", "/records/weapons/{weapon_key}", {"supervisor", "auditor"}),
    ("GET", "/records/{seq}", {"supervisor", "auditor"}),
    ("POST", "/records/{seq}/verify-image", {"auditor"}),
]


def _concrete(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", "1", path)


def test_surface_lists_every_operation(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    operations = {(m.upper(), p) for p, item in schema["paths"].items() for m in item}
    assert operations - {("GET", "/health")} == {(m, p) for m, p, _ in SURFACE}


def test_health_needs_no_token(api: Api) -> None:
    assert api.client.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(("method", "path", "allowed"), SURFACE)
def test_missing_and_wrong_tokens_are_refused(api: Api, method: str, path: str, allowed: set[str]) -> None:
    url = _concrete(path)
    assert api.client.request(method, url).status_code == 401
    bad = api.client.request(method, url, headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401
    assert api.client.request(method, url, headers={"Authorization": "Basic abc"}).status_code == 401


@pytest.mark.parametrize(("method", "path", "allowed"), SURFACE)
def test_roles_are_enforced(api: Api, method: str, path: str, allowed: set[str]) -> None:
    for role in ("operator", "supervisor", "auditor"):
        status = api.client.request(method, _concrete(path), headers=api.headers(role)).status_code
        if role in allowed:
            assert status != 403, f"{role} refused {method} {path}"
        else:
            assert status == 403, f"{role} allowed {method} {path} ({status})"


def test_revoked_token_is_refused(api: Api) -> None:
    from markctl.auth import TokenStore

    assert api.client.get("/records", headers=api.headers("auditor")).status_code == 200
    TokenStore(api.store).revoke("auditor-1")
    assert api.client.get("/records", headers=api.headers("auditor")).status_code == 401


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=12,
    )


SAFE_POSTS = [(m, p) for m, p, _ in SURFACE if m == "POST" and p != "/jobs"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    op=st.sampled_from([(m, p, sorted(roles)[-1]) for m, p, roles in SURFACE]),
    segment=st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=20),
    query=st.dictionaries(
        st.sampled_from(["after", "limit", "state", "batch", "format", "fmt", "expect_head"]),
        st.text(max_size=12),
        max_size=3,
    ),  # fmt: skip
    body=st.one_of(_json_values(), st.binary(max_size=40)),
)
def test_no_input_gives_a_500(
    api: Api, op: tuple[str, str, str], segment: str, query: dict[str, str], body: Any
) -> None:
    method, path, role = op  # a role allowed to call it, so the input reaches the handler
    from urllib.parse import quote

    url = re.sub(r"\{[a-z_]+\}", quote(segment, safe=""), path)
    kwargs: dict[str, Any] = {"params": query, "headers": api.headers(role)}
    if method == "POST" and isinstance(body, bytes):
        kwargs["content"] = body  # not JSON at all
        kwargs["headers"] = {**kwargs["headers"], "Content-Type": "application/json"}
    elif method == "POST":
        kwargs["json"] = body
    response = api.client.request(method, url, **kwargs)
    assert response.status_code < 500, (method, url, query, body, response.text[:300])
