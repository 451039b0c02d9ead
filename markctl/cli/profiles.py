"""``markctl profiles list|show|validate|schema`` (firmware profiles) and ``profiles rules`` (rule profiles)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from markctl import profiles as prof
from markctl.cli.layout import RulesOpt, _book
from markctl.errors import ProfileError
from markctl.jobs.manifest import FACT_COLUMNS, IDENTITY, REQUIRED

profiles_app = typer.Typer(
    help="List, show and validate firmware profiles; list rule profiles (profiles rules).",
    no_args_is_help=True,
)


@profiles_app.command("list")
def list_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> int:
    """List every profile on the search path (bundled, then MARKCTL_PROFILE_PATH).

    A broken file does not hide the others: they are listed, and each broken one is named on
    stderr with its key and reason (exit 1)."""
    rows = []
    broken: list[ProfileError] = []
    for info in prof.list_profiles():
        try:
            profile = prof.load_profile(info.id)
        except ProfileError as exc:
            broken.append(exc)
            continue
        rows.append(
            {
                "id": profile.id,
                "name": profile.name,
                "kind": profile.machine.kind.value,
                "protocol": profile.family,
                "extends": profile.extends,
                "origin": info.origin,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        table = Table("id", "kind", "protocol", "extends", "name", "origin")
        for row in rows:
            table.add_row(
                *(str(row[k] or "") for k in ("id", "kind", "protocol", "extends", "name", "origin"))
            )
        Console().print(table)
    for problem in broken:
        typer.echo(
            f"markctl: broken profile (not listed): {problem} (check it with: markctl profiles validate FILE)",
            err=True,
        )
    return 1 if broken else 0


@profiles_app.command("show")
def show_cmd(
    profile_id: Annotated[str, typer.Argument(metavar="ID", help="A profile id, e.g. grbl-1.1.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole merged profile as JSON.")] = False,
) -> int:
    """Show one profile, including which protocol details are verified and which are assumed."""
    profile = prof.load_profile(profile_id)
    if as_json:
        typer.echo(profile.model_dump_json(indent=2))
        return 0
    console = Console()
    m = profile.machine
    console.print(f"[bold]{escape(profile.id)}[/bold]  {escape(profile.name)}")
    if profile.extends:
        console.print(f"extends: {profile.extends}")
    console.print(f"kind: {m.kind.value}   protocol: {profile.family}")
    console.print(
        f"work area: {m.work_area_x_mm:g} x {m.work_area_y_mm:g} mm   max feed: {m.max_feed_mm_min:g} mm/min"
        f"   max accel: {m.max_accel_mm_s2:g} mm/s^2   resolution: {m.resolution_mm:g} mm"
    )
    if profile.laser is not None:
        las = profile.laser
        console.print(
            f"laser: {las.source}, {las.power_w:g} W, {las.wavelength_nm:g} nm, spot {las.spot_mm:g} mm"
        )
    if profile.dot_peen is not None:
        dp = profile.dot_peen
        console.print(
            f"dot-peen: force {dp.force_min_n:g}-{dp.force_max_n:g} N, {dp.dot_rate_hz:g} dots/s, "
            f"~{dp.chars_per_s:g} chars/s, fonts {', '.join(dp.fonts)}"
        )
    proto = profile.protocol.model_dump(exclude={"errors", "alarms", "fault_codes", "settings", "registers"})
    # markup=False: rich would read the banner regex's "\[" as an escaped bracket and drop the backslash.
    console.print(
        "protocol: " + ", ".join(f"{k}={v}" for k, v in proto.items()),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    pv = profile.provenance
    for title, items in (
        ("sources", pv.sources),
        ("VERIFIED", pv.verified),
        ("ASSUMED (not confirmed)", pv.assumed),
    ):
        if items:
            console.print(f"[bold]{title}[/bold]:")
            for item in items:
                console.print(f"  - {item}", markup=False)
    return 0


@profiles_app.command("validate")
def validate_cmd(
    paths: Annotated[list[Path], typer.Argument(metavar="FILE...", help="Profile TOML files to check.")],
) -> int:
    """Validate profile files; exit 1 naming file, key and reason if one is broken."""
    failed = 0
    for path in paths:
        try:
            profile = prof.load_profile_file(path)
        except ProfileError as exc:
            typer.echo(f"markctl: invalid: {exc}", err=True)
            failed += 1
        else:
            typer.echo(f"ok: {path}: {profile.id} ({profile.name})")
    return 1 if failed else 0


@profiles_app.command("schema")
def schema_cmd(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
) -> int:
    """Print (or write) the JSON Schema of a profile file."""
    text = prof.json_schema()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
    return 0


@profiles_app.command("rules")
def rules_cmd(
    profile_id: Annotated[
        str | None,
        typer.Argument(metavar="[ID]", help="A rule profile (e.g. iti-import); omit to list them."),
    ] = None,
    rules: RulesOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> int:
    """Rule profiles: the fields each mark needs, the manifest columns it reads, its components and its sources."""
    book = _book(rules)
    ids = [profile_id] if profile_id else list(book.ids)
    described = [book.get(pid).describe(FACT_COLUMNS) for pid in ids]
    for d in described:
        d["manifest_columns"] = _columns(d)
    if as_json:
        typer.echo(
            json.dumps(described if profile_id is None else described[0], indent=2, ensure_ascii=False)
        )
        return 0
    console = Console()
    if profile_id is None:
        table = Table("id", "mark", "components it marks", "required fields", "name")
        for d in described:
            need = [
                f["name"] + (f" ({f['need'].removeprefix('required ')})" if f["need"] != "required" else "")
                for f in d["fields"]
                if f["need"].startswith("required")
            ]
            table.add_row(d["id"], d["mark_kind"], ", ".join(d["components"]), ", ".join(need), d["name"])
        console.print(table)
        console.print("Details of one: markctl profiles rules ID")
        return 0
    _print_profile(console, described[0])
    return 0


def _columns(described: dict[str, object]) -> list[str]:
    """Manifest columns a row for this profile may carry (the fields keep their names)."""
    fields = [f["name"] for f in described["fields"]]  # type: ignore[attr-defined]
    facts = list(described["facts"])  # type: ignore[call-overload]
    return list(dict.fromkeys([*REQUIRED, *IDENTITY, *fields, *facts]))


def _print_profile(console: Console, d: dict[str, Any]) -> None:
    console.print(f"[bold]{d['id']}[/bold]  {d['name']}", markup=True)
    console.print(
        f"mark: {d['mark_kind']}   marks these components: {', '.join(d['components'])}", markup=False
    )
    console.print("lines: " + " / ".join(repr(t) for t in d["lines"]), markup=False)
    fields = Table("field = manifest column", "need", "characters", "example", "rule", title="fields")
    for f in d["fields"]:
        year = f" (year of {f['year_of']})" if f["year_of"] and "year of" not in f["label"] else ""
        what = f["label"] + year
        fields.add_row(f"{f['name']}\n[dim]{what}[/]", f["need"], f["characters"], f["example"], f["rule"])
    console.print(fields)
    console.print(
        "yes/no columns (yes/no, true/false, 1/0; anything else is an error): " + ", ".join(d["facts"]),
        markup=False,
    )
    console.print("manifest columns: " + ", ".join(d["manifest_columns"]), markup=False)
    limits = Table("rule", "limit", "minimum", "measured", "why there", title="limits")
    for lim in d["limits"]:
        limits.add_row(
            lim["rule"],
            lim["what"],
            f"{lim['min_mm']:g} mm",
            lim["measured_at"],
            lim.get("measuring_clause", ""),
        )
    console.print(limits)
    if d["small_component_fields"]:
        console.print(
            "too-small component (component.size_class = 'too-small'): carries at least "
            + " or ".join(d["small_component_fields"])
            + "; the font-size minimum is waived",
            markup=False,
        )
    if d["exemption"]:
        console.print(
            f"exemption: {d['exemption']} (a supervisor records purpose and re-export date; the weapon is recorded "
            "exempt, not marked); manifest columns: exemption, exemption_purpose, exemption_re_export_by, "
            "exemption_reference; supervisor: --override-by",
            markup=False,
        )
    if d["in_force"]:
        console.print(f"in force from {d['in_force']['since']}: {d['in_force']['assumption']}", markup=False)
    sources = Table("rule", "kind", "source", "says", title="rules and their sources")
    for r in d["rules"]:
        sources.add_row(r["rule"], r["kind"], r["document"], r["text"])
    console.print(sources)
