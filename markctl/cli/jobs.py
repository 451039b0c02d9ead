"""``markctl mark``, ``markctl batch``, ``markctl items``, ``markctl verify``, ``markctl tokens``, ``markctl serve``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from markctl.auth import Role, TokenStore
from markctl.cli.records import RecordsOpt, open_store
from markctl.config import Settings, load_settings
from markctl.errors import ConfigError
from markctl.jobs.manifest import SERIAL_PATTERN, Manifest
from markctl.jobs.runner import BatchReport
from markctl.profiles import load_profile
from markctl.service import JobRun, MarkService

console = Console(stderr=True)
MachineOpt = Annotated[
    str | None, typer.Option("--machine", "-m", help="Machine name or address (e.g. sim://grbl-1.1).")
]
OperatorOpt = Annotated[
    str | None, typer.Option("--operator", help="Who is marking (recorded with every mark).")
]


def _parse_overrides(values: list[str]) -> dict[int, str]:
    out: dict[int, str] = {}
    for value in values:
        line, sep, reason = value.partition(":")
        if not sep or not line.strip().isdigit() or len(reason.strip()) < 3:
            raise ConfigError(
                f"--override {value!r}: write LINE:REASON, e.g. 4:'depth waived by variance 2026-17'"
            )
        out[int(line)] = reason.strip()
    return out


def print_rows(rows: list[dict[str, Any]]) -> None:
    table = Table("line", "item", "verdict", "problems / warnings", title="pre-check")
    for row in rows:
        notes = row["problems"] + row.get("warnings", [])
        style = {"ok": "green", "not compliant": "red", "invalid": "red"}.get(row["verdict"], "")
        table.add_row(str(row["line"]), row["item"] or "", f"[{style}]{row['verdict']}[/]", "\n".join(notes))
    console.print(table)


def print_report(report: BatchReport) -> None:
    table = Table(
        "line", "item", "result", "record", "verification", "message", title=f"batch {report.batch_id}"
    )
    for r in report.results:
        v = r.verification or {}
        verdict = (
            "" if not v else ("pass" if v.get("passed") else "FAIL") + f" ({v.get('coverage', 0):.0%} cut)"
        )
        table.add_row(str(r.line), r.item_key, r.state, str(r.record or ""), verdict, r.message)
    console.print(table)
    console.print("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(report.counts().items())))


async def run_batch(
    service: MarkService,
    manifest: Path,
    catalogue: Path,
    *,
    machine: str,
    operator: str,
    exclude: set[int],
    overrides: dict[int, str],
    override_by: str | None,
    quiet: bool = False,
) -> JobRun:
    """Pre-check, show the report, mark with progress bars; shared by ``batch``, ``mark`` and ``demo``."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, disable=quiet)  # fmt: skip
    tasks: dict[str, TaskID] = {}

    def on_event(event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "batch-started":
            tasks["batch"] = progress.add_task("batch", total=event["items"])
        elif kind == "item-started":
            tasks["item"] = progress.add_task(f"  {event['item']}", total=100)
        elif kind == "progress" and "item" in tasks:
            progress.update(tasks["item"], completed=round(100 * event["fraction"]))
        elif kind == "item-ended":
            progress.update(tasks["item"], completed=100, description=f"  {event['item']}: {event['state']}")
            progress.advance(tasks["batch"])

    with progress:
        job = await service.submit(manifest.read_bytes(), catalogue.read_text("utf-8"), machine=machine,
                                   operator=operator, exclude=exclude, overrides=overrides,
                                   override_by=override_by, wait=True, on_event=on_event)  # fmt: skip
    if not quiet:
        print_rows(job.rows)
        if job.report is not None:
            print_report(job.report)
    return job


def batch(
    manifest: Annotated[Path, typer.Argument(help="CSV: one weapon per row.")],
    catalogue: Annotated[
        Path, typer.Option("--parts", help="Parts catalogue (TOML): surfaces per model/component.")
    ],
    machine: MachineOpt = None,
    operator: OperatorOpt = None,
    records: RecordsOpt = None,
    exclude: Annotated[list[int], typer.Option("--exclude", help="Leave out this manifest line.")] = [],  # noqa: B006
    override: Annotated[
        list[str], typer.Option("--override", help="LINE:REASON mark despite findings.")
    ] = [],  # noqa: B006
    override_by: Annotated[str | None, typer.Option(help="Supervisor giving the overrides.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for burned-workpiece images (simulators).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> int:
    """Pre-check a whole manifest, then mark it; exit 1 unless every item ended marked (or skipped)."""
    _check_out(out)
    settings = load_settings()
    settings.machine(machine)  # refuses an unknown name before anything else
    name = settings.machine_name(machine)
    who = settings.operator(operator)

    async def body(service: MarkService) -> JobRun:
        return await run_batch(service, manifest, catalogue, machine=name, operator=who, exclude=set(exclude),
                               overrides=_parse_overrides(override), override_by=override_by,
                               quiet=as_json)  # fmt: skip

    return _job_exit(asyncio.run(_with_service(settings, records, out, body)), as_json)


def mark(
    request_file: Annotated[Path, typer.Argument(metavar="REQUEST", help="A mark request (TOML or JSON).")],
    serial: Annotated[str, typer.Option(help="The weapon's serial (its identity in the records).")],
    manufacturer: Annotated[
        str, typer.Option(help="The weapon's manufacturer (its identity in the records).")
    ],
    machine: MachineOpt = None,
    operator: OperatorOpt = None,
    records: RecordsOpt = None,
    override: Annotated[str | None, typer.Option(help="Reason to mark despite compliance errors.")] = None,
    override_by: Annotated[str | None, typer.Option(help="Supervisor giving the override.")] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the burned-workpiece image (simulators).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON.")] = False,
) -> int:
    """Mark one weapon from a request file; exit 1 unless it ended marked."""
    _check_out(out)
    from markctl.jobs.manifest import ManifestItem, weapon_key_of
    from markctl.jobs.runner import Plan, prepare
    from markctl.layouts import MarkRequest

    text = request_file.read_text("utf-8")
    request = MarkRequest.from_json(text) if request_file.suffix == ".json" else MarkRequest.from_toml(text)
    if not SERIAL_PATTERN.fullmatch(serial.strip()):
        raise ConfigError(f"--serial {serial!r} is not a serial (letters, digits, space, - / . ; up to 40)")
    if not manufacturer.strip():
        raise ConfigError("--manufacturer is empty: the weapon's identity needs it")
    engraved = request.fields.get("serial")
    if engraved is not None and engraved.strip().upper() != serial.strip().upper():
        raise ConfigError(
            f"the request engraves serial {engraved!r} but --serial says {serial!r}",
            hint="the records must name the weapon that is marked: make them agree",
        )
    settings = load_settings()
    settings.machine(machine)  # refuses an unknown name before anything else
    name = settings.machine_name(machine)
    who = settings.operator(operator)

    async def body(service: MarkService) -> JobRun:
        profile = load_profile(service.profile_of(name))
        retargeted = request.model_copy(update={"machine": profile.id})
        item = ManifestItem(1, weapon_key_of(manufacturer, serial), request.component.name.value, request.profile,
                            {"serial": serial, "manufacturer": manufacturer}, dict(request.fields))  # fmt: skip
        plan = Plan(Manifest(str(request_file), ()), profile, [prepare(retargeted, profile, item)])
        job = service.new_job(name, who)
        if not as_json:
            console.print(f"marking {item.item_key} on {name}")
        await service.submit_plan(plan, job, overrides={1: override} if override else {},
                                  override_by=override_by, wait=True)  # fmt: skip
        if not as_json:
            print_rows(job.rows)
            if job.report is not None:
                print_report(job.report)
        return job

    return _job_exit(asyncio.run(_with_service(settings, records, out, body)), as_json)


def _check_out(out: Path | None) -> None:
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: not a folder")


async def _with_service(
    settings: Settings,
    records: str | None,
    out: Path | None,
    body: Callable[[MarkService], Awaitable[JobRun]],
) -> JobRun:
    """Run ``body`` with a service on the records, closing machines (safe state) and records after."""
    store = open_store(records)
    service = MarkService(settings, store, out_dir=out)
    try:
        return await body(service)
    finally:
        await service.close()
        store.close()


def _job_exit(job: JobRun, as_json: bool) -> int:
    if as_json:
        typer.echo(json.dumps(job.summary(), indent=2, default=str))
    if job.state == "rejected":
        typer.echo(f"markctl: {job.error}; nothing was marked", err=True)
        return 1
    return 0 if job.state == "done" else 1


def jobs_cmd(
    records: RecordsOpt = None, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> int:
    """Batches in the records, with how many items ended in each state."""
    counts: dict[str, dict[str, int]] = {}
    with open_store(records) as store:
        for item in store.items():
            per = counts.setdefault(item.batch_id or "-", {})
            per[item.state.value] = per.get(item.state.value, 0) + 1
    if as_json:
        typer.echo(json.dumps(counts, indent=2))
        return 0
    table = Table("batch", "planned", "started", "marked", "failed", "unknown")
    for batch_id, per in counts.items():
        table.add_row(
            batch_id, *(str(per.get(s, 0)) for s in ("planned", "started", "marked", "failed", "unknown"))
        )
    Console().print(table)
    return 0


def verify_cmd(
    image: Annotated[Path, typer.Option("--image", help="Photo (or simulator PNG) of the applied mark.")],
    record: Annotated[int, typer.Option("--record", help="Any record of the item (sequence number).")],
    operator: OperatorOpt = None,
    px_per_mm: Annotated[float, typer.Option(help="Scale for the comparison raster.")] = 10.0,
    records: RecordsOpt = None,
) -> int:
    """Check a photo of a mark against the recorded layout; the result is recorded. Exit 1 if it fails."""
    settings = load_settings()
    who = settings.operator(operator)
    with open_store(records) as store:
        service = MarkService(settings, store)
        stored = service.verify_image(record, image, who, px_per_mm=px_per_mm)
    result = stored.data["verification"]
    typer.echo(f"{'PASS' if result['passed'] else 'FAIL'}: {result['detail']} (recorded as {stored.seq})")
    return 0 if result["passed"] else 1


def resolve(
    item_key: Annotated[str, typer.Argument(metavar="ITEM_KEY")],
    outcome: Annotated[str, typer.Option(help="marked or not-marked, as inspection found.")],
    reason: Annotated[str, typer.Option(help="What the inspection found.")],
    supervisor: Annotated[str, typer.Option(help="Who resolves (recorded).")],
    records: RecordsOpt = None,
) -> int:
    """Resolve an item whose cycle outcome is unknown, after inspecting the weapon."""
    if outcome not in ("marked", "not-marked"):
        raise ConfigError("--outcome must be marked or not-marked")
    with open_store(records) as store:
        record = store.append(
            item_key, "resolved", f"supervisor:{supervisor}", {"outcome": outcome, "reason": reason}
        )
    typer.echo(f"recorded {record.seq}: {item_key} -> {record.state}")
    return 0


def allow_remark(
    item_key: Annotated[str, typer.Argument(metavar="ITEM_KEY")],
    reason: Annotated[str, typer.Option(help="Why the mark must be applied again.")],
    supervisor: Annotated[str, typer.Option(help="Who allows it (recorded).")],
    records: RecordsOpt = None,
) -> int:
    """Allow a marked item to be marked again (supervisor override, recorded with its reason)."""
    with open_store(records) as store:
        record = store.append(item_key, "override", f"supervisor:{supervisor}", {"reason": reason})
    typer.echo(f"recorded {record.seq}: {item_key} may be marked again")
    return 0


tokens_app = typer.Typer(help="API tokens (stored hashed beside the records).", no_args_is_help=True)


@tokens_app.command("create")
def tokens_create(
    name: str,
    role: Annotated[str, typer.Option(help="operator, supervisor or auditor.")],
    records: RecordsOpt = None,
) -> int:
    """Create a token; it is printed once and stored only as a hash."""
    with open_store(records) as store:
        token = TokenStore(store).create(name, Role(role) if role in {r.value for r in Role} else role)
    typer.echo(token)
    return 0


@tokens_app.command("revoke")
def tokens_revoke(name: str, records: RecordsOpt = None) -> int:
    with open_store(records) as store:
        if not TokenStore(store).revoke(name):
            raise ConfigError(f"no token named {name!r}")
    return 0


@tokens_app.command("list")
def tokens_list(records: RecordsOpt = None) -> int:
    with open_store(records) as store:
        for name, role, revoked in TokenStore(store).list():
            typer.echo(f"{name}\t{role.value}\t{'revoked' if revoked else 'active'}")
    return 0


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    records: RecordsOpt = None,
) -> int:
    """Run the HTTP service (uvicorn)."""
    import uvicorn

    from markctl.api import create_app

    settings = load_settings()
    with open_store(records) as store:  # --records > MARKCTL_RECORDS > markctl.toml
        uvicorn.run(create_app(settings, store=store), host=host, port=port, log_level="info",
                    timeout_graceful_shutdown=int(settings.service.shutdown_grace_s))  # fmt: skip
    return 0


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
    app.command("mark")(mark)
    app.command("jobs")(jobs_cmd)
    app.command("verify")(verify_cmd)
    items = typer.Typer(help="Supervisor actions on items.", no_args_is_help=True)
    items.command("resolve")(resolve)
    items.command("allow-remark")(allow_remark)
    app.add_typer(items, name="items")
    app.add_typer(tokens_app, name="tokens")
    app.command("serve")(serve)
