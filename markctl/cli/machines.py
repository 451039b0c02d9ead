"""``markctl machines add|list|remove|probe`` and ``markctl config show``.

Named machines live in ``markctl.toml`` so that an operator types ``--machine laser``, not a
device path and a profile. ``add`` checks the address and the profile before it writes (nothing
is connected); ``probe`` connects, reads and compares with the profile (see markctl/probe.py),
moving nothing and firing nothing. The file is edited with tomlkit so comments and layout stay.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated

import tomlkit
import typer
from rich.console import Console
from rich.table import Table

from markctl.cli.jobs import ProfileOpt, resolve_machine
from markctl.config import DEFAULT_RECORDS, MachineEntry, config_path, load_settings
from markctl.errors import ConfigError
from markctl.machines import check_machine, open_machine
from markctl.probe import Check, differences, probe

machines_app = typer.Typer(
    help="Named machines in markctl.toml: add, list, remove, probe.", no_args_is_help=True
)
config_app = typer.Typer(
    help="Show the configuration markctl uses and where it comes from.", no_args_is_help=True
)
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def _read_document(path: Path) -> tomlkit.TOMLDocument:
    if not path.exists():
        return tomlkit.document()
    try:
        return tomlkit.parse(path.read_text("utf-8"))
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


@machines_app.command("add")
def add_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Short name, e.g. laser or peen-2.")],
    address: Annotated[
        str, typer.Argument(metavar="ADDRESS", help="e.g. grbl+serial:///dev/ttyUSB0?baud=115200")
    ],
    profile: ProfileOpt = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the default machine.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite a machine of that name.")] = False,
) -> int:
    """Check an address and its profile (no connection), then save it under NAME in markctl.toml."""
    if not name or not set(name) <= NAME_CHARS or "://" in name:
        raise ConfigError(f"machine name {name!r}: use lowercase letters, digits, '-' or '_'")
    checked = check_machine(address, profile)
    settings = load_settings()
    if name in settings.machines and not replace:
        raise ConfigError(
            f"machine {name!r} exists already in {settings.source}", hint="pass --replace to overwrite it"
        )
    path = config_path(settings)
    doc = _read_document(path)
    machines = doc.setdefault("machines", tomlkit.table(is_super_table=True))
    entry = tomlkit.table()
    entry["address"] = address
    if profile is not None or not checked.address.is_simulated:
        entry["profile"] = checked.profile.id
    machines[name] = entry
    if default:
        doc.setdefault("defaults", tomlkit.table())["machine"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    typer.echo(f"saved machine {name!r} ({address}, profile {checked.profile.id}) in {path}")
    return 0


@machines_app.command("remove")
def remove_cmd(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A machine in markctl.toml.")],
) -> int:
    """Remove a named machine from markctl.toml (the records keep naming it)."""
    settings = load_settings()
    if name not in settings.machines:
        known = ", ".join(sorted(settings.machines)) or "none configured"
        raise ConfigError(f"no machine named {name!r} (known: {known})")
    path = config_path(settings)
    doc = _read_document(path)
    del doc["machines"][name]
    defaults = doc.get("defaults")
    note = ""
    if defaults is not None and defaults.get("machine") == name:
        del defaults["machine"]
        note = " (it was the default machine: set another with machines add --default)"
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    typer.echo(f"removed machine {name!r} from {path}{note}")
    return 0


@machines_app.command("list")
def list_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> int:
    """List the named machines, their addresses and profiles, and which is the default."""
    settings = load_settings()
    default = os.environ.get("MARKCTL_MACHINE") or settings.defaults.machine
    rows = [{"name": name, "address": e.address, "profile": e.profile, "default": name == default}
            for name, e in sorted(settings.machines.items())]  # fmt: skip
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return 0
    if not rows:
        typer.echo(f"no machines configured ({settings.source or 'no markctl.toml found'}); "
                   "add one with: markctl machines add NAME ADDRESS --profile PROFILE")  # fmt: skip
        return 0
    table = Table("name", "address", "profile", "default", title=settings.source)
    for name, e in sorted(settings.machines.items()):
        table.add_row(name, e.address, e.profile or "(from sim://)", "yes" if name == default else "")
    Console().print(table)
    return 0


@machines_app.command("probe")
def probe_cmd(
    machine: Annotated[str, typer.Argument(metavar="NAME|ADDRESS", help="A named machine or an address.")],
    profile: ProfileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every check as JSON.")] = False,
) -> int:
    """Connect, read identity and settings, compare them with the profile. Moves nothing, fires nothing.

    Exit 1 if anything differs."""
    settings, name, _ = resolve_machine(machine, profile)
    entry = settings.machines[name]

    async def run() -> list[Check]:
        async with await open_machine(entry.address, profile=entry.profile) as opened:
            return await probe(opened)

    checks = asyncio.run(run())
    diffs = differences(checks)
    if as_json:
        typer.echo(json.dumps({"machine": name, "profile": entry.profile,
                               "checks": [c.as_dict() for c in checks]}, indent=2))  # fmt: skip
    else:
        table = Table("", "what", "device", "profile", "note", title=f"{name} vs profile {entry.profile}")
        for c in checks:
            table.add_row("ok" if c.ok else "[red]DIFF[/]", c.what, c.device, c.profile, c.note)
        Console().print(table)
    if diffs:
        typer.echo(f"markctl: {len(diffs)} difference(s) between {name} and profile {entry.profile}: "
                   + "; ".join(f"{d.what}: device {d.device}, profile {d.profile}" for d in diffs)
                   + " (fix the machine's settings or write a profile that matches it)", err=True)  # fmt: skip
        return 1
    if not as_json:
        typer.echo(f"{name} matches profile {entry.profile}")
    return 0


@config_app.command("show")
def show_cmd(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> int:
    """The configuration in effect: which file, the records location, machines and defaults."""
    settings = load_settings()
    records = settings.records_location()
    defaults = {
        "machine": os.environ.get("MARKCTL_MACHINE") or settings.defaults.machine,
        "operator": os.environ.get("MARKCTL_OPERATOR") or settings.defaults.operator,
        "mark_profile": settings.defaults.mark_profile,
    }
    data: dict[str, object] = {
        "file": settings.source,
        "records": records,
        "records_from": "MARKCTL_RECORDS" if os.environ.get("MARKCTL_RECORDS") else
        "[records] url" if settings.records.url else f"default ({DEFAULT_RECORDS})",
        "machines": {n: e.model_dump(exclude_none=True) for n, e in sorted(settings.machines.items())},
        "defaults": defaults,
    }  # fmt: skip
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return 0
    typer.echo(
        f"# file: {data['file'] or 'none found (markctl.toml here, or ~/.config/markctl/markctl.toml)'}"
    )
    typer.echo(f"# records from {data['records_from']}; environment variables override the file")
    doc = tomlkit.document()
    doc["records"] = {"url": records}
    machines = tomlkit.table(is_super_table=True)
    for n, e in sorted(settings.machines.items()):
        machines[n] = MachineEntry.model_validate(e.model_dump()).model_dump(exclude_none=True)
    doc["machines"] = machines
    doc["defaults"] = {k: v for k, v in defaults.items() if v is not None}
    typer.echo(tomlkit.dumps(doc).rstrip())
    return 0


def register(app: typer.Typer) -> None:
    app.add_typer(machines_app, name="machines")
    app.add_typer(config_app, name="config")
