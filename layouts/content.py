"""Content checks: required fields present and well formed (COMPLIANCE Part 1 "Content").

Country codes are checked against ISO 3166-1 as maintained by ``pycountry`` (never a hand-typed
list), US State codes against ISO 3166-2:US, years for plausibility, serials and texts for the
profile's character set and length.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from datetime import date
from functools import cache
from typing import Any

import pycountry

from markctl.errors import ComplianceError, LayoutError
from markctl.layouts.findings import Finding
from markctl.layouts.rules import FieldKind, FieldSpec, RuleProfile, Severity, YearOf, charset_summary

__all__ = [
    "KNOWN_FACTS",
    "ContentError",
    "raise_content_errors",
    "fact_value",
    "parse_flag",
    "resolve_year",
    "validate_content",
]

# Facts a request may state, and what is assumed when it does not: most imported weapons already
# carry a unique serial (ITI 8(b) asks for one only "if the weapon has none"), and a serial does not
# contain the year unless the maker says so (Dir 2021/555 art 4(2)).
KNOWN_FACTS: dict[str, bool] = {"has_unique_mark": True, "serial_contains_year": False}

# A 4-digit year before this is a typo, not a firearm mark (the oldest marking laws are 20th century).
_OLDEST_YEAR = 1800


_TRUE = frozenset({"1", "yes", "y", "true", "x"})
_FALSE = frozenset({"0", "no", "n", "false", "-"})


def parse_flag(value: str) -> bool:
    """A yes/no cell of a manifest or flag: yes/no, true/false, y/n, 1/0, x/- (case-insensitive).

    Raises:
        LayoutError: anything else ('maybe' is not silently false); a ValueError too.
    """
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise LayoutError(f"{value!r} is not yes or no", hint="use yes/no, true/false, 1/0")


class ContentError(ComplianceError):
    """Every error of a mark's fields at once, one line each (``problems``: (field, rule, text))."""

    def __init__(self, errors: list[Finding]) -> None:
        self.problems = tuple((f.subject, f.rule, _problem_text(f)) for f in errors)
        first = errors[0]
        lines = [f"{field}: [{rule}] {text}" for field, rule, text in self.problems]
        super().__init__(
            "\n".join([_problem_text(first), *lines[1:]]),
            rule=first.rule,
            field=first.subject if first.subject.startswith("fields.") else "fields",
        )


def _problem_text(f: Finding) -> str:
    return f"{f.message} (measured {f.measured}, required {f.required})"


def raise_content_errors(findings: list[Finding]) -> None:
    """Raise one :class:`ContentError` naming every error finding, if there is any."""
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        raise ContentError(errors)


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
    if bad and spec.kind is not FieldKind.YEAR:  # a year's own check says more ("not a year")
        return Finding(
            cs.rule,
            cs.clause,
            f"fields.{name}",
            f"characters {''.join(bad)!r}",
            f"only {charset_summary(cs.allowed)}" + (" and space" if " " in allowed else ""),
            Severity.ERROR,
            f"{spec.label}: {value!r} has characters outside the profile's character set",
        )
    scripts = _scripts(value)
    if len(scripts) > 1:
        # Latin A, Greek Alpha and Cyrillic A look alike: a serial mixing them could never be
        # typed back from the weapon (EU-ALPHA allows each script, not a mixture).
        return Finding(
            cs.rule,
            cs.clause,
            f"fields.{name}",
            f"letters of {len(scripts)} scripts ({', '.join(sorted(s.title() for s in scripts))})",
            "letters of one script",
            Severity.ERROR,
            f"{spec.label}: {value!r} mixes look-alike letters of different scripts",
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


# Events recorded by a year that happen when the mark is made (US-TIME 15 days, CA-TIME 60 days):
# such a year cannot be in the future and is rarely more than a year old.
_RECENT_EVENTS = frozenset({YearOf.IMPORT, YearOf.TRANSFER, YearOf.MARKING})


def resolve_year(value: str, year_of: YearOf, today: date) -> int:
    """The full year a field's digits stand for, by the event the field records.

    A four-digit year is itself. A two-digit year of manufacture is the latest year with those
    digits not after today ('99' read in 2026 is 1999): a weapon may be decades old. A two-digit
    import, transfer or marking year is this century's (ISACS "99", SOR/2004-275 s.4(1)(b)): those
    events happen when the mark is made, so '99' in 2026 is 2099 and is refused as in the future.
    """
    if len(value) == 4:
        return int(value)
    two = int(value)
    century = today.year - today.year % 100
    if year_of is YearOf.MANUFACTURE:
        return century + two if two <= today.year % 100 else century - 100 + two
    return century + two


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
    year_of = spec.year_of or YearOf.MANUFACTURE
    year = resolve_year(value, year_of, today)
    if year > today.year:
        return _finding(
            spec,
            name,
            f"{value} (year of {year_of.value} {year})",
            f"<= {today.year}",
            Severity.ERROR,
            f"{spec.label} {year} is in the future",
        )
    if year < _OLDEST_YEAR:
        return _finding(
            spec, name, value, f">= {_OLDEST_YEAR}", Severity.ERROR, f"{spec.label} is implausible"
        )
    if year_of in _RECENT_EVENTS and year < today.year - 1:
        # The event happens when the mark is made: a year before last is most likely a typing
        # error. A warning, not an error: late marking of an old shipment is possible.
        return _finding(
            spec,
            name,
            f"{value} (year of {year_of.value} {year})",
            f">= {today.year - 1}",
            Severity.WARNING,
            f"{spec.label} {year} is more than a year ago: check it",
        )
    return None


def _scripts(value: str) -> set[str]:
    """The scripts (LATIN, GREEK, CYRILLIC...) of the letters of a value."""
    return {unicodedata.name(ch, "?").split()[0] for ch in value if ch.isalpha()}


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
        measured, required = repr(value), spec.kind.value
        if spec.year_of is not None:  # show how the digits were read
            measured = f"{value!r} = {resolve_year(value, spec.year_of, today)}"
            required = f"year of {spec.year_of.value}, not after {today.year}"
        findings.append(_finding(spec, name, measured, required, Severity.PASS, f"{spec.label} ok"))
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
