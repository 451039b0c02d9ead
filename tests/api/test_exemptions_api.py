"""Exempt rows over HTTP: a supervisor's token records them (its name is the supervisor's), an
operator's token cannot, and nothing is recorded for the exempt weapon then."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from markctl.records import item_key_of
from tests.api.conftest import Api
from tests.api.test_jobs_e2e import _events

SOON = (date.today() + timedelta(days=30)).isoformat()
MANIFEST = (
    "serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark,"
    "exemption,exemption_purpose,exemption_re_export_by,exemption_reference\n"
    "A1,Beretta,92FS,iti-import,frame,KE,26,yes,,,,\n"
    f"X1,Beretta,92FS,iti-import,frame,KE,26,yes,temporary-import,repair by the maker's agent,{SOON},R-9\n"
)
EXEMPT = item_key_of("BERETTA|X1", "frame", "iti-import")


def _run(api: Api, repo: Path, role: str) -> dict[str, object]:
    body = {"manifest_csv": MANIFEST, "catalogue_toml": (repo / "examples/import/parts.toml").read_text(),
            "machine": "laser"}  # fmt: skip
    response = api.client.post("/jobs", json=body, headers=api.headers(role))
    assert response.status_code == 202, response.text
    job_id = str(response.json()["id"])
    _events(api, job_id)
    job: dict[str, object] = api.client.get(f"/jobs/{job_id}", headers=api.headers(role)).json()
    return job


@pytest.mark.slow
def test_a_supervisor_token_records_the_exemption(api: Api, repo: Path) -> None:
    job = _run(api, repo, "supervisor")
    assert job["state"] == "done" and job["counts"] == {"marked": 1, "exempt": 1}
    history = api.store.history(EXEMPT)
    assert [r.event for r in history] == ["planned", "exempted"]
    assert (
        history[-1].data["exemption"]["recorded_by"] == "supervisor-1" and history[-1].actor == "supervisor-1"
    )


def test_an_operator_token_cannot_record_an_exemption(api: Api, repo: Path) -> None:
    job = _run(api, repo, "operator")
    assert (
        job["state"] == "failed" and "--override-by" in str(job["error"]) and "line(s) 3" in str(job["error"])
    )
    assert (
        api.store.history(EXEMPT) == []
        and api.store.history(item_key_of("BERETTA|A1", "frame", "iti-import")) == []
    )


@pytest.mark.slow
def test_a_supervisor_ends_an_exemption_over_http_and_the_item_is_planned_again(api: Api, repo: Path) -> None:
    _run(api, repo, "supervisor")
    path = f"/items/{EXEMPT}/end-exemption"
    refused = api.client.post(path, json={"reason": "the weapon stays"}, headers=api.headers("operator"))
    assert refused.status_code == 403 and [r.event for r in api.store.history(EXEMPT)][-1] == "exempted"
    ended = api.client.post(path, json={"reason": "the weapon stays"}, headers=api.headers("supervisor"))
    assert ended.status_code == 200, ended.text
    last = api.store.history(EXEMPT)[-1]
    assert (last.event, last.actor, last.data["reason"]) == (
        "exemption-ended", "supervisor:supervisor-1", "the weapon stays",
    )  # fmt: skip
    assert api.store.item(EXEMPT).state.value == "planned"  # type: ignore[union-attr]
    again = api.client.post(path, json={"reason": "the weapon stays"}, headers=api.headers("supervisor"))
    assert again.status_code == 409, again.text  # no longer exempt: nothing to end
