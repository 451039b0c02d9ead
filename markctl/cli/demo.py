"""``markctl demo``: a whole simulated marking session, end to end, in under a minute.

1. starts two simulated machines from their profiles: a GRBL diode laser in-process, and a
   dot-peen marker behind a real pymodbus Modbus/TCP server on loopback;
2. pre-checks an import shipment (examples/import) and marks it on the laser, with progress;
3. marks state-stockpile marks on the embedded steel plates of polymer pistol frames
   (examples/stockpile) with the dot-peen marker;
4. runs the import shipment again: every item is skipped, nothing is marked twice;
5. writes layout previews (SVG, PNG), burned-workpiece PNGs and a TRAINING registry (records.db and
   its site key) to the output folder, verifies the record chain and prints the summary.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from markctl.cli.jobs import run_batch
from markctl.config import load_settings
from markctl.errors import ConfigError
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import read_manifest
from markctl.jobs.runner import file_stem, precheck
from markctl.layouts import render_png, render_svg
from markctl.profiles import load_profile
from markctl.records import RecordStore
from markctl.service import MarkService

console = Console()
DEMO_MARKER = ".markctl-demo"

STEPS = (
    ("import shipment on the laser", "import", "laser"),
    ("stockpile marks on embedded plates, dot-peen over Modbus/TCP", "stockpile", "peen"),
)


def _previews(examples: Path, name: str, machine_profile: str, out: Path) -> int:
    plan = precheck(
        read_manifest(examples / name / "manifest.csv"),
        Catalogue.load(examples / name / "parts.toml"),
        load_profile(machine_profile),
    )
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for prepared in plan.prepared:
        if prepared.layout is None or prepared.report is None:
            continue
        stem = file_stem(prepared.item.item_key)
        (out / f"{stem}.svg").write_text(
            render_svg(prepared.layout, prepared.report.findings), encoding="utf-8"
        )
        render_png(prepared.layout, prepared.report.findings, out / f"{stem}.png", px_per_mm=20)
        count += 1
    return count


async def _session(examples: Path, out: Path) -> int:
    settings = load_settings(examples / "markctl.toml")
    operator = settings.operator()
    failures = 0
    # A training registry: it takes simulated marks only, and a production registry never takes them.
    with RecordStore.init(out / "records.db", site="demo", training=True, actor="markctl:demo") as store:
        console.print(f"records: {store.registry.describe()}")
        service = MarkService(settings, store, out_dir=out)
        try:
            for title, name, machine in STEPS:
                console.rule(title)
                previews = _previews(examples, name, service.profile_of(machine), out / "previews")
                job = await run_batch(service, examples / name / "manifest.csv", examples / name / "parts.toml",
                                      machine=machine, operator=operator, exclude=set(), overrides={},
                                      override_by=None)  # fmt: skip
                console.print(f"{previews} layout previews in {out / 'previews'}")
                failures += job.state != "done"
            console.rule("the same import shipment again")
            again = await run_batch(service, examples / "import" / "manifest.csv", examples / "import" / "parts.toml",
                                    machine="laser", operator=operator, exclude=set(), overrides={}, override_by=None,
                                    quiet=True)  # fmt: skip
            counts = again.report.counts() if again.report else {}
            console.print(f"re-run: {counts} — nothing is marked twice")
            failures += set(counts) != {"skipped"}
        finally:
            await service.close()
        console.rule("records")
        report = store.verify()
        table = Table("item", "state", "attempts", "marks")
        for item in store.items():
            table.add_row(item.item_key, item.state.value, str(item.attempts), str(item.marks))
        console.print(table)
        verdict = "intact" if report.ok else f"NOT intact: {[str(p) for p in report.problems]}"
        console.print(f"record chain {verdict}: {report.rows} rows, head {report.head_hash}")
        failures += not report.ok
    return failures


def demo(
    out: Annotated[Path, typer.Option(help="Where previews, workpiece PNGs and records go.")] = Path(
        "demo-out"
    ),
    examples: Annotated[Path, typer.Option(help="The examples folder of the repository.")] = Path("examples"),
) -> int:
    """Run a full simulated marking session (see the module docstring)."""
    if not (examples / "markctl.toml").is_file():
        raise ConfigError(
            f"{examples}: no examples here", hint="run from the repository root, or pass --examples"
        )
    if out.exists() and any(out.iterdir()):
        # A demo starts from a clean slate, but only ever deletes a folder it made itself.
        if not (out / DEMO_MARKER).is_file():
            raise ConfigError(
                f"{out} is not empty and was not made by markctl demo", hint="choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text("made by markctl demo; deleted by the next demo run\n")
    started = time.perf_counter()
    failures = asyncio.run(_session(examples, out))
    console.print(
        f"demo finished in {time.perf_counter() - started:.1f} s; outputs in {out}/ "
        f"(records.db, previews/, workpieces/)" + ("" if not failures else f" — {failures} step(s) FAILED")
    )
    return 1 if failures else 0


def register(app: typer.Typer) -> None:
    """Add the command to the root app."""
    app.command("demo")(demo)
