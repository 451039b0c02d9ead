"""Every bundled profile: a compliant example passes, and each of its rules, minimally broken, fails with its id."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from markctl.layouts import Layout, MarkRequest, RuleBook, bundled_rules, compose
from markctl.layouts import _geom as g
from markctl.layouts.rules import FieldKind, RuleProfile

from .conftest import EXAMPLES, TODAY, failing, request, request_dict

BOOK = bundled_rules()
PROFILES = sorted(EXAMPLES)


def test_every_part1_profile_ships() -> None:
    assert set(BOOK.ids) == {
        "iti-import",
        "iti-manufacture",
        "iti-stockpile",
        "iti-transfer",
        "iti-found",
        "us-import",
        "eu-manufacture",
        "eu-import",
        "ca-import",
    }


@pytest.mark.parametrize("profile", PROFILES)
def test_compliant_example_passes(profile: str) -> None:
    errors, warnings = failing(request(profile))
    assert errors == set()
    assert warnings == set()


# A breaker returns (rule id, expected severity, the broken request or layout, rule book).
Broken = tuple[str, str, MarkRequest | Layout, RuleBook | None]


def _bad_value(kind: FieldKind, max_length: int) -> str:
    return {
        FieldKind.COUNTRY: "XX",
        FieldKind.COUNTRY_NAME: "NARNIA",
        FieldKind.US_STATE: "ZZ",
        FieldKind.YEAR: "123",
        FieldKind.LITERAL: "CAN",
    }.get(kind, "A" * (max_length + 1))


def _fields(rules: RuleProfile, profile: str, **fields: str | None) -> MarkRequest:
    values = {k: v for k, v in {**EXAMPLES[profile], **fields}.items() if v is not None}
    return request(profile, fields=values)


def _options(profile: str, **options: Any) -> MarkRequest:
    return request(profile, options={"today": TODAY.isoformat(), **options})


def _component(profile: str, **component: Any) -> MarkRequest:
    data = request_dict(profile)
    data["component"].update(component)
    return MarkRequest.parse(data)


def _breakers(profile: str) -> dict[str, Callable[[], Broken]]:
    rules = BOOK.get(profile)
    out: dict[str, Callable[[], Broken]] = {}
    for name, spec in rules.fields.items():
        if spec.required:
            out[f"field:{name}"] = lambda n=name, s=spec: (
                s.rule,
                "error",
                _fields(rules, profile, **{n: None}),
                None,
            )
        elif spec.required_unless:
            # Required unless a fact holds: state the fact as false and leave the field out.
            out[f"field:{name}"] = lambda n=name, s=spec: (
                s.rule,
                "error",
                request(
                    profile,
                    fields={k: v for k, v in EXAMPLES[profile].items() if k != n},
                    facts={s.required_unless: False},
                ),
                None,
            )
        else:
            out[f"field:{name}"] = lambda n=name, s=spec: (
                s.rule,
                "error",
                _fields(rules, profile, **{n: _bad_value(s.kind, s.max_length)}),
                None,
            )
    for i, rule in enumerate(rules.any_of):
        # Drop every field that only the first group needs; the second group's pattern is not met.
        only_first = (
            set(rule.groups[0]) - set(rule.groups[1]) if len(rule.groups) > 1 else set(rule.groups[0])
        )
        out[f"any_of:{i}"] = lambda r=rule, d=only_first: (
            r.rule,
            "error",
            _fields(rules, profile, **dict.fromkeys(d)),
            None,
        )
    text_field = next(
        n for n, s in rules.fields.items() if s.kind in (FieldKind.SERIAL, FieldKind.TEXT, FieldKind.LITERAL)
    )
    spec = rules.fields[text_field]
    lower = spec.values[0].lower() if spec.kind is FieldKind.LITERAL else "ab1"
    out["charset"] = lambda: (
        rules.charset.rule,
        "error",
        _fields(rules, profile, **{text_field: lower}),
        None,
    )
    for i, th in enumerate(rules.height):
        out[f"height:{i}"] = lambda t=th: (
            t.rule,
            "error",
            _options(profile, char_height_mm=round(t.min_mm - 0.2, 2)),
            None,
        )
    for i, th in enumerate(rules.depth):
        out[f"depth:{i}"] = lambda t=th: (t.rule, "error", _options(profile, passes=1), None)
    out["depth_process"] = lambda: (
        rules.depth_process.rule,
        "error",
        _options(profile, process="anneal"),
        None,
    )
    out["integrity"] = lambda: (
        rules.integrity.rule,
        "error",
        _component(profile, wall_thickness_mm=0.3),
        None,
    )
    out["placement"] = lambda: (rules.placement.rule, "error", _component(profile, name="magazine"), None)
    out["code"] = lambda: (rules.code.rule, "error", _options(profile, datamatrix=True, module_mm=0.15), None)

    def composed() -> Layout:
        return compose(request(profile))

    def over_mark() -> g.Geom:
        return g.buffer(g.rect(*g.bounds(composed().footprint)), 0.0)

    # Placement inside the zone, clear of keep-outs and existing marks is guaranteed by compose;
    # the check must still catch a layout that breaks it (e.g. a zone edited after composing).
    out["zone"] = lambda: (
        rules.zone.rule,
        "error",
        dataclasses.replace(composed(), zone=g.rect(-1, -1, 0.5, 0.5)),
        None,
    )
    out["overlap"] = lambda: (
        rules.overlap.rule,
        "error",
        dataclasses.replace(composed(), existing=(over_mark(),)),
        None,
    )
    out["keepout"] = lambda: (
        rules.keepout.rule,
        "error",
        dataclasses.replace(composed(), keepouts=(over_mark(),)),
        None,
    )
    if rules.adjacent is not None:
        adj = rules.adjacent
        far = g.rect(200, 200, 210, 204)
        out["adjacent"] = lambda: (
            adj.rule,
            adj.severity,
            dataclasses.replace(composed(), existing=(far,)),
            None,
        )
    if rules.plate is not None:
        plate = rules.plate
        out["plate"] = lambda: (
            plate.rule,
            "error",
            _component(profile, name="frame", material="glass-filled-polymer"),
            None,
        )

        def no_room() -> Broken:
            first = compose(
                _component(profile, name="embedded-plate", material="embedded-steel-plate", existing_marks=[])
            )
            x0, y0, x1, y1 = g.bounds(first.footprint)
            tight = [[x0 - 0.4, y0 - 0.4], [x1 + 0.4, y0 - 0.4], [x1 + 0.4, y1 + 0.4], [x0 - 0.4, y1 + 0.4]]
            broken = _component(
                profile, name="embedded-plate", material="embedded-steel-plate", existing_marks=[], zone=tight
            )
            return plate.room_rule, "error", broken, None

        out["plate_room"] = no_room

    def glyph() -> Broken:
        # A user profile allows '#', which the 5x7 font cannot draw: an error, never a substitute.
        extra = f'schema_version = 1\nid = "{profile}-hash"\nextends = "{profile}"\n[charset]\nallowed = "{rules.charset.allowed}#"\n'
        if spec.kind is FieldKind.LITERAL:
            extra += f'[fields.{text_field}]\nvalues = ["{spec.values[0]}#"]\n'
        book = BOOK.with_texts([("test", extra)])
        data = request_dict(profile, profile=f"{profile}-hash")
        data["fields"][text_field] = (spec.values[0] if spec.values else "AB1") + "#"
        data["options"]["font"] = "5x7"
        return rules.glyph.rule, "error", MarkRequest.parse(data), book

    out["glyph"] = glyph
    if rules.exemption is not None:
        ex = rules.exemption
        # A re-export date already past is no temporary import: the exemption is refused.
        out["exemption"] = lambda: (
            ex.rule,
            "error",
            request(
                profile,
                exemption={
                    "kind": ex.kind,
                    "purpose": "trade fair demonstration",
                    "re_export_by": "2026-01-01",
                    "recorded_by": "supervisor-1",
                },
            ),
            None,
        )
    if rules.small_component is not None:
        small = rules.small_component
        # A too-small component still carries the serial (or code): leave it out.
        out["small_component"] = lambda: (
            small.rule,
            "error",
            request(
                profile,
                fields={k: v for k, v in EXAMPLES[profile].items() if k not in small.fields},
                component={**request_dict(profile)["component"], "size_class": "too-small"},
            ),
            None,
        )
    if rules.multi_piece is not None:
        multi = rules.multi_piece
        out["multi_piece"] = lambda: (multi.rule, "error", _component(profile, modular_subpart="other"), None)
    if rules.in_force is not None:
        inf = rules.in_force
        before = inf.since - dt.timedelta(days=1)
        dated = {
            n: f"{before.year % 100:02d}" if 2 in f.digits else str(before.year)
            for n, f in rules.fields.items()
            if f.year_of is not None
        }
        out["in_force"] = lambda: (
            inf.rule,
            "warning",
            request(
                profile,
                fields={**EXAMPLES[profile], **dated},
                options={"today": before.isoformat()},
            ),
            None,
        )
    return out


CASES = [(p, role) for p in PROFILES for role in _breakers(p)]


@pytest.mark.parametrize(("profile", "role"), CASES, ids=[f"{p}-{r}" for p, r in CASES])
def test_broken_rule_fails_with_its_id(profile: str, role: str) -> None:
    rule, severity, broken, book = _breakers(profile)[role]()
    errors, warnings = failing(broken, book)
    if severity == "error":
        assert rule in errors, (errors, warnings)
    else:
        assert rule in warnings and rule not in errors, (errors, warnings)


@pytest.mark.parametrize("profile", PROFILES)
def test_breakers_cover_every_rule_of_the_profile(profile: str) -> None:
    covered = {b()[0] for b in _breakers(profile).values()}
    assert covered == set(BOOK.get(profile).rule_ids)


def test_user_profile_extends_and_adds() -> None:
    text = """
schema_version = 1
id = "xx-import"
extends = "iti-import"
name = "A national import mark with a bigger minimum"
[[height]]
rule = "XX-1"
clause = "national rule 1: 2.5 mm"
min_mm = 2.5
"""
    book = bundled_rules().with_texts([("xx.toml", text)])
    assert "xx-import" in book.ids and "iti-import" in book.ids
    req = request("iti-import", profile="xx-import")
    layout = compose(req, book)
    assert layout.process.bottom_height(layout.lines[0].centre_extent_mm) >= 2.5
    errors, _ = failing(request("iti-import", profile="xx-import", options={"char_height_mm": 2.0}), book)
    assert errors == {"XX-1"}


@pytest.mark.parametrize(
    ("text", "loc", "words"),
    [
        ('schema_version = 1\nid = "yy"\nextends = "nope"\nname = "x"\n', "extends", "unknown profile"),
        ('schema_version = 2\nid = "yy"\nextends = "iti-import"\n', "schema_version", "not supported"),
        ('schema_version = 1\nid = "yy"\nextends = "iti-import"\ncolour = 1\n', "colour", "Extra inputs"),
        (
            'schema_version = 1\nid = "yy"\nextends = "iti-import"\nlines = ["{nope}"]\n',
            "",
            "unknown field 'nope'",
        ),
        ("id = ", "", "not valid TOML"),
    ],
)
def test_broken_user_profile_is_refused_naming_the_key(text: str, loc: str, words: str) -> None:
    from markctl.errors import ProfileError

    with pytest.raises(ProfileError) as info:
        BOOK.with_texts([("my-rules.toml", text)])
    assert info.value.path == "my-rules.toml" and info.value.loc == loc
    assert words in str(info.value)


def test_us_import_identity_by_ffl_prefixed_serial() -> None:
    # 27 CFR 478.92(a)(1)(i): name + city + State, or name + a serial prefixed 'NNNNNNNN-'.
    fields = {k: v for k, v in EXAMPLES["us-import"].items() if k not in ("city", "state")}
    assert failing(request("us-import", fields={**fields, "serial": "12345678-AB12"})) == (set(), set())
    errors, _ = failing(request("us-import", fields={**fields, "serial": "1234567-AB12"}))
    assert errors == {"US-ID"}


def test_eu_year_may_live_in_the_serial_and_model_is_recommended() -> None:
    fields = {k: v for k, v in EXAMPLES["eu-manufacture"].items() if k != "year"}
    assert failing(request("eu-manufacture", fields=fields, facts={"serial_contains_year": True})) == (
        set(),
        set(),
    )
    errors, _ = failing(request("eu-manufacture", fields=fields))
    assert errors == {"EU-CONT"}
    no_model = {k: v for k, v in EXAMPLES["eu-manufacture"].items() if k != "model"}
    assert failing(request("eu-manufacture", fields=no_model)) == (set(), {"EU-CONT"})
