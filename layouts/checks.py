"""Checks: every requirement of COMPLIANCE.md Part 1 measured on the composed Layout.

Each finding names the rule id and clause from the rule profile, what was measured and what is
required. Heights are measured on the composed geometry (glyph centre lines, then the impression
bottom from the process model), never taken from the requested font size.
"""

from __future__ import annotations

import numpy as np

from markctl.layouts import _geom as g
from markctl.layouts.compose import Layout, TextLine
from markctl.layouts.findings import Finding, Report
from markctl.layouts.rules import ComponentName, Severity

__all__ = ["check"]

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


def _height(layout: Layout) -> list[Finding]:
    out = []
    for rule in layout.rules.height:
        lines = [ln for ln in layout.lines if not rule.fields or set(rule.fields) & set(ln.fields)]
        for ln in lines:
            bottom = layout.process.bottom_height(ln.centre_extent_mm)
            ok = bottom + _EPS >= rule.min_mm
            out.append(
                Finding(
                    rule.rule,
                    rule.clause,
                    f"line {ln.index + 1} {ln.text!r}",
                    f"{bottom:.3f} mm at impression bottom",
                    f">= {rule.min_mm:g} mm",
                    _sev(ok),
                    "character height ok" if ok else "characters too small at the bottom of the impression",
                    _line_bounds(ln),
                )
            )
    return out


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
    allowed = set(rules.placement.components)
    # A plate moulded into the frame is part of the frame/receiver (EU-POLY, LV-182).
    effective = {ComponentName.FRAME} if comp.name is ComponentName.EMBEDDED_PLATE else {comp.name}
    ok = bool(effective & allowed)
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
                    f"{adj.min_gap_mm:g}-{adj.max_gap_mm:g} mm (adjacent, distinct)",
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


def check(layout: Layout) -> Report:
    """Run every check of the layout's rule profile.

    Returns:
        A :class:`Report`; ``report.passed`` is False when any finding is an error. Passing checks
        are included (severity ``pass``) so the report shows measured against required for all.
    """
    findings = [
        *layout.content_findings,
        *_glyphs(layout),
        *_height(layout),
        *_depth(layout),
        *_placement(layout),
        *_code(layout),
    ]
    return Report(tuple(findings))
