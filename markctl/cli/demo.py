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

from markctl.cli.jobs import load_plan, print_plan, run_batch, write_previews
from markctl.config import load_settings
from markctl.errors import ConfigError
from markctl.profiles import load_profile
from markctl.records import RecordStore
from markctl.service import MarkService

console = Console()
DEMO_MARKER = ".markctl-demo"

STEPS = (
    ("import shipment on the laser", "import", "laser"),
    ("stockpile marks on embedded plates, dot-peen over Modbus/TCP", "stockpile", "peen"),
)


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
                plan = load_plan(examples / name / "manifest.csv", examples / name / "parts.toml", settings,
                                 load_profile(service.profile_of(machine)))  # fmt: skip
                print_plan(plan, machine, set(), {})
                previews = write_previews(plan, out / "previews" / name)
                job = await run_batch(service, plan, machine=machine, operator=operator, exclude=set(),
                                      overrides={}, override_by=None)  # fmt: skip
                console.print(f"{len(previews)} layout previews in {out / 'previews' / name}")
                failures += job.state != "done"
            console.rule("the same import shipment again")
            plan = load_plan(examples / "import" / "manifest.csv", examples / "import" / "parts.toml", settings,
                             load_profile(service.profile_of("laser")))  # fmt: skip
            again = await run_batch(service, plan, machine="laser", operator=operator, exclude=set(),
                                    overrides={}, override_by=None, quiet=True)  # fmt: skip
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
