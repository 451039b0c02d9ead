"""``markctl layout`` and ``markctl check``: compose a mark, check it, write previews and programs.

A request comes from a TOML/JSON file (``examples/requests/*.toml``) or from flags; flags given
with a file override its values. ``--rules FILE`` adds or replaces rule profiles. Exit codes
follow the CLI: 0 compliant, 1 an error-level finding, 2 bad input (one line naming the field).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from markctl.errors import LayoutError
from markctl.jobs.capabilities import machine_problems
from markctl.layouts import (
    Layout,
    MarkRequest,
    Report,
    RuleBook,
    bundled_rules,
    check,
    compose,
    exemption_report,
    program,
    program_stats,
    render_png,
    render_svg,
    request_from_flags,
)

__all__ = ["register"]

RequestFile = Annotated[
    Path | None, typer.Argument(help="Mark request (.toml or .json); omit to build it from flags.")
]
ProfileOpt = Annotated[str | None, typer.Option("--profile", help="Rule profile id, e.g. iti-import.")]
MachineOpt = Annotated[str | None, typer.Option("--machine", help="Firmware profile id of the machine.")]
FieldOpt = Annotated[list[str] | None, typer.Option("--field", "-f", help="name=value (repeatable).")]
FactOpt = Annotated[list[str] | None, typer.Option("--fact", help="A true fact, e.g. has_unique_mark.")]
ComponentOpt = Annotated[str | None, typer.Option("--component", help="frame, receiver, slide, barrel, ...")]
MaterialOpt = Annotated[str | None, typer.Option("--material", help="Materials-table key, e.g. steel.")]
WallOpt = Annotated[float | None, typer.Option("--wall", help="Wall thickness at the zone, mm.")]
ZoneOpt = Annotated[str | None, typer.Option("--zone", help="'WxH' or 'x,y x,y x,y ...' in mm.")]
KeepoutOpt = Annotated[list[str] | None, typer.Option("--keepout", help="Keep-out polygon 'x,y x,y ...'.")]
ExistingOpt = Annotated[
    list[str] | None, typer.Option("--existing", help="Existing mark polygon 'x,y x,y ...'.")
]
HeightOpt = Annotated[float | None, typer.Option("--height", help="Character height, mm.")]
FontOpt = Annotated[str | None, typer.Option("--font", help="hershey:futural, 5x7 or 7x9.")]
CodeOpt = Annotated[bool | None, typer.Option("--datamatrix/--no-datamatrix", help="Add a Data Matrix.")]
RotationOpt = Annotated[float | None, typer.Option("--rotation", help="Text angle, degrees.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Any mark option as KEY=VALUE, e.g. passes=30, process=anneal, origin_mm=100,100."
    ),
]
RulesOpt = Annotated[
    list[Path] | None, typer.Option("--rules", help="Extra rule-profile TOML file (repeatable).")
]


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LayoutError(f"cannot read {path}: {exc}", field=what) from exc


def _settings(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs for MarkOptions; pydantic converts the strings ("30", "true", a date)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LayoutError(f"expected KEY=VALUE, got {item!r}", field="--set")
        text = value.strip()
        # A point such as origin_mm is written "x,y".
        out[key.strip()] = [part.strip() for part in text.split(",")] if "," in text else text
    return out


def _options(items: list[str] | None, **flags: Any) -> dict[str, Any]:
    """``--set`` values, overridden by the dedicated flags that were given."""
    return {**_settings(items), **{k: v for k, v in flags.items() if v is not None}}


def _book(rules: list[Path] | None) -> RuleBook:
    if not rules:
        return bundled_rules()
    return bundled_rules().with_texts((str(p), _read(p, "--rules")) for p in rules)


def _request(
    file: Path | None,
    *,
    profile: str | None,
    machine: str | None,
    field: list[str] | None,
    fact: list[str] | None,
    component: str | None,
    material: str | None,
    wall: float | None,
    zone: str | None,
    keepout: list[str] | None,
    existing: list[str] | None,
    options: dict[str, Any],
) -> MarkRequest:
    opts = {k: v for k, v in options.items() if v is not None}
    if file is None:
        missing = [
            name
            for name, value in (
                ("--profile", profile),
                ("--machine", machine),
                ("--component", component),
                ("--material", material),
                ("--wall", wall),
                ("--zone", zone),
            )
            if value is None
        ]
        if missing:
            raise LayoutError(f"give a request file or {', '.join(missing)}", field="request")
        assert profile and machine and component and material and wall is not None and zone
        return request_from_flags(
            profile=profile,
            machine=machine,
            fields=field or [],
            facts=fact or [],
            component=component,
            material=material,
            wall_thickness_mm=wall,
            zone=zone,
            keepouts=keepout or [],
            existing=existing or [],
            options=opts,
        )
    text = _read(file, "request")
    base = MarkRequest.from_json(text) if file.suffix.lower() == ".json" else MarkRequest.from_toml(text)
    data = base.model_dump(mode="json")
    if profile:
        data["profile"] = profile
    if machine:
        data["machine"] = machine
    for item in field or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise LayoutError(f"expected name=value, got {item!r}", field="fields")
        data["fields"][name.strip()] = value.strip()
    for name in fact or []:
        data["facts"][name] = True
    comp = data["component"]
    overrides: tuple[tuple[str, str | float | None], ...] = (
        ("name", component),
        ("material", material),
        ("wall_thickness_mm", wall),
    )
    for key, override in overrides:
        if override is not None:
            comp[key] = override
    if zone or keepout or existing:
        flags = request_from_flags(
            profile=data["profile"],
            machine=data["machine"],
            fields=[],
            component=comp["name"],
            material=comp["material"],
            wall_thickness_mm=comp["wall_thickness_mm"],
            zone=zone or " ".join(f"{x},{y}" for x, y in comp["zone"]),
            keepouts=keepout or [],
            existing=existing or [],
        )
        flag_comp = flags.component.model_dump(mode="json")
        comp["zone"] = flag_comp["zone"]
        if keepout:
            comp["keepouts"] = flag_comp["keepouts"]
        if existing:
            comp["existing_marks"] = flag_comp["existing_marks"]
    data["options"].update(opts)
    return MarkRequest.parse(data)


def _table(report: Report, layout: Layout) -> None:
    console = Console()
    table = Table(
        "severity",
        "rule",
        "subject",
        "measured",
        "required",
        "clause",
        title=f"{layout.rules.id}: {layout.rules.name}",
    )
    styles = {"error": "bold red", "warning": "yellow", "info": "cyan", "pass": "green"}
    for f in report.findings:
        table.add_row(
            f"[{styles[f.severity.value]}]{f.severity.value}[/]",
            f"{f.rule} ({f.kind})" if f.kind else f.rule,
            f.subject,
            f.measured,
            f.required,
            f.clause,
        )
    console.print(table)
    verdict = (
        "[green]compliant[/]"
        if report.passed
        else f"[bold red]NOT compliant[/]: {len(report.errors)} error(s)"
    )
    console.print(verdict)


def check_cmd(
    request: RequestFile = None,
    profile: ProfileOpt = None,
    machine: MachineOpt = None,
    field: FieldOpt = None,
    fact: FactOpt = None,
    component: ComponentOpt = None,
    material: MaterialOpt = None,
    wall: WallOpt = None,
    zone: ZoneOpt = None,
    keepout: KeepoutOpt = None,
    existing: ExistingOpt = None,
    height: HeightOpt = None,
    font: FontOpt = None,
    datamatrix: CodeOpt = None,
    rotation: RotationOpt = None,
    rules: RulesOpt = None,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> int:
    """Compose a mark and print its findings; exit 1 when any finding is an error."""
    req = _request(
        request,
        profile=profile,
        machine=machine,
        field=field,
        fact=fact,
        component=component,
        material=material,
        wall=wall,
        zone=zone,
        keepout=keepout,
        existing=existing,
        options=_options(
            set_, char_height_mm=height, font=font, datamatrix=datamatrix, rotation_deg=rotation
        ),
    )
    if req.exemption is not None:  # ITI 8(b) temporary import: judged and recorded, never composed
        report = exemption_report(req, _book(rules))
        if as_json:
            typer.echo(json.dumps({"profile": req.profile, **report.to_dict()}, indent=2))
        else:
            for f in report.findings:
                typer.echo(f"{f.severity.value}: [{f.rule}] ({f.kind}) {f.message}: {f.measured}")
        return 0 if report.passed else 1
    layout = compose(req, _book(rules))
    report = check(layout)
    cannot = machine_problems(program(layout), layout.machine)
    if as_json:
        capabilities = {"machine": layout.machine.id, "machine_problems": [
            {"capability": p.capability, "message": p.message, "blocking": p.blocking} for p in cannot
        ]}  # fmt: skip
        typer.echo(json.dumps({"profile": layout.rules.id, **report.to_dict(), **capabilities}, indent=2))
    else:
        _table(report, layout)
        for problem in cannot:
            typer.echo(f"{'cannot' if problem.blocking else 'warning'}: {problem}")
    return 0 if report.passed and not any(p.blocking for p in cannot) else 1


def layout_cmd(
    request: RequestFile = None,
    profile: ProfileOpt = None,
    machine: MachineOpt = None,
    field: FieldOpt = None,
    fact: FactOpt = None,
    component: ComponentOpt = None,
    material: MaterialOpt = None,
    wall: WallOpt = None,
    zone: ZoneOpt = None,
    keepout: KeepoutOpt = None,
    existing: ExistingOpt = None,
    height: HeightOpt = None,
    font: FontOpt = None,
    datamatrix: CodeOpt = None,
    rotation: RotationOpt = None,
    rules: RulesOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path("layout-out"),
    name: Annotated[str, typer.Option("--name", help="Base name of the output files.")] = "mark",
    px_per_mm: Annotated[float, typer.Option("--px-per-mm", help="PNG resolution.")] = 20.0,
) -> int:
    """Compose and check a mark, then write NAME.svg, NAME.png, NAME.program.json and NAME.findings.json."""
    req = _request(
        request,
        profile=profile,
        machine=machine,
        field=field,
        fact=fact,
        component=component,
        material=material,
        wall=wall,
        zone=zone,
        keepout=keepout,
        existing=existing,
        options=_options(
            set_, char_height_mm=height, font=font, datamatrix=datamatrix, rotation_deg=rotation
        ),
    )
    if not 1 <= px_per_mm <= 200:
        raise LayoutError("must be 1-200", field="--px-per-mm")
    layout = compose(req, _book(rules))
    report = check(layout)
    prog = program(layout)
    cannot = machine_problems(prog, layout.machine)
    stats = program_stats(prog, layout.machine)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.svg").write_text(render_svg(layout, report.findings), "utf-8")
    render_png(layout, report.findings, out / f"{name}.png", px_per_mm=px_per_mm)
    (out / f"{name}.program.json").write_text(json.dumps(prog.to_dict(), indent=1) + "\n", "utf-8")
    (out / f"{name}.findings.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n", "utf-8")
    typer.echo(
        f"{layout.rules.id} on {layout.machine.id}: {len(layout.lines)} line(s) at {layout.char_height_mm:.2f} mm, "
        f"depth {layout.process.depth_mm:.4f} mm; {prog.kind} program {prog.digest[:12]}; "
        f"marking {stats.marking_length_mm:.1f} mm, travel {stats.travel_length_mm:.1f} mm, "
        f"{stats.dot_count} dots, ~{stats.cycle_time_s:.1f} s; "
        + (
            "compliant"
            if report.passed
            else f"NOT compliant ({len(report.errors)} error(s): {', '.join(sorted(report.failed_rules))})"
        )
    )
    typer.echo(f"wrote {out}/{name}.svg, .png, .program.json, .findings.json")
    for problem in cannot:
        typer.echo(f"{'cannot' if problem.blocking else 'warning'}: {problem}")
    return 0 if report.passed and not any(p.blocking for p in cannot) else 1


def register(app: typer.Typer) -> None:
    """Add ``markctl layout`` and ``markctl check`` to the root app."""
    app.command("layout")(layout_cmd)
    app.command("check")(check_cmd)
