"""The job runner shared by the CLI and the service: pre-check a whole manifest, then mark item by item.

1. :func:`precheck` composes and checks every item (pure, no machine): the per-row report an
   import depot sees before anything is cut. A row with an error blocks the batch unless the
   operator excludes it, or a supervisor overrides its compliance findings with a reason.
2. :func:`run_plan` marks the items on one machine. For each item: ``planned`` (once), then
   ``started`` is committed **before** the first byte reaches the machine, then ``marked``,
   ``failed`` (nothing was cut) or ``unknown`` (the cycle ended part-way or its outcome cannot be
   known: the weapon must be inspected). A re-run skips marked items and refuses unknown ones.

Success is reported only after the result is recorded.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from markctl.drivers.base import JobResult, Outcome, Progress
from markctl.errors import ConfigError, DuplicateMarkError, ItemStateError, LayoutError, MarkctlError
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import Manifest, ManifestItem
from markctl.jobs.owner import this_process
from markctl.layouts import MarkRequest, bundled_rules, check, compose
from markctl.layouts import program as make_program
from markctl.layouts.findings import Report
from markctl.layouts.program import MotionProgram, Program
from markctl.machines import Machine
from markctl.profiles import FirmwareProfile
from markctl.records import ItemState, RecordStore

__all__ = ["BatchReport", "ItemResult", "Plan", "Prepared", "precheck", "prepare", "run_plan"]

FACT_COLUMNS = ("has_unique_mark", "serial_contains_year")
_TRUE = {"1", "yes", "y", "true", "x"}


@dataclass
class Prepared:
    """One item after composition and check."""

    item: ManifestItem
    request: MarkRequest | None = None
    layout: Any = None
    report: Report | None = None
    program: Program | None = None
    error: str | None = None  # the item could not even be composed

    @property
    def passed(self) -> bool:
        return self.error is None and self.report is not None and self.report.passed

    def problems(self) -> list[str]:
        if self.error is not None:
            return [self.error]
        assert self.report is not None
        return [
            f"[{f.rule}] {f.subject}: {f.message or f'{f.measured} vs {f.required}'}"
            for f in self.report.errors
        ]


@dataclass
class Plan:
    manifest: Manifest
    machine_profile: FirmwareProfile
    prepared: list[Prepared]

    def blocking(self, exclude: set[int], overrides: Mapping[int, str]) -> dict[int, list[str]]:
        """Lines whose problems stop the batch: not excluded, and not overridden (compliance only)."""
        blocked: dict[int, list[str]] = {}
        for issue in self.manifest.issues:
            if issue.line not in exclude:
                blocked.setdefault(issue.line, []).append(str(issue))
        for p in self.prepared:
            line = p.item.line
            if p.passed or line in exclude:
                continue
            if p.error is None and line in overrides:
                continue  # findings overridden by a supervisor (recorded when marked)
            blocked.setdefault(line, []).extend(f"line {line}: {p.item.component}: {m}" for m in p.problems())
        return blocked

    def rows(self) -> list[dict[str, Any]]:
        """The per-row report: line, weapon, component, verdict, problems."""
        out: list[dict[str, Any]] = [
            {"line": i.line, "item": None, "verdict": "invalid", "problems": [f"{i.field}: {i.message}"]}
            for i in self.manifest.issues
        ]
        for p in self.prepared:
            out.append(
                {
                    "line": p.item.line,
                    "item": p.item.item_key,
                    "verdict": "ok" if p.passed else "not compliant" if p.error is None else "invalid",
                    "problems": p.problems(),
                    "warnings": [f"[{f.rule}] {f.message}" for f in (p.report.warnings if p.report else ())],
                }
            )
        return sorted(out, key=lambda r: (r["line"], r["item"] or ""))


def request_for(
    item: ManifestItem, catalogue: Catalogue, machine_profile: FirmwareProfile, today: date | None = None
) -> MarkRequest:
    """The MarkRequest of one manifest item: its surface from the catalogue, its fields from the row."""
    rules = bundled_rules().get(item.mark_profile)
    template = catalogue.lookup(item.identity.get("model"), item.component)
    facts = {k: item.fields[k].strip().lower() in _TRUE for k in FACT_COLUMNS if k in item.fields}
    # A field asked for only when a fact is false (ITI 8(b): a unique serial only if the weapon bears
    # none) is left out when the fact holds: the manifest's serial is the weapon's identity.
    fields = {
        k: v
        for k, v in item.fields.items()
        if k in rules.fields and not _waived(rules.fields[k].required_unless, facts)
    }
    options = dict(template.options)
    if today is not None:
        options.setdefault("today", today.isoformat())
    return MarkRequest.parse(
        {
            "profile": item.mark_profile,
            "machine": machine_profile.id,
            "fields": fields,
            "facts": facts,
            "component": {"name": item.component, **template.component},
            "options": options,
        }
    )


def _waived(fact: str | None, facts: Mapping[str, bool]) -> bool:
    return fact is not None and facts.get(fact, False)


def prepare(request: MarkRequest, machine_profile: FirmwareProfile, item: ManifestItem) -> Prepared:
    """Compose, check and (when compliant or overridable) make the program of one item."""
    prepared = Prepared(item, request)
    try:
        prepared.layout = compose(request)
        prepared.report = check(prepared.layout)
        prepared.program = make_program(prepared.layout, machine_profile)
    except (LayoutError, ConfigError) as exc:
        prepared.error = str(exc)
    return prepared


def precheck(
    manifest: Manifest, catalogue: Catalogue, machine_profile: FirmwareProfile, *, today: date | None = None
) -> Plan:
    """Compose and check every item of the manifest; no machine is touched."""
    prepared = []
    for item in manifest.items:
        try:
            request = request_for(item, catalogue, machine_profile, today)
        except (LayoutError, ConfigError) as exc:
            prepared.append(Prepared(item, error=str(exc)))
            continue
        prepared.append(prepare(request, machine_profile, item))
    return Plan(manifest, machine_profile, prepared)


# --- running ---------------------------------------------------------------------------------


@dataclass
class ItemResult:
    item_key: str
    line: int
    state: str  # marked | failed | unknown | skipped | refused | excluded
    message: str = ""
    record: int | None = None
    verification: dict[str, Any] | None = None
    image: str | None = None
    machine_safe: bool = True  # False: the driver could not confirm its safe state after this item


@dataclass
class BatchReport:
    batch_id: str
    results: list[ItemResult] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.state for r in self.results))

    @property
    def ok(self) -> bool:
        return all(r.state in ("marked", "skipped", "excluded") for r in self.results)


Event = dict[str, Any]
OnEvent = Callable[[Event], None]
LoadPart = Callable[[Prepared, Machine], Awaitable[None]]


def _state_after(result: JobResult) -> ItemState:
    """marked; failed only when the driver knows nothing that can cut was sent; else unknown.

    Progress counts are no proof: a dot-peen cycle stopped inside its first character reports
    0 characters done after striking dots. Unknown means a supervisor inspects the weapon before
    anything marks it again, so the same serial is never marked twice by accident.
    """
    if result.outcome is Outcome.DONE:
        return ItemState.MARKED
    return ItemState.UNKNOWN if result.cycle_started else ItemState.FAILED


def _summary(prepared: Prepared) -> dict[str, Any]:
    assert prepared.request is not None and prepared.program is not None and prepared.report is not None
    return {
        "request": prepared.request.model_dump(mode="json"),
        "program_digest": prepared.program.digest,
        "findings": prepared.report.to_dict()["findings"],
    }


async def run_plan(
    plan: Plan,
    machine: Machine,
    store: RecordStore,
    *,
    operator: str,
    batch_id: str | None = None,
    exclude: set[int] | None = None,
    overrides: Mapping[int, str] | None = None,
    override_by: str | None = None,
    on_event: OnEvent | None = None,
    load_part: LoadPart | None = None,
    verify: Callable[[Prepared, Machine], dict[str, Any] | None] | None = None,
    images: Path | None = None,
) -> BatchReport:
    """Mark every item of a pre-checked plan on ``machine``; records every step before reporting it."""
    exclude = exclude or set()
    overrides = overrides or {}
    if overrides and not (override_by and override_by.strip()):
        raise ConfigError("a compliance override names the supervisor who gave it (--override-by)")
    for line, reason in overrides.items():
        if len(reason.strip()) < 3:
            raise ConfigError(f"the override of line {line} needs a reason (a few words at least)")
    blocked = plan.blocking(exclude, overrides)
    if blocked:
        lines = ", ".join(str(n) for n in sorted(blocked))
        raise ConfigError(
            f"the manifest has rows with errors (lines {lines}); nothing was marked",
            hint="fix them, exclude them (--exclude LINE), or have a supervisor override findings with a reason",
        )
    report = BatchReport(batch_id or uuid.uuid4().hex[:12])
    emit = on_event or (lambda event: None)
    todo = [p for p in plan.prepared if p.item.line not in exclude]
    report.results.extend(
        ItemResult(p.item.item_key, p.item.line, "excluded", "excluded by the operator")
        for p in plan.prepared
        if p.item.line in exclude
    )
    emit({"type": "batch-started", "batch": report.batch_id, "items": len(todo)})
    for index, prepared in enumerate(todo, start=1):
        emit({"type": "item-started", "index": index, "of": len(todo), "item": prepared.item.item_key})
        result = await _run_item(prepared, machine, store, operator, report.batch_id, overrides, override_by,
                                 emit, load_part, verify, images)  # fmt: skip
        report.results.append(result)
        emit({"type": "item-ended", "index": index, "of": len(todo), "item": result.item_key, "state": result.state,
              "message": result.message, "record": result.record})  # fmt: skip
        if result.state == "unknown" or not result.machine_safe:
            # The weapon's or the machine's state is in doubt: stop rather than cut the next weapon blind.
            for rest in todo[index:]:
                report.results.append(
                    ItemResult(rest.item.item_key, rest.item.line, "refused", "batch stopped")
                )
            break
    emit({"type": "batch-ended", "batch": report.batch_id, "counts": report.counts()})
    return report


# Record writes wait for the disk (fsync) and checks crunch images: both run in a worker thread, each
# awaited before the next step, so the order "recorded before reported" holds and the event loop
# (other machines, the status endpoint) keeps going meanwhile.
async def _run_item(
    prepared: Prepared,
    machine: Machine,
    store: RecordStore,
    operator: str,
    batch_id: str,
    overrides: Mapping[int, str],
    override_by: str | None,
    emit: OnEvent,
    load_part: LoadPart | None,
    verify: Callable[[Prepared, Machine], dict[str, Any] | None] | None,
    images: Path | None,
) -> ItemResult:
    item = prepared.item
    key = item.item_key
    current = await asyncio.to_thread(store.item, key)
    if current is not None and current.state is ItemState.MARKED:
        return ItemResult(key, item.line, "skipped", "already marked", current.last_seq)
    if current is not None and current.state in (ItemState.UNKNOWN, ItemState.STARTED):
        return ItemResult(
            key, item.line, "refused", f"{current.state.value}: a supervisor must resolve it first"
        )
    if current is None:
        await asyncio.to_thread(
            store.append,
            key,
            "planned",
            operator,
            {"line": item.line, "identity": item.identity},
            weapon_key=item.weapon_key,
            component=item.component,
            mark_profile=item.mark_profile,
            batch_id=batch_id,
        )
    assert prepared.program is not None and prepared.report is not None
    data = {
        **_summary(prepared),
        "machine": str(machine.address),
        "machine_profile": machine.profile.id,
        "owner": this_process(),
    }
    if not prepared.passed:
        data["compliance_override"] = {"by": override_by, "reason": overrides[item.line],
                                       "failed_rules": sorted(prepared.report.failed_rules)}  # fmt: skip
    if load_part is not None:
        await load_part(prepared, machine)
    try:
        started = await asyncio.to_thread(store.append, key, "started", operator, data, batch_id=batch_id)
    except DuplicateMarkError as exc:
        return ItemResult(key, item.line, "skipped", str(exc))
    except ItemStateError as exc:
        return ItemResult(key, item.line, "refused", str(exc))
    # From here on the weapon may be cut: every path below ends in a recorded result.
    try:
        job = machine.driver.run(prepared.program)
    except (MarkctlError, ValueError) as exc:  # refused before any byte was sent
        record = await asyncio.to_thread(
            store.append, key, "failed", operator, {"error": str(exc), "started": started.seq}
        )
        return ItemResult(key, item.line, "failed", str(exc), record.seq)
    try:
        async for event in job.watch():
            if isinstance(event, Progress):
                emit({"type": "progress", "item": key, "done": event.done, "total": event.total,
                      "fraction": event.fraction})  # fmt: skip
        job_result = await job
    except asyncio.CancelledError:
        # The batch was cancelled (operator abort, service shutdown): stop the machine, record, go on.
        aborted = await asyncio.shield(job.abort())
        ended = store.append(key, _state_after(aborted).value, operator,
                             {"result": _outcome(aborted), "started": started.seq, "error": "batch cancelled"})  # fmt: skip
        # The batch report is lost with the cancellation: this event is how a watcher learns the outcome.
        emit({"type": "item-ended", "item": key, "state": ended.event, "record": ended.seq,
              "message": f"aborted: {aborted.message or ended.event}",
              "safe_state_confirmed": aborted.safe_state_confirmed})  # fmt: skip
        raise
    state = _state_after(job_result)
    outcome = _outcome(job_result)
    # The machine has finished: nothing below may keep this result from being recorded.
    verification: dict[str, Any] | None = None
    image: str | None = None
    if state is ItemState.MARKED and verify is not None:
        try:
            verification = await asyncio.to_thread(verify, prepared, machine)
        except Exception as exc:  # a bug or bad data in the check must not lose the mark
            verification = {
                "passed": False,
                "detail": f"verification could not run: {type(exc).__name__}: {exc}",
            }
    if images is not None and machine.simulator is not None:
        try:
            images.mkdir(parents=True, exist_ok=True)
            image = str(machine.simulator.workpiece.save_png(images / f"{file_stem(key)}.png"))
        except OSError as exc:
            image = f"not saved: {exc}"
    final = {"result": outcome, "verification": verification, "image": image, "started": started.seq}
    record = await asyncio.to_thread(store.append, key, state.value, operator, final)
    message = job_result.message or state.value
    if verification is not None and not verification.get("passed", True):
        message = f"marked, but verification failed: {verification.get('detail')}"
    return ItemResult(
        key, item.line, state.value, message, record.seq, verification, image, job_result.safe_state_confirmed
    )


def _outcome(result: JobResult) -> dict[str, Any]:
    return {
        "outcome": result.outcome.value,
        "message": result.message,
        "code": result.code,
        "line": result.line,
        "done": result.done,
        "total": result.total,
        "safe_state_confirmed": result.safe_state_confirmed,
        "cycle_started": result.cycle_started,
    }


def file_stem(key: str) -> str:
    """An item key as a file name (previews, workpiece images)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in key)


def is_motion(program: Program | None) -> bool:
    return isinstance(program, MotionProgram)
