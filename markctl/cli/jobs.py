"""``markctl mark``, ``markctl batch``, ``markctl items``, ``markctl verify``, ``markctl tokens``, ``markctl serve``."""

from __future__ import annotations

import asyncio
import json
import shlex
import socket
import sys
import textwrap
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from markctl.address import parse_address
from markctl.auth import Role, TokenStore
from markctl.cli.records import RecordsOpt, open_store, wrote_to
from markctl.config import Settings, load_settings
from markctl.errors import ConfigError
from markctl.jobs import runner
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import SERIAL_PATTERN, Manifest, RowIssue, open_manifest
from markctl.jobs.runner import BatchReport, Plan, Verdict, file_stem, precheck
from markctl.layouts import MarkRequest
from markctl.machines import check_machine
from markctl.profiles import FirmwareProfile
from markctl.records import RecordStore
from markctl.service import JobRun, MarkService

console = Console(stderr=True)  # progress, prompts, notes: stderr
report_console = Console()  # the pre-check table and the batch report: stdout, so `> report.txt` keeps them
if not report_console.is_terminal:
    report_console.width = 200  # a report in a file keeps whole item keys (rich would fit 80 columns)
MachineOpt = Annotated[
    str | None,
    typer.Option(
        "--machine", "-m", metavar="NAME|ADDRESS", help="Machine name from markctl.toml, or an address."
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile",
        metavar="PROFILE",
        help="Firmware profile of the machine at --machine (needed for hardware addresses).",
    ),
]
OperatorOpt = Annotated[
    str | None, typer.Option("--operator", metavar="NAME", help="Who is marking (recorded with every mark).")
]
RESOLVE_HINT = "markctl items resolve {key} --outcome marked|not-marked --reason TEXT --supervisor NAME"


def input_file(path: Path, what: str) -> Path:
    """``path`` if it is a readable file; else ConfigError naming ``what`` (the argument) and the path."""
    if not path.exists():
        raise ConfigError(f"{what} {path}: no such file", hint="check the path and the current folder")
    if path.is_dir():
        raise ConfigError(f"{what} {path}: is a folder, not a file")
    return path


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


def _check_override_by(overrides: object, override_by: str | None) -> None:
    if overrides and not (override_by and override_by.strip()):
        raise ConfigError(
            "--override needs --override-by NAME: the supervisor who gives it is recorded with it"
        )


def resolve_machine(machine: str | None, profile: str | None) -> tuple[Settings, str, FirmwareProfile]:
    """The settings (with this machine's entry), its name and its profile, checked without connecting.

    Everything that can be judged before a connection (address syntax, option names and values,
    the profile, the serial device) is judged here, before the records are opened.
    """
    settings = load_settings()
    name = settings.machine_name(machine)
    entry = settings.machine(machine)
    if profile is not None:
        entry = entry.model_copy(update={"profile": profile})
    checked = check_machine(entry.address, entry.profile)
    entry = entry.model_copy(update={"profile": checked.profile.id})
    settings = settings.model_copy(update={"machines": {**settings.machines, name: entry}})
    return settings, name, checked.profile


def _duration(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class PlanTable:
    """The pre-check table, printed as the verdicts come (a 10,000-row manifest is not held to be
    printed at the end), then the batch total.

    Rows go out in blocks of fixed-width columns, in manifest order: a row's manifest problems
    (``issues``, a list the manifest reader fills as it reads) before the next item judged after it.
    """

    CHUNK = 100

    def __init__(self, exclude: set[int] | None = None, overrides: Mapping[int, str] | None = None) -> None:
        self.issues: list[RowIssue] = []
        self._shown_issues = 0
        self._exclude, self._overrides = exclude or set(), overrides or {}
        self._rows: list[tuple[int, str, str, float | None, list[str]]] = []
        self._chunks = 0
        self.todo = 0
        self.exempt = 0
        self.total_s = 0.0

    def verdict(self, v: Verdict) -> None:
        """One item judged: its row (after the manifest problems of the lines before it)."""
        self._issues_before(v.item.line)
        self.row(v.item.line, v.item.item_key, v.verdict, v.cycle_s, [*v.problems, *v.warnings])
        if v.item.line in self._exclude or v.verdict == "invalid":
            return
        if v.verdict == "exempt":  # recorded, not marked: no machine time
            self.exempt += 1
        elif v.passed or v.item.line in self._overrides:
            self.todo += 1
            self.total_s += v.cycle_s or 0.0

    def _issues_before(self, line: int | None) -> None:
        while self._shown_issues < len(self.issues) and (
            line is None or self.issues[self._shown_issues].line <= line
        ):
            issue = self.issues[self._shown_issues]
            self.row(issue.line, "", "invalid", None, [f"{issue.field}: {issue.message}"])
            self._shown_issues += 1

    def row(self, line: int, item: str, verdict: str, eta: float | None, notes: list[str]) -> None:
        self._rows.append((line, item, verdict, eta, notes))
        if len(self._rows) >= self.CHUNK:
            self.flush()

    _WIDTHS = (6, 40, 13, 9)  # line, item, verdict, est. time; then the problems, wrapped
    _COLOURS = {"ok": "\x1b[32m", "exempt": "\x1b[36m", "not compliant": "\x1b[31m", "invalid": "\x1b[31m"}

    def flush(self) -> None:
        """Print the rows held, as plain fixed-width text (a rich Table costs ~0.6 ms a row, as much
        as judging it; this a few microseconds). Findings are printed as written: "[ITI-8b] ..."."""
        if not self._rows:
            return
        w_line, w_item, w_verdict, w_eta = self._WIDTHS
        indent = w_line + w_item + w_verdict + w_eta + 8
        room = max(30, report_console.width - indent)
        colour = report_console.is_terminal and report_console.color_system is not None
        out: list[str] = []
        if self._chunks == 0:
            out.append("pre-check")
            heads = (
                "line".rjust(w_line),
                "item".ljust(w_item),
                "verdict".ljust(w_verdict),
                "est. time".rjust(w_eta),
            )
            out.append("  ".join(heads) + "  problems / warnings")
            out.append("  ".join("-" * w for w in self._WIDTHS) + "  " + "-" * min(room, 40))
        for line, item, verdict, eta, notes in self._rows:
            shown = verdict.ljust(w_verdict)
            if colour and verdict in self._COLOURS:
                shown = f"{self._COLOURS[verdict]}{shown}\x1b[0m"
            wrapped = [part for note in notes for part in textwrap.wrap(note, room) or [""]]
            eta_text = _duration(eta) if eta is not None else ""
            head = f"{str(line).rjust(w_line)}  {item.ljust(w_item)}  {shown}  {eta_text.rjust(w_eta)}"
            out.append(f"{head}  {wrapped[0]}".rstrip() if wrapped else head.rstrip())
            out.extend(" " * indent + part for part in wrapped[1:])
        report_console.file.write("\n".join(out) + "\n")
        report_console.file.flush()
        self._rows = []
        self._chunks += 1

    def finish(self, machine: str, profile_id: str) -> None:
        """The rows left, and the batch total."""
        self._issues_before(None)
        self.flush()
        report_console.print(
            f"{self.todo} item(s) to mark on {machine} ({profile_id}): estimated cycle time "
            f"{_duration(self.total_s)} (items already marked are skipped; loading parts is extra)"
            + (
                f"; {self.exempt} item(s) recorded exempt, not marked (temporary import)"
                if self.exempt
                else ""
            )
        )


def print_rows(rows: list[dict[str, Any]], times: dict[str, float] | None = None) -> None:
    """Rows of :meth:`Plan.rows` as the pre-check table (``times``: estimated seconds per item key)."""
    times = times or {}
    table = PlanTable()
    for row in rows:
        table.row(row["line"], row["item"] or "", row["verdict"], times.get(row["item"] or ""),
                  row["problems"] + row.get("warnings", []))  # fmt: skip
    table.flush()


def print_plan(plan: Plan, machine: str, exclude: set[int], overrides: dict[int, str]) -> None:
    """The pre-check table of a plan with estimated times and the batch total."""
    table = PlanTable(exclude, overrides)
    table.issues = list(plan.manifest.issues)
    for verdict in plan.verdicts:
        table.verdict(verdict)
    table.finish(machine, plan.machine_profile.id)


def print_report(report: BatchReport) -> None:
    table = Table(
        "line", "item", "result", "record", "verification", "message", title=f"batch {report.batch_id}"
    )
    for r in report.results:
        v = r.verification or {}
        verdict = (
            "" if not v else ("pass" if v.get("passed") else "FAIL") + f" ({v.get('coverage', 0):.0%} cut)"
        )
        state = f"{r.state}, INSPECT" if r.inspect else r.state
        table.add_row(str(r.line), Text(r.item_key), state, str(r.record or ""), verdict, Text(r.message))
    report_console.print(table)
    report_console.print("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(report.counts().items())))


def item_problems(report: BatchReport) -> list[str]:
    """One line per item that did not end marked, naming the item and what to do next."""
    lines = []
    for r in report.results:
        if r.state == "unknown":
            lines.append(f"{r.item_key}: the cycle ended part-way ({r.message}); inspect the weapon, then "
                         f"{RESOLVE_HINT.format(key=shlex.quote(r.item_key))}")  # fmt: skip
        elif r.state == "refused" and r.message.startswith(("unknown", "started")):
            lines.append(f"{r.item_key}: refused, its last cycle's outcome is unknown; inspect the weapon, then "
                         f"{RESOLVE_HINT.format(key=shlex.quote(r.item_key))}")  # fmt: skip
        elif r.state == "refused" and r.message.startswith("batch stopped"):
            continue  # said once below
        elif r.state in ("failed", "refused"):
            lines.append(f"{r.item_key}: {r.state}: {r.message}")
    stopped = sum(1 for r in report.results if r.state == "refused" and r.message.startswith("batch stopped"))
    if stopped:
        lines.append(f"{stopped} item(s) after it were not started: re-run the batch once it is resolved")
    return lines


def confirm(question: str, yes: bool) -> None:
    """Ask before cutting; ``--yes`` skips it; no terminal to ask on is an error naming --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfigError("nothing was marked: the batch asks for confirmation and stdin is not a terminal",
                          hint="pass --yes to mark without asking")  # fmt: skip
    if not typer.confirm(question, default=False, err=True):
        typer.echo("markctl: declined: nothing was marked", err=True)
        raise typer.Exit(1)


async def run_batch(
    service: MarkService,
    plan: Plan,
    *,
    machine: str,
    operator: str,
    exclude: set[int],
    overrides: dict[int, str],
    override_by: str | None,
    quiet: bool = False,
    continue_on_verify_fail: bool = False,
    job_box: list[JobRun] | None = None,
) -> JobRun:
    """Mark a pre-checked plan with progress bars (stderr, terminals only); shared by ``batch``,
    ``mark`` and ``demo``. The caller showed the plan and asked for confirmation."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, disable=quiet or not console.is_terminal)  # fmt: skip
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

    job = service.new_job(machine, operator)
    if job_box is not None:
        job_box.append(job)
    with progress:
        await service.submit_plan(plan, job, exclude=exclude, overrides=overrides, override_by=override_by,
                                  wait=True, on_event=on_event,
                                  continue_on_verify_fail=continue_on_verify_fail)  # fmt: skip
    if not quiet and job.report is not None:
        print_report(job.report)
    return job


def load_plan(
    manifest: Path,
    catalogue: Path,
    settings: Settings,
    profile: FirmwareProfile,
    table: PlanTable | None = None,
) -> Plan:
    """Read the manifest row by row and pre-check every item (no machine, no records); ``table``
    prints each row as it is judged. Memory does not grow with the manifest (runner.precheck)."""
    reader = open_manifest(manifest, default_mark_profile=settings.defaults.mark_profile)
    if table is not None:
        table.issues = reader.manifest.issues  # filled as the rows are read
    return precheck(
        reader, Catalogue.load(catalogue), profile, on_verdict=None if table is None else table.verdict
    )


def _blocked_error(plan: Plan, exclude: set[int], overrides: dict[int, str]) -> ConfigError | None:
    blocked = plan.blocking(exclude, overrides)
    if not blocked:
        return None
    lines = sorted(blocked)
    first = blocked[lines[0]][0]
    first = first if first.startswith("line ") else f"line {lines[0]}: {first}"
    more = f" (and {len(lines) - 1} more line(s), see the table)" if len(lines) > 1 else ""
    return ConfigError(
        f"rows with errors block the batch: lines {', '.join(map(str, lines))}; nothing was marked: {first}{more}",
        hint="fix them, leave them out with --exclude LINE, or have a supervisor override findings "
        "with --override LINE:REASON --override-by NAME",
    )


_SHEET_TILES = 100  # items per contact sheet: a sheet stays a few MB, memory stays flat


def write_previews(plan: Plan, out: Path) -> list[Path]:
    """Every item's preview (SVG and PNG, findings drawn) and contact sheets of the manifest
    (``contact-sheet.png``, then ``contact-sheet-2.png`` ... for every 100 items).

    Items are composed and checked again, one at a time, without their programs: no stroke is
    ordered for a preview."""
    from PIL import Image, ImageDraw

    from markctl.layouts import render_svg
    from markctl.layouts.preview import render_image

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    thumbs: list[tuple[str, Image.Image]] = []
    cell, label = 360, 16

    def sheet_of(thumbs: list[tuple[str, Image.Image]], number: int) -> Path:
        cols = min(4, len(thumbs))
        height = max(t.height for _, t in thumbs) + label + 8
        rows = -(-len(thumbs) // cols)
        sheet = Image.new("RGB", (cols * cell, rows * height), "white")
        draw = ImageDraw.Draw(sheet)
        for index, (caption, thumb) in enumerate(thumbs):
            x, y = (index % cols) * cell, (index // cols) * height
            sheet.paste(thumb, (x + 4, y + label + 4))
            draw.text((x + 4, y + 2), caption if len(caption) <= 58 else caption[:55] + "...", fill="black")
        contact = out / ("contact-sheet.png" if number == 1 else f"contact-sheet-{number}.png")
        sheet.save(contact, format="PNG")
        return contact

    sheets = 0
    for prepared in plan.previews():
        if prepared.layout is None or prepared.report is None:
            continue
        stem = file_stem(prepared.item.item_key)
        svg = out / f"{stem}.svg"
        svg.write_text(render_svg(prepared.layout, prepared.report.findings), encoding="utf-8")
        image = render_image(prepared.layout, prepared.report.findings, px_per_mm=20)
        png = out / f"{stem}.png"
        image.save(png, format="PNG")
        written += [svg, png]
        verdict = "ok" if prepared.passed else "NOT COMPLIANT"
        image.thumbnail((cell - 8, cell - 8))
        thumbs.append((f"line {prepared.item.line} {prepared.item.item_key} [{verdict}]", image))
        if len(thumbs) == _SHEET_TILES:
            sheets += 1
            written.append(sheet_of(thumbs, sheets))
            thumbs = []
    if thumbs:
        written.append(sheet_of(thumbs, sheets + 1))
    return written


def batch(
    manifest: Annotated[Path, typer.Argument(metavar="MANIFEST.csv", help="CSV: one weapon per row.")],
    catalogue: Annotated[
        Path,
        typer.Option("--parts", metavar="PARTS.toml", help="Parts catalogue: surfaces per model/component."),
    ],
    machine: MachineOpt = None,
    profile: ProfileOpt = None,
    operator: OperatorOpt = None,
    records: RecordsOpt = None,
    exclude: Annotated[
        list[int],
        typer.Option("--exclude", metavar="LINE", help="Leave out this manifest line (repeatable)."),
    ] = [],  # noqa: B006
    override: Annotated[
        list[str],
        typer.Option(
            "--override", metavar="LINE:REASON", help="Mark this line despite its findings (repeatable)."
        ),
    ] = [],  # noqa: B006
    override_by: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="Supervisor giving the overrides and recording the exemptions (recorded)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Folder for burned-workpiece images, or the previews of --dry-run."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Mark without asking for confirmation.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Pre-check and show the table (previews too with --out); touch no machine."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON on stdout.")] = False,
    continue_on_verify_fail: Annotated[
        bool,
        typer.Option(help="Go on marking after an item's check fails (it is flagged for inspection anyway)."),
    ] = False,
) -> int:
    """Pre-check a manifest, show what will be cut and how long it takes, ask, then mark it.

    Exit 1 unless every item ended marked (or skipped) and passed its check."""
    _check_out(out)
    input_file(manifest, "manifest")
    input_file(catalogue, "--parts")
    parsed_overrides = _parse_overrides(override)
    _check_override_by(parsed_overrides, override_by)
    settings, name, machine_profile = resolve_machine(machine, profile)
    who = None if dry_run else settings.operator(operator)
    store = None if dry_run else _registry_for(settings, name, records)  # before any work or question
    try:
        return _batch(settings, name, machine_profile, store, who, manifest, catalogue, exclude, parsed_overrides,
                      override_by, out, yes, dry_run, as_json, continue_on_verify_fail, records)  # fmt: skip
    finally:
        if store is not None:
            store.close()


def _batch(
    settings: Settings,
    name: str,
    machine_profile: FirmwareProfile,
    store: RecordStore | None,
    who: str | None,
    manifest: Path,
    catalogue: Path,
    exclude: list[int],
    parsed_overrides: dict[int, str],
    override_by: str | None,
    out: Path | None,
    yes: bool,
    dry_run: bool,
    as_json: bool,
    continue_on_verify_fail: bool,
    records: str | None,
) -> int:
    excluded = set(exclude)
    table = None if as_json else PlanTable(excluded, parsed_overrides)
    plan = load_plan(manifest, catalogue, settings, machine_profile, table)
    if table is not None:
        table.finish(name, machine_profile.id)
    if dry_run:
        if out is None:
            console.print("dry run: no machine was touched, nothing was recorded (--out DIR writes previews)")
        else:
            written = write_previews(plan, out)
            console.print(f"dry run: {len(written)} file(s) in {out} (contact sheet: {out / 'contact-sheet.png'}); "
                          "no machine was touched, nothing was recorded")  # fmt: skip
        return 0 if not plan.blocking(excluded, parsed_overrides) else 1
    blocked = _blocked_error(plan, excluded, parsed_overrides)
    if blocked is not None:
        if as_json:
            typer.echo(
                json.dumps({"state": "rejected", "error": str(blocked), "rows": plan.rows()}, indent=2)
            )
        typer.echo(f"markctl: error: {blocked}", err=True)
        return 1
    runner.check_exempt_supervisor(plan, excluded, override_by)  # before asking
    confirm(f"Mark these items on {name}?", yes)
    assert who is not None and store is not None
    job_box: list[JobRun] = []

    async def body(service: MarkService) -> JobRun:
        return await run_batch(service, plan, machine=name, operator=who, exclude=excluded,
                               overrides=parsed_overrides, override_by=override_by, quiet=as_json,
                               job_box=job_box, continue_on_verify_fail=continue_on_verify_fail)  # fmt: skip

    try:
        job = asyncio.run(_with_service(settings, store, out, body))
    except KeyboardInterrupt:
        return _interrupted(settings, records, job_box)
    return _job_exit(job, as_json)


def _interrupted(settings: Settings, records: str | None, job_box: list[JobRun]) -> int:
    """Ctrl-C during a batch: the runner recorded the item in flight; say what became of it."""
    lines = ["interrupted (Ctrl-C): the machine was brought to its safe state"]
    if job_box:
        with open_store(records) as store:
            for item in store.items(batch_id=job_box[0].id):
                if item.state.value in ("unknown", "started"):
                    lines.append(f"{item.item_key} is recorded '{item.state.value}' (cut part-way, or not at all): "
                                 f"inspect the weapon, then {RESOLVE_HINT.format(key=shlex.quote(item.item_key))}")  # fmt: skip
                elif item.state.value == "failed":
                    lines.append(f"{item.item_key} is recorded 'failed' (nothing was cut): a re-run marks it")
    if len(lines) == 1:
        lines[0] += "; no item was in the middle of a cycle"
    for line in lines:
        typer.echo(f"markctl: {line}", err=True)
    return 130


def mark(
    request_file: Annotated[Path, typer.Argument(metavar="REQUEST", help="A mark request (TOML or JSON).")],
    serial: Annotated[
        str, typer.Option(metavar="SERIAL", help="The weapon's serial (its identity in the records).")
    ],
    manufacturer: Annotated[
        str, typer.Option(metavar="NAME", help="The weapon's manufacturer (its identity in the records).")
    ],
    machine: MachineOpt = None,
    profile: ProfileOpt = None,
    operator: OperatorOpt = None,
    records: RecordsOpt = None,
    override: Annotated[
        str | None, typer.Option(metavar="REASON", help="Reason to mark despite compliance errors.")
    ] = None,
    override_by: Annotated[
        str | None, typer.Option(metavar="NAME", help="Supervisor giving the override (recorded).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Folder for the burned-workpiece image (simulators).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON on stdout.")] = False,
) -> int:
    """Mark one weapon from a request file; exit 1 unless it ended marked."""
    _check_out(out)
    input_file(request_file, "REQUEST")
    _check_override_by(override, override_by)
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
    settings, name, machine_profile = resolve_machine(machine, profile)
    who = settings.operator(operator)
    with _registry_for(settings, name, records) as store:
        return _mark(settings, name, machine_profile, store, who, request, request_file, serial, manufacturer,
                     override, override_by, out, as_json, records)  # fmt: skip


def _mark(
    settings: Settings,
    name: str,
    machine_profile: FirmwareProfile,
    store: RecordStore,
    who: str,
    request: MarkRequest,
    request_file: Path,
    serial: str,
    manufacturer: str,
    override: str | None,
    override_by: str | None,
    out: Path | None,
    as_json: bool,
    records: str | None,
) -> int:
    from markctl.jobs.manifest import ManifestItem, weapon_key_of
    from markctl.jobs.runner import prepare

    retargeted = request.model_copy(update={"machine": machine_profile.id})
    item = ManifestItem(1, weapon_key_of(manufacturer, serial), request.component.name.value, request.profile,
                        {"serial": serial, "manufacturer": manufacturer}, dict(request.fields))  # fmt: skip
    prepared = prepare(retargeted, machine_profile, item)
    if request.exemption is not None:
        return _mark_exempt(prepared, store, who, as_json)
    plan = Plan(Manifest(str(request_file), ()), machine_profile, [prepared])
    overrides = {1: override} if override else {}
    if not as_json:
        print_plan(plan, name, set(), overrides)
    problems = plan.blocking(set(), overrides).get(1)
    if problems:
        typer.echo(f"markctl: error: the request cannot be marked, nothing was marked: {problems[0]} "
                   "(fix the request, or have a supervisor override findings with --override REASON "
                   "--override-by NAME)", err=True)  # fmt: skip
        return 1
    job_box: list[JobRun] = []

    async def body(service: MarkService) -> JobRun:
        return await run_batch(service, plan, machine=name, operator=who, exclude=set(), overrides=overrides,
                               override_by=override_by, quiet=as_json, job_box=job_box)  # fmt: skip

    try:
        job = asyncio.run(_with_service(settings, store, out, body))
    except KeyboardInterrupt:
        return _interrupted(settings, records, job_box)
    return _job_exit(job, as_json)


def _mark_exempt(prepared: runner.Prepared, store: RecordStore, who: str, as_json: bool) -> int:
    """``markctl mark`` of a request with an ``[exemption]``: record it exempt (its ``recorded_by`` is
    the supervisor); nothing is composed, no machine is opened. Exit 1 unless it is recorded exempt."""
    assert prepared.request is not None and prepared.request.exemption is not None
    if not as_json:
        print_rows([prepared.verdict().row()])
    result = runner.record_exemption(prepared, store, who, prepared.request.exemption.recorded_by)
    if result.record is not None and result.state == "exempt":
        wrote_to(store)
    if as_json:
        typer.echo(json.dumps({"item": result.item_key, "state": result.state, "message": result.message,
                               "record": result.record}, indent=2))  # fmt: skip
    else:
        typer.echo(f"{result.item_key}: {result.state}: {result.message}" + (
            f" (record {result.record})" if result.record else ""))  # fmt: skip
    return 0 if result.state in ("exempt", "skipped") else 1


def _check_out(out: Path | None) -> None:
    if out is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: not a folder")


def _registry_for(settings: Settings, name: str, records: str | None) -> RecordStore:
    """The registry a job will write to, opened before any work or question: it must exist, and take
    this machine's marks (a production registry real ones, a training registry simulated ones)."""
    store = open_store(records)
    try:
        address = settings.machine(name).address
        store.check_machine(parse_address(address).is_simulated, address)
    except BaseException:
        store.close()
        raise
    return store


async def _with_service(
    settings: Settings,
    store: RecordStore,
    out: Path | None,
    body: Callable[[MarkService], Awaitable[JobRun]],
) -> JobRun:
    """Run ``body`` with a service on the registry, closing machines (safe state) after."""
    before = store.head()
    try:
        service = MarkService(settings, store, out_dir=out)
        try:
            return await body(service)
        finally:
            await service.close()
    finally:
        if store.head() != before:
            wrote_to(store)


def _job_exit(job: JobRun, as_json: bool) -> int:
    """Exit code of a finished job; every reason it is not 0 is said on stderr, one line each."""
    if as_json:
        typer.echo(json.dumps(job.summary(), indent=2, default=str))
    if job.state == "rejected":
        typer.echo(f"markctl: error: {job.error}; nothing was marked", err=True)
        return 1
    if job.error:
        typer.echo(f"markctl: error: {' '.join(job.error.split())}", err=True)
    if job.report is not None:
        for line in item_problems(job.report):
            typer.echo(f"markctl: {line}", err=True)
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
    states = ("planned", "started", "marked", "exempt", "failed", "unknown")
    table = Table("batch", *states)
    for batch_id, per in counts.items():
        table.add_row(batch_id, *(str(per.get(s, 0)) for s in states))
    Console().print(table)
    return 0


def verify_cmd(
    image: Annotated[Path, typer.Option("--image", help="Photo (or simulator PNG) of the applied mark.")],
    record: Annotated[int, typer.Option("--record", help="Any record of the item (sequence number).")],
    operator: OperatorOpt = None,
    px_per_mm: Annotated[
        float | None,
        typer.Option(
            help="Pixels per mm of the photo, if known; the scale is measured from the photo anyway."
        ),
    ] = None,
    records: RecordsOpt = None,
) -> int:
    """Read a photo of a mark back against the recorded layout (each character, the Data Matrix, each
    dot); the result is recorded as a new record. Exit 1 if it fails."""
    input_file(image, "--image")
    settings = load_settings()
    who = settings.operator(operator)
    with open_store(records) as store:
        service = MarkService(settings, store)
        stored = service.verify_image(record, image, who, px_per_mm=px_per_mm)
    result = stored.data["verification"]
    typer.echo(f"{'PASS' if result['passed'] else 'FAIL'}: {result['detail']} (recorded as {stored.seq})")
    if not result["passed"]:
        typer.echo(
            "next: inspect the weapon and the photo; a supervisor decides (markctl items allow-remark)"
        )
    return 0 if result["passed"] else 1


def resolve(
    item_key: Annotated[
        str, typer.Argument(metavar="ITEM_KEY", help="MAKER|SERIAL|component|profile, quoted.")
    ],
    outcome: Annotated[str, typer.Option(help="marked or not-marked, as inspection found.")],
    reason: Annotated[str, typer.Option(help="What the inspection found.")],
    supervisor: Annotated[str, typer.Option(help="Who resolves (recorded).")],
    records: RecordsOpt = None,
) -> int:
    """Resolve an item whose cycle outcome is unknown, after inspecting the weapon."""
    if outcome not in ("marked", "not-marked"):
        raise ConfigError("--outcome must be marked or not-marked")
    from markctl.jobs.owner import owner_is_gone

    with open_store(records) as store:
        written = store.resolve(item_key, outcome, reason, f"supervisor:{supervisor}",
                                owner_gone=lambda started: owner_is_gone(started.data.get("owner")))  # fmt: skip
        wrote_to(store)
    for record in written:
        typer.echo(f"recorded {record.seq}: {item_key} -> {record.state}")
    return 0


def allow_remark(
    item_key: Annotated[
        str, typer.Argument(metavar="ITEM_KEY", help="MAKER|SERIAL|component|profile, quoted.")
    ],
    reason: Annotated[str, typer.Option(help="Why the mark must be applied again.")],
    supervisor: Annotated[str, typer.Option(help="Who allows it (recorded).")],
    records: RecordsOpt = None,
) -> int:
    """Allow a marked item to be marked again (supervisor override, recorded with its reason)."""
    with open_store(records) as store:
        record = store.append(item_key, "override", f"supervisor:{supervisor}", {"reason": reason})
        wrote_to(store)
    typer.echo(f"recorded {record.seq}: {item_key} may be marked again")
    return 0


def end_exemption(
    item_key: Annotated[
        str, typer.Argument(metavar="ITEM_KEY", help="MAKER|SERIAL|component|profile, quoted.")
    ],
    reason: Annotated[str, typer.Option(help="Why the exemption ends (e.g. the weapon stays: mark it).")],
    supervisor: Annotated[str, typer.Option(help="Who ends it (recorded).")],
    records: RecordsOpt = None,
) -> int:
    """End a temporary-import exemption (recorded with its reason), so that the weapon can be marked."""
    if len(reason.strip()) < 3 or not supervisor.strip():
        raise ConfigError("ending an exemption needs --reason (a few words) and --supervisor NAME")
    with open_store(records) as store:
        record = store.append(item_key, "exemption-ended", f"supervisor:{supervisor.strip()}",
                              {"reason": reason.strip()})  # fmt: skip
        wrote_to(store)
    typer.echo(f"recorded {record.seq}: {item_key} is no longer exempt; the next batch or mark marks it")
    return 0


tokens_app = typer.Typer(help="API tokens (stored hashed beside the records).", no_args_is_help=True)


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Who or what uses the token, e.g. depot-1.")],
    role: Annotated[str, typer.Option(help="operator, supervisor or auditor.")],
    records: RecordsOpt = None,
) -> int:
    """Create a token; it is printed once and stored only as a hash."""
    with open_store(records) as store:
        token = TokenStore(store).create(name, Role(role) if role in {r.value for r in Role} else role)
        wrote_to(store)
    typer.echo(token)
    return 0


@tokens_app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The token's name.")], records: RecordsOpt = None
) -> int:
    """Revoke a token at once; requests carrying it are refused from then on."""
    with open_store(records) as store:
        if not TokenStore(store).revoke(name):
            raise ConfigError(f"no token named {name!r}")
        wrote_to(store)
    return 0


@tokens_app.command("list")
def tokens_list(records: RecordsOpt = None) -> int:
    """List token names, roles and whether each is active (tokens themselves are never shown again)."""
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

    _check_listen(host, port)
    settings = load_settings()
    with open_store(records) as store:  # --records > MARKCTL_RECORDS > markctl.toml
        typer.echo(f"records: the {store.registry.describe()}", err=True)
        uvicorn.run(create_app(settings, store=store), host=host, port=port, log_level="info",
                    timeout_graceful_shutdown=int(settings.service.shutdown_grace_s))  # fmt: skip
    return 0


def _check_listen(host: str, port: int) -> None:
    """Refuse a host/port the service could not listen on, in one line, before the records open
    (uvicorn would log its own error and exit)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(address)
    except OSError as exc:
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there: {(exc.strerror or str(exc)).lower()}",
            hint="is another service using the port? pick another with --port",
        ) from exc


def register(app: typer.Typer) -> None:
    app.command("batch")(batch)
    app.command("mark")(mark)
    app.command("jobs")(jobs_cmd)
    app.command("verify")(verify_cmd)
    items = typer.Typer(help="Supervisor actions on items.", no_args_is_help=True)
    items.command("resolve")(resolve)
    items.command("allow-remark")(allow_remark)
    items.command("end-exemption")(end_exemption)
    app.add_typer(items, name="items")
    app.add_typer(tokens_app, name="tokens")
    app.command("serve")(serve)
