"""Rule profiles as data: which content a mark carries and which physical limits it must meet.

Every bundled profile of COMPLIANCE.md Part 1 is a TOML file under ``layouts/data/rules/``; each
requirement names the rule id of COMPLIANCE.md Part 2 §9 and the clause it enforces, so every
finding can cite it. A profile may ``extends = "<id>"`` and write only what differs (tables merge
key by key, arrays are replaced whole, as for firmware profiles). A national authority adds or
overrides profiles with its own TOML texts (:meth:`RuleBook.with_texts`) without touching code;
reading those files is the caller's job, because ``layouts`` does no I/O of its own.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from datetime import date
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from markctl.errors import LayoutError, ProfileError
from markctl.profiles import deep_merge

__all__ = [
    "AnyOfRule",
    "CharsetRule",
    "CodeRule",
    "ComponentName",
    "ExemptionRule",
    "FieldKind",
    "FieldSpec",
    "HeightRule",
    "InForceRule",
    "MarkKind",
    "MeasuringPoint",
    "MultiPieceRule",
    "RuleBook",
    "RuleKind",
    "RuleProfile",
    "RuleSource",
    "Severity",
    "SmallComponentRule",
    "ThresholdRule",
    "YearOf",
    "bundled_rules",
]

SCHEMA_VERSION = 1
_PROFILE_ID = r"^[a-z0-9][a-z0-9.-]{0,63}$"
_FIELD_NAME = r"^[a-z][a-z0-9_]{0,31}$"
_TEMPLATE_FIELD = re.compile(r"\{([a-z][a-z0-9_]*)\}")


class Severity(StrEnum):
    """How bad a finding is. ``PASS`` findings record a check that was met (measured vs required)."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    PASS = "pass"  # noqa: S105 (a severity, not a password)


class MarkKind(StrEnum):
    """When the mark is applied (ISACS-T)."""

    MANUFACTURE = "manufacture"
    IMPORT = "import"
    STOCKPILE = "stockpile"
    TRANSFER = "transfer"
    FOUND = "found"


class ComponentName(StrEnum):
    """The component that carries the mark. ``embedded-plate`` sits in a (polymer) frame."""

    FRAME = "frame"
    RECEIVER = "receiver"
    SLIDE = "slide"
    BARREL = "barrel"
    CYLINDER = "cylinder"
    BOLT = "bolt"
    UPPER_RECEIVER = "upper-receiver"
    LOWER_RECEIVER = "lower-receiver"
    BREECH_BLOCK = "breech-block"
    EMBEDDED_PLATE = "embedded-plate"
    MAGAZINE = "magazine"  # not an essential component (EU-ESS); here so a misplaced mark can be named


class FieldKind(StrEnum):
    """How a field's value is validated."""

    COUNTRY = "country"  # ISO 3166-1 alpha-2 (pycountry)
    COUNTRY_NAME = "country-name"  # a country's name, resolved through ISO 3166-1
    US_STATE = "us-state"  # ISO 3166-2:US subdivision code without the "US-" prefix
    YEAR = "year"
    SERIAL = "serial"
    TEXT = "text"
    LITERAL = "literal"


class RuleKind(StrEnum):
    """What kind of text a rule comes from, so nobody mistakes our practice for the law."""

    LAW = "law"  # a statute, treaty or binding regulation (27 CFR, SOR, Firearms Protocol, a Directive)
    IMPLEMENTING = "implementing-regulation"  # an implementing act (EU 2019/68, 2024/325)
    INSTRUMENT = "instrument"  # politically binding, not a treaty (UN ITI)
    STANDARD = "standard"  # ISACS, MIL-STD-130
    GUIDANCE = "guidance"  # an authority's guide (ATF P 5320.8)
    PRACTICE = "practice"  # markctl's own engineering or observed practice: overridable, never "the law"


class MeasuringPoint(StrEnum):
    """Where a character height is measured (each height rule names the one its clause uses)."""

    IMPRESSION_BOTTOM = "impression-bottom"  # between the ends of the character bottoms (27 CFR 478.92)
    SURFACE = "surface"  # the opening of the impression at the surface: what the eye reads
    NOMINAL = "nominal"  # the font size the text is set in (cap height), as EU 2019/68 words it

    @property
    def words(self) -> str:
        """How findings and messages say it."""
        return {
            "impression-bottom": "at the impression bottom",
            "surface": "at the surface opening",
            "nominal": "nominal font size",
        }[self.value]


class YearOf(StrEnum):
    """The event a year field records; a two-digit year resolves by it."""

    MANUFACTURE = "manufacture"  # may be decades ago: '99' is 1999
    IMPORT = "import"  # an event of the last weeks: '99' would be 2099, in the future
    TRANSFER = "transfer"
    MARKING = "marking"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSource(_Frozen):
    """Where a rule id comes from: shown by ``markctl profiles rules`` and attached to every finding."""

    kind: RuleKind
    document: str = Field(
        min_length=1, description="Source document with its article, e.g. '27 CFR 478.92(a)(1)'."
    )
    text: str = Field(min_length=1, description="A short quotation (in quotes) or a paraphrase.")


class _Cited(_Frozen):
    rule: str = Field(min_length=1)
    clause: str = Field(min_length=1)


class FieldSpec(_Cited):
    """One content field of a profile."""

    label: str
    kind: FieldKind
    required: bool = False
    required_unless: str | None = Field(
        default=None, description="Required unless this fact of the request is true."
    )
    recommended: bool = Field(default=False, description="Missing -> warning (e.g. 'model where feasible').")
    max_length: int = Field(default=24, ge=1, le=64)
    min_digits: int = Field(default=0, ge=0)
    digits: tuple[int, ...] = (2,)
    values: tuple[str, ...] = ()
    year_of: YearOf | None = Field(default=None, description="Year fields: the event the year records.")
    example: str = Field(default="", description="A valid value, shown by `markctl profiles rules`.")

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.kind is FieldKind.YEAR and not set(self.digits) <= {2, 4}:
            raise ValueError("digits of a year are 2 and/or 4")
        if (self.kind is FieldKind.YEAR) != (self.year_of is not None):
            raise ValueError(
                "a year field states year_of (manufacture, import, transfer, marking); no other field does"
            )
        if self.kind is FieldKind.LITERAL and not self.values:
            raise ValueError("a literal field lists its allowed values")
        if self.required and self.required_unless:
            raise ValueError("give required or required_unless, not both")
        return self


class CharsetRule(_Cited):
    """Characters a mark may contain (space separates words and is always allowed)."""

    allowed: str = Field(min_length=1)


class ThresholdRule(_Cited):
    """A minimum (character height or depth) in mm; ``fields`` limits it to lines with those fields."""

    min_mm: float = Field(gt=0, le=50)
    fields: tuple[str, ...] = ()


class HeightRule(ThresholdRule):
    """A minimum character height, measured where its clause says (``measured_at``, ``measuring_clause``).

    ``waived_for_small``: the rule does not bind a component marked as too small for it (EU 2019/68).
    """

    # A user profile that does not say gets the strictest point, and the finding says it was not stated.
    measured_at: MeasuringPoint = MeasuringPoint.IMPRESSION_BOTTOM
    measuring_clause: str = Field(
        default="not stated by the profile: markctl measures at the impression bottom, the strictest point",
        min_length=1,
        description="The words that say where to measure, or why this reading where the text is silent.",
    )
    waived_for_small: bool = False


class ExemptionRule(_Cited):
    """A mark the profile lets a supervisor waive for a recorded reason (ITI 8(b): temporary imports)."""

    kind: Literal["temporary-import"]
    max_days: int = Field(default=365 * 3, ge=1, le=3650, description="Longest stay before re-export.")


class SmallComponentRule(_Cited):
    """A component too small for the full mark carries at least one of ``fields`` (EU 2019/68)."""

    fields: tuple[str, ...] = Field(min_length=1)


class MultiPieceRule(_Cited):
    """Multi-piece frames/receivers: only the housing subpart carries the mark (27 CFR 478.92/479.102)."""


class InForceRule(_Cited):
    """The date from which the profile's regulation applies; a mark dated before it is warned about."""

    since: date
    assumption: str = Field(min_length=1, description="Why this date is assumed (deferrals are common).")


class PlacementRule(_Cited):
    """Which components may carry this mark."""

    components: tuple[ComponentName, ...]


class AdjacentRule(_Cited):
    """Import-style marks: close to the existing marks, yet visibly separate from them."""

    min_gap_mm: float = Field(gt=0)
    max_gap_mm: float = Field(gt=0)
    severity: Literal["error", "warning"] = "error"

    @model_validator(mode="after")
    def _order(self) -> AdjacentRule:
        if self.min_gap_mm >= self.max_gap_mm:
            raise ValueError("min_gap_mm must be below max_gap_mm")
        return self


class PlateRule(_Cited):
    """Non-metal frames are marked on an embedded metal plate that leaves room for future marks."""

    components: tuple[ComponentName, ...] = (ComponentName.FRAME, ComponentName.RECEIVER)
    room_rule: str
    room_clause: str
    room_lines: int = Field(default=1, ge=0, le=10)
    room_chars: int = Field(default=6, ge=1, le=40)


class IntegrityRule(_Cited):
    """Depth never exceeds this fraction of the wall thickness at the mark."""

    max_depth_fraction: float = Field(gt=0, le=1)


class CodeRule(_Cited):
    """Data Matrix limits and how its content is built from the fields."""

    hri_rule: str
    hri_clause: str
    content: str = ""
    module_min_mm: float = Field(gt=0)
    module_max_mm: float = Field(gt=0)
    quiet_zone_min_modules: int = Field(ge=0)
    symbol_max_mm: float = Field(gt=0)
    content_max_chars: int = Field(ge=1)


class AnyOfRule(_Cited):
    """At least one group of fields is complete (and matches its patterns)."""

    groups: tuple[tuple[str, ...], ...] = Field(min_length=1)
    patterns: tuple[dict[str, str], ...] = ()

    @model_validator(mode="after")
    def _patterns(self) -> AnyOfRule:
        if self.patterns and len(self.patterns) != len(self.groups):
            raise ValueError("patterns, when given, has one table per group")
        for table in self.patterns:
            for regex in table.values():
                re.compile(regex)
        return self


class RuleProfile(_Frozen):
    """One rule profile (see the module docstring and ``layouts/data/rules/*.toml``)."""

    schema_version: Literal[1]
    id: str = Field(pattern=_PROFILE_ID)
    extends: str | None = None
    abstract: bool = False
    name: str = Field(min_length=1)
    mark_kind: MarkKind
    lines: tuple[str, ...]
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    any_of: tuple[AnyOfRule, ...] = ()
    charset: CharsetRule
    height: tuple[HeightRule, ...]
    depth: tuple[ThresholdRule, ...]
    placement: PlacementRule
    zone: _Cited
    overlap: _Cited
    keepout: _Cited
    integrity: IntegrityRule
    glyph: _Cited
    code: CodeRule
    depth_process: _Cited
    adjacent: AdjacentRule | None = None
    plate: PlateRule | None = None
    exemption: ExemptionRule | None = None
    small_component: SmallComponentRule | None = None
    multi_piece: MultiPieceRule | None = None
    in_force: InForceRule | None = None
    sources: dict[str, RuleSource] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> RuleProfile:
        for name in self.fields:
            if not re.match(_FIELD_NAME, name):
                raise ValueError(f"field name {name!r} must match {_FIELD_NAME}")
        used: set[str] = set()
        for template in (*self.lines, self.code.content):
            for name in _TEMPLATE_FIELD.findall(template):
                if name not in self.fields:
                    raise ValueError(f"template {template!r} uses unknown field {name!r}")
                used.add(name)
        if not self.abstract:
            if not self.lines:
                raise ValueError("a profile needs at least one line template")
            unused = set(self.fields) - {n for t in self.lines for n in _TEMPLATE_FIELD.findall(t)}
            if unused:
                raise ValueError(f"fields {sorted(unused)} appear in no line: a code never replaces text")
            # Nor may the code carry words of its own: only fields, joined by separators.
            literal = _TEMPLATE_FIELD.sub("", self.code.content)
            if re.search(r"[^\s\-/.:;|_+#]", literal):
                raise ValueError(
                    f"code content {self.code.content!r} holds text no line shows ({literal.strip()!r}):"
                    " a code only repeats fields, joined by separators"
                )
        for rule in self.any_of:
            for group in rule.groups:
                for name in group:
                    if name not in self.fields:
                        raise ValueError(f"any_of names unknown field {name!r}")
        for threshold in self.height:
            for name in threshold.fields:
                if name not in self.fields:
                    raise ValueError(f"height rule {threshold.rule} names unknown field {name!r}")
        if self.code.module_min_mm > self.code.module_max_mm:
            raise ValueError("code.module_min_mm exceeds code.module_max_mm")
        if self.small_component:
            for name in self.small_component.fields:
                if name not in self.fields:
                    raise ValueError(f"small_component names unknown field {name!r}")
        return self

    def source(self, rule_id: str) -> RuleSource | None:
        """Where a rule id of this profile comes from."""
        return self.sources.get(rule_id)

    def components(self) -> tuple[ComponentName, ...]:
        """The components this profile marks (an embedded plate counts as its frame, EU-POLY, LV-182)."""
        plate = (ComponentName.EMBEDDED_PLATE,) if ComponentName.FRAME in self.placement.components else ()
        return (*self.placement.components, *plate)

    @property
    def min_height_mm(self) -> float:
        """The largest height minimum over all lines (what a default height must reach)."""
        return max((t.min_mm for t in self.height), default=0.0)

    @property
    def min_depth_mm(self) -> float:
        """The largest depth minimum."""
        return max((t.min_mm for t in self.depth), default=0.0)

    def height_summary(self) -> str:
        """'1.58 mm at the surface opening', one clause per height rule, for messages."""
        return "; ".join(f"{h.min_mm:g} mm {h.measured_at.words} ({h.rule})" for h in self.height) or "none"

    def for_component(self, *, too_small: bool) -> RuleProfile:
        """The rules that bind one component: a too-small one (EU 2019/68) carries only the small-mark fields.

        Its lines are those with a small-mark field (other fields given are checked, not marked);
        height rules marked ``waived_for_small`` no longer apply; every other rule still does.
        """
        if not too_small or self.small_component is None:
            return self
        small = self.small_component
        keep = set(small.fields)
        relaxed = {"required": False, "required_unless": None, "recommended": False}
        kept = {"required": True, "required_unless": None, "rule": small.rule, "clause": small.clause}
        fields = {
            name: spec.model_copy(update=kept if name in keep else relaxed)
            for name, spec in self.fields.items()
        }
        height = tuple(h for h in self.height if not h.waived_for_small)
        # The reduced mark carries the small-component fields only, one line each field's template.
        lines = tuple(t for t in self.lines if set(self.line_fields(t)) & keep)
        return self.model_copy(update={"fields": fields, "height": height, "any_of": (), "lines": lines})

    def describe(self, facts: Iterable[str] = ()) -> dict[str, Any]:
        """What a user needs to fill in this profile, JSON-ready (``markctl profiles rules ID``).

        ``facts``: the yes/no facts every profile understands (the manifest's fact columns).
        """
        fields = []
        for name, spec in self.fields.items():
            if spec.required:
                need = "required"
            elif spec.required_unless:
                need = f"required unless {spec.required_unless}"
            else:
                need = "recommended" if spec.recommended else "optional"
            fields.append(
                {
                    "name": name,
                    "label": spec.label,
                    "need": need,
                    "kind": spec.kind.value,
                    "characters": self._characters(spec),
                    "example": spec.example,
                    "year_of": spec.year_of.value if spec.year_of else None,
                    "rule": spec.rule,
                    "clause": spec.clause,
                }
            )
        rules = []
        for rule_id in self.rule_ids:
            src = self.source(rule_id)
            rules.append(
                {
                    "rule": rule_id,
                    "kind": src.kind.value if src else "unstated",
                    "document": src.document if src else "not stated by this profile",
                    "text": src.text if src else "",
                }
            )
        limits = [
            {
                "rule": h.rule,
                "what": "character height" + (f" of lines with {', '.join(h.fields)}" if h.fields else ""),
                "min_mm": h.min_mm,
                "measured_at": h.measured_at.value,
                "measuring_clause": h.measuring_clause,
                "waived_for_small": h.waived_for_small,
            }
            for h in self.height
        ]
        limits += [
            {"rule": d.rule, "what": "depth", "min_mm": d.min_mm, "measured_at": "from the surface"}
            for d in self.depth
        ]
        used_facts = sorted({*facts, *(s.required_unless for s in self.fields.values() if s.required_unless)})
        return {
            "id": self.id,
            "name": self.name,
            "mark_kind": self.mark_kind.value,
            "components": [c.value for c in self.components()],
            "lines": list(self.lines),
            "fields": fields,
            "facts": used_facts,
            "limits": limits,
            "small_component_fields": list(self.small_component.fields) if self.small_component else None,
            "exemption": self.exemption.kind if self.exemption else None,
            "in_force": (
                {"since": self.in_force.since.isoformat(), "assumption": self.in_force.assumption}
                if self.in_force
                else None
            ),
            "rules": rules,
        }

    def _characters(self, spec: FieldSpec) -> str:
        if spec.kind is FieldKind.COUNTRY:
            return "ISO 3166-1 alpha-2 code"
        if spec.kind is FieldKind.COUNTRY_NAME:
            return "ISO 3166-1 country name"
        if spec.kind is FieldKind.US_STATE:
            return "USPS State code"
        if spec.kind is FieldKind.LITERAL:
            return " or ".join(spec.values)
        if spec.kind is FieldKind.YEAR:
            return " or ".join(f"{d} digits" for d in spec.digits)
        return (
            f"{charset_summary(self.charset.allowed)}{', space' if spec.kind is FieldKind.TEXT else ''}; up to {spec.max_length}"
            + (f", at least {spec.min_digits} numeral(s)" if spec.min_digits else "")
        )

    def line_fields(self, template: str) -> tuple[str, ...]:
        """Field names used by one line template, in order."""
        return tuple(_TEMPLATE_FIELD.findall(template))

    @property
    def rule_ids(self) -> tuple[str, ...]:
        """Every rule id this profile can report, sorted (for listings and tests)."""
        ids = {self.charset.rule, self.placement.rule, self.zone.rule, self.overlap.rule}
        ids |= {self.keepout.rule, self.integrity.rule, self.glyph.rule, self.depth_process.rule}
        ids |= {f.rule for f in self.fields.values()} | {a.rule for a in self.any_of}
        ids |= {t.rule for t in (*self.height, *self.depth)}
        ids.add(self.code.rule)  # hri_rule is enforced when the profile loads (fields appear in lines)
        if self.adjacent:
            ids.add(self.adjacent.rule)
        if self.plate:
            ids |= {self.plate.rule, self.plate.room_rule}
        for extra in (self.exemption, self.small_component, self.multi_piece, self.in_force):
            if extra is not None:
                ids.add(extra.rule)
        return tuple(sorted(ids))


_RANGES = (
    ("A-Z", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    ("0-9", "0123456789"),
    ("Greek capitals", "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ"),
    ("Cyrillic capitals", "АБВГДЕЁЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"),
)


def charset_summary(allowed: str) -> str:
    """'A-Z, 0-9, - . /' rather than 80 characters in a row."""
    rest = set(allowed)
    parts = []
    for label, chars in _RANGES:
        if set(chars) <= rest:
            parts.append(label)
            rest -= set(chars)
    return ", ".join([*parts, *(ch for ch in allowed if ch in rest)])


class RuleBook:
    """A set of rule profiles: the bundled ones, plus any the caller adds."""

    def __init__(self, raw: Mapping[str, tuple[str, dict[str, Any]]]) -> None:
        """Validate every profile; ``raw`` maps id -> (where it came from, parsed TOML)."""
        self._raw = dict(raw)
        self._profiles: dict[str, RuleProfile] = {}
        for pid in sorted(self._raw):
            self._profiles[pid] = self._build(pid, (pid,))

    def _build(self, pid: str, chain: tuple[str, ...]) -> RuleProfile:
        origin, data = self._raw[pid]
        merged = self._resolve(pid, chain)
        # The bundled catalogue explains the rule ids once; a profile may add or replace entries.
        merged["sources"] = {**rule_sources(), **merged.get("sources", {})}
        try:
            return RuleProfile.model_validate(merged)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ProfileError(err["msg"], path=origin, loc=loc) from None

    def _resolve(self, pid: str, chain: tuple[str, ...]) -> dict[str, Any]:
        origin, data = self._raw[pid]
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ProfileError(
                f"schema_version {data.get('schema_version')!r} is not supported (this markctl reads 1)",
                path=origin,
                loc="schema_version",
            )
        if data.get("id") != pid:
            raise ProfileError(f"id {data.get('id')!r} must equal {pid!r}", path=origin, loc="id")
        parent = data.get("extends")
        if parent is None:
            return dict(data)
        if not isinstance(parent, str) or parent not in self._raw:
            raise ProfileError(f"unknown profile {parent!r}", path=origin, loc="extends")
        if parent in chain:
            raise ProfileError(f"cycle: {' -> '.join((*chain, parent))}", path=origin, loc="extends")
        base = {k: v for k, v in self._resolve(parent, (*chain, parent)).items() if k != "abstract"}
        merged = deep_merge(base, data)
        merged["extends"] = parent
        return merged

    @classmethod
    def bundled(cls) -> RuleBook:
        """The profiles shipped in ``layouts/data/rules`` (cached; the book is immutable)."""
        return bundled_rules()

    def with_texts(self, texts: Iterable[tuple[str, str]]) -> RuleBook:
        """A new book with extra profiles given as (origin, TOML text); an id may replace a bundled one.

        Raises:
            ProfileError: a text is not TOML, or a profile does not validate (names origin and key).
        """
        raw = dict(self._raw)
        for origin, text in texts:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ProfileError(f"not valid TOML: {exc}", path=origin) from exc
            pid = data.get("id")
            if not isinstance(pid, str) or not re.match(_PROFILE_ID, pid):
                raise ProfileError(f"needs an id matching {_PROFILE_ID}", path=origin, loc="id")
            raw[pid] = (origin, data)
        return RuleBook(raw)

    @property
    def ids(self) -> tuple[str, ...]:
        """Ids of the usable (non-abstract) profiles."""
        return tuple(pid for pid, p in self._profiles.items() if not p.abstract)

    def get(self, profile_id: str) -> RuleProfile:
        """The profile with this id.

        Raises:
            LayoutError: unknown or abstract id (``field="profile"``).
        """
        profile = self._profiles.get(profile_id)
        if profile is None or profile.abstract:
            raise LayoutError(
                f"unknown rule profile {profile_id!r}", field="profile", hint="known: " + ", ".join(self.ids)
            )
        return profile


@cache
def rule_sources() -> dict[str, dict[str, Any]]:
    """The bundled catalogue of rule ids (``layouts/data/rule_sources.toml``): kind, document, text."""
    text = (resources.files("markctl.layouts.data") / "rule_sources.toml").read_text("utf-8")
    return dict(tomllib.loads(text))


@cache
def bundled_rules() -> RuleBook:
    """The bundled rule book, loaded once."""
    folder = resources.files("markctl.layouts.data") / "rules"
    raw: dict[str, tuple[str, dict[str, Any]]] = {}
    for item in folder.iterdir():
        if item.name.endswith(".toml"):
            raw[item.name.removesuffix(".toml")] = (
                f"layouts/data/rules/{item.name}",
                tomllib.loads(item.read_text("utf-8")),
            )
    return RuleBook(raw)
