"""Findings and the report of a check: each names its rule id and clause, measured vs required."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from markctl.layouts.rules import Severity

__all__ = ["Finding", "Report", "Severity"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One check result.

    Attributes:
        rule: rule id of COMPLIANCE.md Part 2 (``ITI-8b``, ``US-SIZE``) or an engineering id (``ENG-WALL``).
        clause: the clause the rule enforces, as cited by the rule profile.
        subject: what was checked: a field (``fields.serial``), a line (``line 2``), ``code``, ``placement``.
        measured: the measured value, with its unit.
        required: the required value, with its unit.
        severity: error, warning, info, or pass.
        message: one sentence for the operator.
        where: (minx, miny, maxx, maxy) in mm of the geometry concerned, for previews; or ``None``.
        kind: what kind of text the rule comes from (law, implementing-regulation, instrument,
            standard, guidance, practice); filled from the profile's sources by ``check``.
        source: the source document with its article.
        text: a short quotation or paraphrase of the source.
    """

    rule: str
    clause: str
    subject: str
    measured: str
    required: str
    severity: Severity
    message: str = ""
    where: tuple[float, float, float, float] | None = None
    kind: str = ""
    source: str = ""
    text: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "rule": self.rule,
            "clause": self.clause,
            "subject": self.subject,
            "measured": self.measured,
            "required": self.required,
            "severity": self.severity.value,
            "message": self.message,
            "where": list(self.where) if self.where else None,
            "kind": self.kind,
            "source": self.source,
            "text": self.text,
        }


@dataclass(frozen=True, slots=True)
class Report:
    """Every finding of one check; ``passed`` is False when any finding is an error."""

    findings: tuple[Finding, ...]
    exempt: bool = False  # the mark is waived (ITI 8(b) temporary import): record, do not mark

    @property
    def errors(self) -> tuple[Finding, ...]:
        """Error-level findings."""
        return tuple(f for f in self.findings if f.severity is Severity.ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """Warning-level findings."""
        return tuple(f for f in self.findings if f.severity is Severity.WARNING)

    @property
    def passed(self) -> bool:
        """True when no finding is an error."""
        return not self.errors

    @property
    def failed_rules(self) -> frozenset[str]:
        """Rule ids with at least one error finding."""
        return frozenset(f.rule for f in self.errors)

    def __iter__(self) -> Iterator[Finding]:
        """Iterate over the findings (so a Report can go wherever findings are expected)."""
        return iter(self.findings)

    def __len__(self) -> int:
        """Number of findings."""
        return len(self.findings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "passed": self.passed,
            "exempt": self.exempt,
            "findings": [f.to_dict() for f in self.findings],
        }
