"""``markctl records list|show|verify|export``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from markctl.config import load_settings
from markctl.errors import ConfigError
from markctl.records import ItemState, RecordStore

records_app = typer.Typer(help="Read, verify and export the mark records.", no_args_is_help=True)

RecordsOpt = Annotated[
    str | None,
    typer.Option("--records", help="Records URL or SQLite path (default: config, MARKCTL_RECORDS)."),
]


def open_store(records: str | None) -> RecordStore:
    return RecordStore.open(load_settings().records_location(records))


@records_app.command("list")
def list_cmd(
    records: RecordsOpt = None,
    state: Annotated[str | None, typer.Option(help="Only items in this state.")] = None,
    batch: Annotated[str | None, typer.Option(help="Only items of this batch.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> int:
    """List items and their current state."""
    if state is not None and state not in {s.value for s in ItemState}:
        raise ConfigError(f"--state {state!r}: use one of {', '.join(s.value for s in ItemState)}")
    with open_store(records) as store:
        rows = store.items(batch_id=batch, state=ItemState(state) if state else None)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return 0
    table = Table("item", "state", "attempts", "marks", "batch", "last record", "updated")
    for r in rows:
        table.add_row(
            r.item_key,
            r.state.value,
            str(r.attempts),
            str(r.marks),
            r.batch_id or "",
            str(r.last_seq),
            r.updated_at,
        )
    Console().print(table)
    return 0


@records_app.command("show")
def show_cmd(
    what: Annotated[str, typer.Argument(metavar="SEQ|ITEM_KEY|WEAPON_KEY")],
    records: RecordsOpt = None,
) -> int:
    """Show a record (by number), an item's history (MAKER|SERIAL|component|profile) or a whole weapon (MAKER|SERIAL)."""
    with open_store(records) as store:
        if what.isdigit():
            record = store.get(int(what))
            if record is None:
                raise ConfigError(f"no record {what}")
            typer.echo(json.dumps(record.as_dict(), indent=2, sort_keys=True))
            return 0
        if what.count("|") == 1:  # a weapon: every item (component and mark) tied to it
            weapon = store.items(weapon_key=what)
            if not weapon:
                raise ConfigError(f"no weapon {what!r}", hint="weapon keys look like MAKER|SERIAL")
            out = [
                {**i.as_dict(), "history": [r.as_dict() for r in store.history(i.item_key)]} for i in weapon
            ]
            typer.echo(json.dumps({"weapon": what, "items": out}, indent=2, sort_keys=True))
            return 0
        history = store.history(what)
        if not history:
            raise ConfigError(f"no item {what!r}", hint="item keys look like MAKER|SERIAL|component|profile")
        typer.echo(json.dumps([r.as_dict() for r in history], indent=2, sort_keys=True))
    return 0


@records_app.command("verify")
def verify_cmd(
    records: RecordsOpt = None,
    expect_head: Annotated[
        str | None, typer.Option(help="Chain head hash kept outside the database.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> int:
    """Recompute the hash chain; exit 1 naming every altered, inserted or deleted row."""
    with open_store(records) as store:
        report = store.verify(expect_head=expect_head)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": report.ok,
                    "rows": report.rows,
                    "head_seq": report.head_seq,
                    "head_hash": report.head_hash,
                    "problems": [{"seq": p.seq, "kind": p.kind, "detail": p.detail} for p in report.problems],
                },
                indent=2,
            )
        )
    else:
        for problem in report.problems:
            typer.echo(f"TAMPERED: {problem}", err=True)
        verdict = "intact" if report.ok else f"NOT intact ({len(report.problems)} problem(s))"
        typer.echo(f"records {verdict}: {report.rows} rows, head {report.head_seq} {report.head_hash}")
    return 0 if report.ok else 1


@records_app.command("export")
def export_cmd(
    records: RecordsOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="json or csv.")] = "json",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
) -> int:
    """Export every record for the national register (JSON or CSV)."""
    if fmt not in ("json", "csv"):
        raise ConfigError(f"--format {fmt!r}: use json or csv")
    with open_store(records) as store:
        if output is None:
            count = store.export(sys.stdout, fmt)
        else:
            with output.open("w", encoding="utf-8", newline="") as out:
                count = store.export(out, fmt)
    typer.echo(f"exported {count} records", err=True)
    return 0


def register(app: typer.Typer) -> None:
    app.add_typer(records_app, name="records")
