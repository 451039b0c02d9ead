"""markctl.layouts — compliant mark layouts: content rules, fonts, 2D codes, placement, checks, programs.

Pure: no I/O beyond reading its own data files (and :func:`render_png`, which writes the file it
is asked to). The flow (ARCHITECTURE.md "The flow of one mark")::

    from markctl.layouts import MarkRequest, compose, check, program, render_svg, render_png

    request = MarkRequest.from_toml(text)       # or MarkRequest.parse(dict), request_from_flags(...)
    layout = compose(request)                   # LayoutError/ComplianceError (names field, rule)
    report = check(layout)                      # report.findings, report.passed, report.errors
    prog = program(layout, "grbl-1.1")          # MotionProgram or PatternProgram (frozen)
    stats = program_stats(prog, layout.machine) # marking/travel length, dots, cycle time
    svg = render_svg(layout, report.findings)
    render_png(layout, report.findings, "mark.png", px_per_mm=20)

A layout with an error-level finding must not reach a driver unless an operator overrides it with
a recorded reason; :func:`program` does not judge compliance, :func:`check` does.
"""

if not __name__.startswith("markctl."):
    raise ImportError(f"import this package as 'markctl.{__name__}', not '{__name__}' (see ARCHITECTURE.md)")

# The submodule ``program`` (the Program data types, which drivers import) must be loaded before
# the function ``program`` below is defined: importing a submodule binds its name on the package,
# so loading it later would shadow the function.
import markctl.layouts.program as _program_types  # noqa: E402
from markctl.layouts.checks import check, exemption_report  # noqa: E402
from markctl.layouts.compose import Layout, PlacedCode, PlacedGlyph, TextLine, compose  # noqa: E402
from markctl.layouts.findings import Finding, Report, Severity  # noqa: E402
from markctl.layouts.preview import render_png, render_svg  # noqa: E402
from markctl.layouts.request import Component, MarkOptions, MarkRequest, request_from_flags  # noqa: E402
from markctl.layouts.rules import RuleBook, RuleProfile, bundled_rules  # noqa: E402
from markctl.layouts.toolpath import ProgramStats, build_program, estimate_cycle_time_s, program_stats  # noqa: E402
from markctl.profiles import FirmwareProfile  # noqa: E402

MotionProgram = _program_types.MotionProgram
PatternProgram = _program_types.PatternProgram
Program = _program_types.Program

__all__ = [
    "Component",
    "Finding",
    "Layout",
    "MarkOptions",
    "MarkRequest",
    "MotionProgram",
    "PatternProgram",
    "PlacedCode",
    "PlacedGlyph",
    "Program",
    "ProgramStats",
    "Report",
    "RuleBook",
    "RuleProfile",
    "Severity",
    "TextLine",
    "bundled_rules",
    "check",
    "exemption_report",
    "compose",
    "estimate_cycle_time_s",
    "program",
    "program_stats",
    "render_png",
    "render_svg",
    "request_from_flags",
]


def program(layout: Layout, machine_profile: FirmwareProfile | str | None = None) -> Program:
    """The machine-neutral, optimised program of a layout for a machine profile (or its id).

    Motion machines get ordered strokes (nearest neighbour + 2-opt with reversal); pattern machines
    get a field list. See :func:`markctl.layouts.toolpath.build_program` for the errors raised.
    """
    return build_program(layout, machine_profile)
