"""Content checks: required fields present and well formed (COMPLIANCE Part 1 "Content").

Country codes are checked against ISO 3166-1 as maintained by ``pycountry`` (never a hand-typed
list), US State codes against ISO 3166-2:US, years for plausibility, serials and texts for the
profile's character set and length.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from functools import cache
from typing import Any

import pycountry

from markctl.errors import LayoutError
from markctl.layouts.findings import Finding
from markctl.layouts.rules import FieldKind, FieldSpec, MarkKind, RuleProfile, Severity

__all__ = ["KNOWN_FACTS", "fact_value", "validate_content"]

# Facts a request may state, and what is assumed when it does not: most imported weapons already
# carry a unique serial (ITI 8(b) asks for one only "if the weapon has none"), and a serial does not
# contain the year unless the maker says so (Dir 2021/555 art 4(2)).
KNOWN_FACTS: dict[str, bool] = {"has_unique_mark": True, "serial_contains_year": False}

# A 4-digit year before this is a typo, not a firearm mark (the oldest marking laws are 20th century).
_OLDEST_YEAR = 1800


def fact_value(facts: Mapping[str, bool], name: str) -> bool:
    """A fact of the request, or its documented default."""
    return facts.get(name, KNOWN_FACTS.get(name, False))


@cache
def _alpha2(code: str) -> str | None:
    country = pycountry.countries.get(alpha_2=code)
    return None if country is None else str(country.name)


@cache
def _country_by_name(name: str) -> str | None:
    if len(name) <= 3:  # alpha-2/alpha-3 codes are not names (US-ADD asks for the name)
        return None
    try:
        country = pycountry.countries.lookup(name)
    except LookupError:
        return None
    return str(country.name)


@cache
def _us_state(code: str) -> bool:
    subdivisions: Any = pycountry.subdivisions  # its get() is untyped
    return subdivisions.get(code=f"US-{code}") is not None


def _finding(
    spec: FieldSpec, name: str, measured: str, required: str, severity: Severity, message: str
) -> Finding:
    return Finding(spec.rule, spec.clause, f"fields.{name}", measured, required, severity, message)


def _check_value(rules: RuleProfile, name: str, spec: FieldSpec, value: str, today: date) -> Finding | None:
    """The first problem with a present value, or None."""
    cs = rules.charset
    allowed = set(cs.allowed) | ({" "} if spec.kind in (FieldKind.TEXT, FieldKind.COUNTRY_NAME) else set())
    bad = sorted({ch for ch in value if ch not in allowed})
    if bad:
        return Finding(
            cs.rule,
            cs.clause,
            f"fields.{name}",
            f"characters {''.join(bad)!r}",
            f"only {cs.allowed!r}" + (" and space" if " " in allowed else ""),
            Severity.ERROR,
            f"{spec.label}: {value!r} has characters outside the profile's character set",
        )
    if len(value) > spec.max_length:
        return _finding(
            spec,
            name,
            f"{len(value)} characters",
            f"<= {spec.max_length}",
            Severity.ERROR,
            f"{spec.label} is too long",
        )
    digits = sum(ch.isdigit() for ch in value)
    if digits < spec.min_digits:
        return Finding(
            cs.rule,
            cs.clause,
            f"fields.{name}",
            f"{digits} numerals",
            f">= {spec.min_digits} numeral(s)",
            Severity.ERROR,
            f"{spec.label} needs at least {spec.min_digits} numeral(s)",
        )
    if spec.kind is FieldKind.COUNTRY and _alpha2(value) is None:
        return _finding(
            spec,
            name,
            repr(value),
            "ISO 3166-1 alpha-2 code",
            Severity.ERROR,
            f"{spec.label}: {value!r} is not an ISO 3166-1 alpha-2 country code",
        )
    if spec.kind is FieldKind.COUNTRY_NAME and _country_by_name(value) is None:
        return _finding(
            spec,
            name,
            repr(value),
            "an ISO 3166-1 country name",
            Severity.ERROR,
            f"{spec.label}: {value!r} is not the name of an ISO 3166-1 country",
        )
    if spec.kind is FieldKind.US_STATE and not _us_state(value):
        return _finding(
            spec,
            name,
            repr(value),
            "ISO 3166-2:US code",
            Severity.ERROR,
            f"{spec.label}: {value!r} is not a US State code",
        )
    if spec.kind is FieldKind.LITERAL and value not in spec.values:
        return _finding(
            spec,
            name,
            repr(value),
            " or ".join(repr(v) for v in spec.values),
            Severity.ERROR,
            f"{spec.label}: {value!r} is not allowed",
        )
    if spec.kind is FieldKind.YEAR:
        return _check_year(rules, name, spec, value, today)
    return None


_RECENT_EVENT_KINDS = frozenset({MarkKind.IMPORT, MarkKind.TRANSFER, MarkKind.FOUND})


def _check_year(rules: RuleProfile, name: str, spec: FieldSpec, value: str, today: date) -> Finding | None:
    shapes = " or ".join(f"{d} digits" for d in spec.digits)
    if not re.fullmatch(r"[0-9]+", value) or len(value) not in spec.digits:
        return _finding(
            spec,
            name,
            repr(value),
            shapes,
            Severity.ERROR,
            f"{spec.label}: {value!r} is not a year ({shapes})",
        )
    if len(value) == 4:
        year = int(value)
        if year > today.year:
            return _finding(
                spec, name, value, f"<= {today.year}", Severity.ERROR, f"{spec.label} is in the future"
            )
        if year < _OLDEST_YEAR:
            return _finding(
                spec, name, value, f">= {_OLDEST_YEAR}", Severity.ERROR, f"{spec.label} is implausible"
            )
    elif rules.mark_kind is not MarkKind.MANUFACTURE and int(value) > today.year % 100:
        # Import, stockpile, transfer and found marks record an event of the last weeks (US-TIME,
        # CA-TIME), so a two-digit year above this year's is in the future. A two-digit
        # manufacture year may be last century and cannot be judged.
        return _finding(
            spec, name, value, f"<= {today.year % 100:02d}", Severity.ERROR, f"{spec.label} is in the future"
        )
    if rules.mark_kind in _RECENT_EVENT_KINDS:
        # An import, transfer or found mark records an event of the last weeks (US-TIME 15 days,
        # CA-TIME 60 days): a year before last is most likely a typing error. A warning, not an
        # error: late marking of an old shipment is possible and the operator decides.
        full = int(value) if len(value) == 4 else today.year - (today.year % 100 - int(value))
        if full < today.year - 1:
            return _finding(
                spec,
                name,
                value,
                f">= {today.year - 1}",
                Severity.WARNING,
                f"{spec.label} {value} is more than a year ago: check it",
            )
    return None


def validate_content(
    rules: RuleProfile, fields: Mapping[str, str], facts: Mapping[str, bool], today: date
) -> tuple[dict[str, str], list[Finding]]:
    """Check the field values against the profile.

    Returns:
        The values (stripped, missing optional ones left out) and one finding per field and per
        any-of rule (``PASS`` when met).

    Raises:
        LayoutError: a field or fact the profile does not know (``field="fields.<name>"``).
    """
    for name in fields:
        if name not in rules.fields:
            raise LayoutError(
                f"unknown field for rule profile {rules.id!r}",
                field=f"fields.{name}",
                hint="known: " + ", ".join(rules.fields),
            )
    known_facts = set(KNOWN_FACTS) | {s.required_unless for s in rules.fields.values() if s.required_unless}
    for fact in facts:
        if fact not in known_facts:
            raise LayoutError(
                "unknown fact", field=f"facts.{fact}", hint="known: " + ", ".join(sorted(known_facts))
            )
    values: dict[str, str] = {}
    findings: list[Finding] = []
    for name, spec in rules.fields.items():
        value = fields.get(name, "").strip()
        if not value:
            needed = spec.required or (
                spec.required_unless is not None and not fact_value(facts, spec.required_unless)
            )
            if needed:
                why = f" (unless {spec.required_unless})" if spec.required_unless else ""
                findings.append(
                    _finding(
                        spec, name, "missing", "present", Severity.ERROR, f"{spec.label} is required{why}"
                    )
                )
            elif spec.recommended:
                findings.append(
                    _finding(
                        spec,
                        name,
                        "missing",
                        "present where feasible",
                        Severity.WARNING,
                        f"{spec.label} is recommended",
                    )
                )
            continue
        problem = _check_value(rules, name, spec, value, today)
        if problem is not None:
            findings.append(problem)
            continue
        values[name] = value
        findings.append(_finding(spec, name, repr(value), spec.kind.value, Severity.PASS, f"{spec.label} ok"))
    for rule in rules.any_of:
        options: list[str] = []
        met = False
        for i, group in enumerate(rule.groups):
            patterns = rule.patterns[i] if rule.patterns else {}
            ok = all(values.get(n) for n in group) and all(
                re.fullmatch(rx, values.get(n, "")) for n, rx in patterns.items()
            )
            met = met or ok
            options.append(" + ".join(f"{n}~/{patterns[n]}/" if n in patterns else n for n in group))
        findings.append(
            Finding(
                rule.rule,
                rule.clause,
                "fields",
                "met" if met else "no group complete",
                " or ".join(f"({o})" for o in options),
                Severity.PASS if met else Severity.ERROR,
                "identity fields complete" if met else "give one complete group of identity fields",
            )
        )
    return values, findings
