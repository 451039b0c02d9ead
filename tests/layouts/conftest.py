"""Compliant example requests for every bundled rule profile, and helpers to judge a request."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

from markctl.errors import ComplianceError
from markctl.layouts import Layout, MarkRequest, RuleBook, bundled_rules, check, compose
from markctl.layouts.checks import exemption_report

TODAY = date(2026, 11, 27)

_ZONE = [[0, 0], [60, 0], [60, 20], [0, 20]]

# One compliant mark per profile, on a steel frame/receiver, laser unless said otherwise.
EXAMPLES: dict[str, dict[str, Any]] = {
    "iti-import": {"import_country": "UG", "import_year": "26"},
    "iti-manufacture": {
        "country": "BE",
        "manufacturer": "FNH",
        "serial": "A123456",
        "year": "26",
        "model": "P90",
    },
    "iti-stockpile": {"owner_country": "UG", "agency": "UPF", "serial": "0012345", "year": "26"},
    "iti-transfer": {"transferring_country": "KE", "entity": "KPS"},
    "iti-found": {"country": "SL", "found_number": "F000123", "year": "2026"},
    "us-import": {
        "importer": "ACME ARMS",
        "city": "MIAMI",
        "state": "FL",
        "serial": "XK123456",
        "model": "M70",
        "calibre": "7.62X39",
        "country_of_manufacture": "SERBIA",
    },
    "eu-manufacture": {
        "maker": "NORDWAFFEN",
        "country": "AT",
        "serial": "NW26A0042",
        "year": "2026",
        "model": "P9",
    },
    "eu-import": {"maker": "ZASTAVA", "country": "RS", "serial": "Z123456", "year": "2025", "model": "M70"},
    "ca-import": {"country": "CA", "import_year": "26"},
}


def request_dict(profile: str, /, **overrides: Any) -> dict[str, Any]:
    """The compliant example as a dict (deep-copied), with top-level overrides."""
    data: dict[str, Any] = {
        "profile": profile,
        "machine": "grbl-1.1",
        "fields": dict(EXAMPLES[profile]),
        "component": {
            "name": "receiver",
            "material": "steel",
            "wall_thickness_mm": 3.0,
            "zone": copy.deepcopy(_ZONE),
            "existing_marks": [[[0, 16], [25, 16], [25, 20], [0, 20]]],
        },
        "options": {"today": TODAY.isoformat()},
    }
    data.update(copy.deepcopy(overrides))
    return data


def request(profile: str, /, **overrides: Any) -> MarkRequest:
    """The compliant example as a MarkRequest."""
    return MarkRequest.parse(request_dict(profile, **overrides))


def failing(req: MarkRequest | Layout, book: RuleBook | None = None) -> tuple[set[str], set[str]]:
    """(rule ids with errors, rule ids with warnings) of a request or an already composed layout."""
    if isinstance(req, MarkRequest) and req.exemption is not None:
        report = exemption_report(req, book)
        return set(report.failed_rules), {f.rule for f in report.warnings}
    if isinstance(req, MarkRequest):
        try:
            layout = compose(req, book or bundled_rules())
        except ComplianceError as exc:
            return {exc.rule}, set()
    else:
        layout = req
    report = check(layout)
    return set(report.failed_rules), {f.rule for f in report.warnings}
