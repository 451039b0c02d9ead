"""Checks: every requirement of COMPLIANCE.md Part 1 measured on the composed Layout.

Each finding names the rule id and clause from the rule profile, what was measured and what is
required. Heights are measured on the composed geometry (glyph centre lines, then the process
model) at the point each height rule names: the impression bottom (27 CFR 478.92 says so), the
surface opening, or the nominal font size (EU 2019/68 words its minimum as a font size).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np

from markctl.errors import LayoutError
from markctl.layouts import _geom as g
from markctl.layouts.compose import Layout, TextLine
from markctl.layouts.content import resolve_year
from markctl.layouts.findings import Finding, Report
from markctl.layouts.request import MarkRequest
from markctl.layouts.rules import (
    ComponentName,
    RuleBook,
    RuleProfile,
    Severity,
    bundled_rules,
)

__all__ = ["check", "exemption_report", "explain"]

# Bounding boxes are compared with this tolerance (mm): shapely round-off, not a design margin.
_EPS = 1e-6


def _sev(ok: bool, bad: Severity = Severity.ERROR) -> Severity:
    return Severity.PASS if ok else bad


def _bounds(geom: g.Geom) -> tuple[float, float, float, float] | None:
    return None if g.is_empty(geom) else g.bounds(geom)


def _line_bounds(line: TextLine) -> tuple[float, float, float, float] | None:
    strokes = line.strokes()
    if not strokes:
        return None
    pts = np.concatenate(strokes)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _body_extent_mm(line: TextLine, layout: Layout) -> float:
    """The line's smallest letter/digit height, diacritics above the cap line left out (Ё, Й).

    An accent is not the character's height: a line of Ё alone must meet the rule with its Е.
    """
    heights = [
        gl.centre_extent_mm - layout.font.glyph(gl.char).accent_em * line.height_mm
        for gl in line.glyphs
        if gl.char.isalnum()
    ]
    return min(heights) if heights else 0.0


def _height(layout: Layout) -> list[Finding]:
    """Each height rule measured at its own measuring point, which the finding names with its clause."""
    out = []
    for rule in layout.rules.height:
        lines = [ln for ln in layout.lines if not rule.fields or set(rule.fields) & set(ln.fields)]
        where = rule.measured_at.words
        for ln in lines:
            height = layout.process.height_at(rule.measured_at, _body_extent_mm(ln, layout), ln.height_mm)
            ok = height + _EPS >= rule.min_mm
            out.append(
                Finding(
                    rule.rule,
                    f"{rule.clause}; measured {where}: {rule.measuring_clause}",
                    f"line {ln.index + 1} {ln.text!r}",
                    f"{height:.3f} mm {where}",
                    f">= {rule.min_mm:g} mm {where}",
                    _sev(ok),
                    f"character height ok ({where})" if ok else f"characters too small ({where})",
                    _line_bounds(ln),
                )
            )
    small = layout.rules.small_component
    if layout.request.component.size_class == "too-small":
        if small is None:
            out.append(
                Finding(
                    "ENG-SMALL",
                    "the profile has no provision for components too small for its mark",
                    "component.size_class",
                    "too-small",
                    "a profile with a small-component rule",
                    Severity.WARNING,
                    "this profile has no small-component rule: every rule applies in full",
                )
            )
        else:
            carried = [n for n in small.fields if layout.values.get(n)]
            out.append(
                Finding(
                    small.rule,
                    small.clause,
                    "component.size_class",
                    "too-small; carries " + (", ".join(carried) or "none of " + ", ".join(small.fields)),
                    "at least " + " or ".join(small.fields),
                    _sev(bool(carried)),
                    "too-small component: reduced mark, font-size minimum waived"
                    if carried
                    else "a too-small component still carries " + " or ".join(small.fields),
                )
            )
    return out


def _multi_piece(layout: Layout) -> list[Finding]:
    rule = layout.rules.multi_piece
    subpart = layout.request.component.modular_subpart
    if rule is None or subpart is None:
        return []
    ok = subpart in ("housing", "housing-half")
    message = {
        "housing": "the housing subpart carries the mark",
        "housing-half": "one housing half: the other half carries the same serial and licensee marks",
        "other": "this subpart is not the housing of the fire-control/breech-blocking component: mark the housing",
    }[subpart]
    return [
        Finding(
            rule.rule,
            rule.clause,
            "component.modular_subpart",
            subpart,
            "housing (or each housing half)",
            Severity.PASS if subpart == "housing" else Severity.INFO if ok else Severity.ERROR,
            message,
        )
    ]


def _in_force(layout: Layout) -> list[Finding]:
    rule = layout.rules.in_force
    if rule is None:
        return []
    since = rule.since
    dated = [("marking date", layout.today.isoformat(), layout.today < since)]
    for name, spec in layout.rules.fields.items():
        value = layout.values.get(name)
        if spec.year_of is not None and value:
            year = resolve_year(value, spec.year_of, layout.today)
            dated.append((f"year of {spec.year_of.value}", str(year), year < since.year))
    early = [(what, when) for what, when, before in dated if before]
    return [
        Finding(
            rule.rule,
            rule.clause,
            "profile.in_force",
            ", ".join(f"{what} {when}" for what, when, *_ in (early or dated)),
            f"on or after {since.isoformat()} ({rule.assumption})",
            Severity.WARNING if early else Severity.PASS,
            "the mark's date precedes the assumed in-force date: the regulation may not apply yet"
            if early
            else "regulation in force on the mark's date (assumed)",
        )
    ]


def _depth(layout: Layout) -> list[Finding]:
    p = layout.process
    depth = p.depth_mm if p.removes_material else 0.0
    out = []
    how = f"{p.passes} pass(es) {p.mode}" if p.method == "laser" else f"{p.force_n:.0f} N stylus"
    for rule in layout.rules.depth:
        ok = depth + _EPS >= rule.min_mm
        out.append(
            Finding(
                rule.rule,
                rule.clause,
                "process",
                f"{depth:.4f} mm ({how} on {layout.material.key})",
                f">= {rule.min_mm:g} mm",
                _sev(ok),
                "depth ok" if ok else "the process does not cut deep enough",
            )
        )
    dp = layout.rules.depth_process
    if not p.removes_material:
        out.append(
            Finding(
                dp.rule,
                dp.clause,
                "options.process",
                f"mode {p.mode!r}: no material removed",
                "a material-removing process",
                Severity.ERROR,
                f"{p.mode} changes colour only; it counts as depth 0",
            )
        )
    elif p.method == "dot-peen" and not layout.material.dot_peen_ok:
        out.append(
            Finding(
                dp.rule,
                dp.clause,
                "component.material",
                f"dot peen on {layout.material.key}",
                "a metal surface",
                Severity.WARNING,
                "dot peen is not suited to polymers: the impression relaxes, the depth is not assured",
            )
        )
    else:
        out.append(
            Finding(
                dp.rule, dp.clause, "options.process", f"mode {p.mode!r}", "material removed", Severity.PASS
            )
        )
    integ = layout.rules.integrity
    wall = layout.request.component.wall_thickness_mm
    limit = integ.max_depth_fraction * wall
    ok = depth <= limit + _EPS
    out.append(
        Finding(
            integ.rule,
            integ.clause,
            "component.wall_thickness_mm",
            f"{depth:.4f} mm deep in a {wall:g} mm wall",
            f"<= {limit:.4f} mm ({integ.max_depth_fraction:.0%} of the wall)",
            _sev(ok),
            "depth is safe for the wall" if ok else "too deep for the wall thickness at the mark",
        )
    )
    return out


def _placement(layout: Layout) -> list[Finding]:
    rules = layout.rules
    comp = layout.request.component
    out = []
    ok = comp.name in rules.components()  # a plate moulded into the frame is part of it
    out.append(
        Finding(
            rules.placement.rule,
            rules.placement.clause,
            "component.name",
            comp.name.value,
            " or ".join(c.value for c in rules.placement.components),
            _sev(ok),
            "component ok" if ok else "this mark belongs on another component",
        )
    )
    # Exact tests on centre lines and dot centres (distance to the zone edge >= half the stroke),
    # so no stroke has to be buffered into polygons; the spill area is computed only on failure.
    half = layout.half_width_mm
    centres, squares = layout.text_centres(), layout.code_parts()
    boundary = layout.zone.boundary
    text_ok = g.contains(layout.zone, centres) & (g.distances(centres, boundary) >= half - _EPS)
    code_ok = g.covers_each(layout.zone, squares)
    if text_ok.all() and code_ok.all():
        spill = g.empty()
    else:
        bad = [*g.buffer_each(centres[~text_ok], half), *squares[~code_ok]]
        spill = g.union_all([p.difference(layout.zone) for p in bad])
    outside = g.area(spill)
    inside = bool(outside <= _EPS or (text_ok.all() and code_ok.all()))
    out.append(
        Finding(
            rules.zone.rule,
            rules.zone.clause,
            "placement",
            f"{outside:.4f} mm² outside the zone",
            "0 mm²",
            _sev(inside),
            "inside the marking zone" if inside else "part of the mark is outside the zone",
            _bounds(spill),
        )
    )
    for i, k in enumerate(layout.keepouts):
        d = layout.clearance_to(k)
        over = d < -_EPS
        out.append(
            Finding(
                rules.keepout.rule,
                rules.keepout.clause,
                f"component.keepouts[{i}]",
                f"clearance {d:.3f} mm",
                ">= 0 mm (no overlap)",
                _sev(not over),
                "clear of keep-out" if not over else "mark overlaps a keep-out zone",
                g.bounds(k) if over else None,
            )
        )
    gaps = []
    for i, e in enumerate(layout.existing):
        d = layout.clearance_to(e)
        gaps.append(d)
        over = d <= 0
        out.append(
            Finding(
                rules.overlap.rule,
                rules.overlap.clause,
                f"component.existing_marks[{i}]",
                f"gap {d:.3f} mm",
                "> 0 mm (never over an existing mark)",
                _sev(not over),
                "existing mark untouched" if not over else "the mark would overwrite an existing mark",
                g.bounds(e) if over else None,
            )
        )
    adj = rules.adjacent
    if adj is not None:
        if gaps:
            gap = min(gaps)
            ok = adj.min_gap_mm - _EPS <= gap <= adj.max_gap_mm + _EPS
            out.append(
                Finding(
                    adj.rule,
                    adj.clause,
                    "placement",
                    f"gap {gap:.2f} mm to existing marks",
                    f"{adj.min_gap_mm:g}-{adj.max_gap_mm:g} mm (how markctl models 'adjacent, visibly distinct')",
                    _sev(ok, Severity(adj.severity)),
                    "adjacent to and distinct from existing marks"
                    if ok
                    else (
                        "too close to existing marks to be distinct"
                        if gap < adj.min_gap_mm
                        else "not adjacent to existing marks"
                    ),
                    g.bounds(layout.footprint),
                )
            )
        else:
            out.append(
                Finding(
                    adj.rule,
                    adj.clause,
                    "component.existing_marks",
                    "none given",
                    "outlines of existing marks",
                    # Not a pass: the rule could not be checked. A weapon without any marks is
                    # rare; usually the outlines were just not entered.
                    Severity.WARNING,
                    "no existing marks given: adjacency to them could not be checked",
                )
            )
    out.extend(_plate(layout))
    return out


def _plate(layout: Layout) -> list[Finding]:
    plate = layout.rules.plate
    if plate is None:
        return []
    comp = layout.request.component
    out = []
    if comp.name is ComponentName.EMBEDDED_PLATE:
        ok = layout.material.metal
        out.append(
            Finding(
                plate.rule,
                plate.clause,
                "component.material",
                layout.material.key,
                "a metal plate",
                _sev(ok),
                "embedded metal plate" if ok else "an embedded plate must be metal",
            )
        )
        # LV-182: the plate keeps room for later marks at the minimum size.
        h = layout.rules.min_height_mm
        need_w = plate.room_chars * h * 0.9
        need_h = plate.room_lines * h * layout.request.options.line_spacing
        # Room that is really free: not under this mark, not under marks already there, not in a
        # keep-out (each with the usual clearance).
        clearance = layout.request.options.clearance_mm
        taken = g.union_all([layout.footprint, *layout.existing, *layout.keepouts])
        free = layout.zone.difference(g.buffer(taken, clearance))
        fits = _fits_rect(free, need_w, need_h)
        out.append(
            Finding(
                plate.room_rule,
                plate.room_clause,
                "component.zone",
                "room left" if fits else "no room left",
                f"{need_w:.1f} x {need_h:.1f} mm free for later marks",
                _sev(fits),
                "room for future marks"
                if fits
                else "the plate is too small for future marks at minimum size",
                g.bounds(layout.zone),
            )
        )
    elif comp.name in plate.components and not layout.material.metal:
        out.append(
            Finding(
                plate.rule,
                plate.clause,
                "component.name",
                f"{comp.name.value} of {layout.material.key}",
                "an embedded metal plate",
                Severity.ERROR,
                "non-metal frame/receiver: mark the embedded metal plate (component 'embedded-plate')",
            )
        )
    else:
        out.append(
            Finding(
                plate.rule,
                plate.clause,
                "component.material",
                layout.material.key,
                "metal, or an embedded plate",
                Severity.PASS,
                "metal component",
            )
        )
    return out


def _fits_rect(free: g.Geom, w: float, h: float) -> bool:
    if g.is_empty(free):
        return False
    x0, y0, x1, y1 = g.bounds(free)
    xs = np.arange(x0, x1 - w + 1e-9, max(0.25, w / 8))
    ys = np.arange(y0, y1 - h + 1e-9, max(0.25, h / 4))
    if not len(xs) or not len(ys):
        return False
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    ring = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    return bool(g.contains(g.prepare(free), g.polygons(ring[None] + grid[:, None])).any())


def _code(layout: Layout) -> list[Finding]:
    code = layout.code
    if code is None:
        return []
    c = layout.rules.code
    where = g.bounds(g.polygon_from_array(code.corners(quiet=True)))
    n_chars = len(code.symbol.content)
    checks = [
        (
            "module",
            f"{code.module_mm:.3f} mm",
            f"{c.module_min_mm:g}-{c.module_max_mm:g} mm",
            c.module_min_mm - _EPS <= code.module_mm <= c.module_max_mm + _EPS,
        ),
        (
            "quiet zone",
            f"{code.quiet_zone_modules} module(s)",
            f">= {c.quiet_zone_min_modules} module(s)",
            code.quiet_zone_modules >= c.quiet_zone_min_modules,
        ),
        (
            "symbol",
            f"{code.symbol_mm:.2f} mm",
            f"<= {c.symbol_max_mm:g} mm",
            code.symbol_mm <= c.symbol_max_mm + _EPS,
        ),
        ("content", f"{n_chars} characters", f"<= {c.content_max_chars}", n_chars <= c.content_max_chars),
    ]
    out = [
        Finding(c.rule, c.clause, f"code {what}", measured, required, _sev(ok), f"Data Matrix {what}", where)
        for what, measured, required, ok in checks
    ]
    # The quiet zone must really be clear of text and of everything else marked (ISO/IEC 16022).
    quiet = g.polygon_from_array(code.corners(quiet=True)).difference(g.polygon_from_array(code.corners()))
    intrusion = (
        g.intersection_area(g.buffer_each(layout.text_centres(), layout.half_width_mm), quiet)
        if g.min_distance(layout.text_centres(), quiet) < layout.half_width_mm
        else 0.0
    )
    out.append(
        Finding(
            c.rule,
            c.clause,
            "code quiet zone",
            f"{intrusion:.4f} mm² marked",
            "0 mm²",
            _sev(intrusion <= _EPS),
            "quiet zone clear" if intrusion <= _EPS else "text intrudes into the quiet zone",
            where,
        )
    )
    return out


def _glyphs(layout: Layout) -> list[Finding]:
    rule = layout.rules.glyph
    chars = sorted({ch for ln in layout.lines for ch in ln.text})
    missing = [ch for ch in chars if not layout.font.can_draw(ch)]
    return [
        Finding(
            rule.rule,
            rule.clause,
            "options.font",
            f"{len(chars) - len(missing)}/{len(chars)} characters drawn",
            f"all by {layout.font.name}",
            _sev(not missing),
            "every character drawn, none substituted",
        )
    ]


def explain(findings: list[Finding], rules: RuleProfile) -> tuple[Finding, ...]:
    """Each finding with the kind, source document and text of its rule (from the profile's sources)."""
    out = []
    for f in findings:
        src = rules.source(f.rule)
        if src is None:  # a user profile's own rule id without a [sources.<id>] entry
            out.append(replace(f, kind="unstated", source=f"not stated by profile {rules.id!r}"))
        else:
            out.append(replace(f, kind=src.kind.value, source=src.document, text=src.text))
    return tuple(out)


def check(layout: Layout) -> Report:
    """Run every check of the layout's rule profile.

    Returns:
        A :class:`Report`; ``report.passed`` is False when any finding is an error. Passing checks
        are included (severity ``pass``) so the report shows measured against required for all.
        Each finding carries the kind and source of its rule (:func:`explain`).
    """
    findings = [
        *layout.content_findings,
        *_glyphs(layout),
        *_height(layout),
        *_depth(layout),
        *_placement(layout),
        *_multi_piece(layout),
        *_code(layout),
        *_in_force(layout),
    ]
    return Report(explain(findings, layout.rules))


def exemption_report(
    request: MarkRequest, rules: RuleBook | None = None, *, today: date | None = None
) -> Report:
    """Judge a request that carries an exemption instead of a mark (ITI 8(b) temporary import).

    Nothing is composed or cut. The report passes, with ``exempt`` set, when the profile allows
    the exemption and it names a purpose, a supervisor and a re-export date within the profile's
    limit; the caller records the weapon with the exemption's facts.

    Raises:
        LayoutError: the request has no exemption, or names an unknown profile.
    """
    ex = request.exemption
    if ex is None:
        raise LayoutError("the request carries no exemption", field="exemption")
    profile = (rules or bundled_rules()).get(request.profile)
    rule = profile.exemption
    day = today or request.options.today or date.today()
    if rule is None or rule.kind != ex.kind:
        finding = Finding(
            "ENG-EXEMPT",
            f"profile {profile.id!r} allows no {ex.kind} exemption",
            "exemption.kind",
            ex.kind,
            "an exemption the profile allows",
            Severity.ERROR,
            f"{profile.name}: a {ex.kind} is not exempt from this mark",
        )
        return Report((finding,))
    days = (ex.re_export_by - day).days
    ok = 0 <= days <= rule.max_days
    finding = Finding(
        rule.rule,
        rule.clause,
        "exemption",
        f"{ex.kind} recorded by {ex.recorded_by}: {ex.purpose!r}, re-export by {ex.re_export_by.isoformat()}"
        + (f", ref {ex.reference}" if ex.reference else ""),
        f"re-export within 0-{rule.max_days} days of {day.isoformat()}",
        Severity.INFO if ok else Severity.ERROR,
        "exempt: no import mark; the weapon is recorded with this exemption"
        if ok
        else (
            "the re-export date has passed: the weapon is no longer a temporary import; mark it"
            if days < 0
            else f"re-export more than {rule.max_days} days away is not a temporary import"
        ),
    )
    return Report(explain([finding], profile), exempt=ok)
