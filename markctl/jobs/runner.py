"""The job runner shared by the CLI and the service: pre-check a whole manifest, then mark item by item.

1. :func:`precheck` composes and checks every item (pure, no machine): the per-row report an
   import depot sees before anything is cut. A row with an error blocks the batch unless the
   operator excludes it, or a supervisor overrides its compliance findings with a reason.
   It keeps only a small :class:`Verdict` per item, so memory does not grow with layouts; the
   layout and program of an item are made again when it is marked (``Plan.prepared`` does it
   on access), from the same request, pinned to the same date. Large manifests are judged in a
   pool of worker processes (both cores) at a lower CPU priority, chunk by chunk with a bounded
   number in flight, in manifest order, so that rows are reported as they are judged and the
   process that talks to machines keeps its share of the CPU.
2. :func:`run_plan` marks the items on one machine. For each item: ``planned`` (once), then
   ``started`` is committed **before** the first byte reaches the machine, then ``marked``,
   ``failed`` (nothing was cut) or ``unknown`` (the cycle ended part-way or its outcome cannot be
   known: the weapon must be inspected). A re-run skips marked items and refuses unknown ones.
3. A row that carries a temporary-import exemption (ITI 8(b); manifest columns ``exemption``,
   ``exemption_purpose``, ``exemption_re_export_by``, ``exemption_reference``) is judged by the
   exemption rule instead of composed, and recorded ``exempt`` with the supervisor who gives it
   (``override_by``, as for overrides): nothing is cut and the machine is not touched for it. A
   re-run skips it; a later row that would mark it is refused until a supervisor ends the exemption.

Success is reported only after the result is recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import shlex
import threading
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, overload

from markctl.drivers.base import JobResult, Outcome, Progress
from markctl.errors import ConfigError, DuplicateMarkError, ItemStateError, LayoutError, MarkctlError
from markctl.jobs.capabilities import machine_problems
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import (
    EXEMPTION_COLUMNS,
    FACT_COLUMNS,
    Manifest,
    ManifestItem,
    ManifestReader,
    RowRef,
)
from markctl.jobs.owner import this_process
from markctl.jobs.verdict_log import Brief, VerdictLog
from markctl.layouts import MarkRequest, bundled_rules, check, compose, exemption_report
from markctl.layouts import program as make_program
from markctl.layouts.content import ContentError, parse_flag
from markctl.layouts.findings import Report
from markctl.layouts.program import MotionProgram, Program
from markctl.layouts.toolpath import check_fits, estimate_cycle_time_s, estimate_layout_cycle_s
from markctl.machines import Machine
from markctl.profiles import FirmwareProfile
from markctl.records import ItemState, RecordStore
from markctl.records.images import put_image
from markctl.records.store import END_EXEMPTION_HINT, overdue_exemption

__all__ = [
    "BatchReport",
    "ItemResult",
    "Plan",
    "PrecheckCancelledError",
    "Prepared",
    "Verdict",
    "judge",
    "precheck",
    "precheck_off_loop",
    "prepare",
    "run_plan",
]


def _problems(report: Report) -> tuple[str, ...]:
    return tuple(
        f"[{f.rule}] {f.subject}: {f.message or f'{f.measured} vs {f.required}'}" for f in report.errors
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """One item's pre-check outcome: all a plan keeps per item (a few hundred bytes)."""

    item: ManifestItem
    verdict: str  # ok | exempt | not compliant | invalid (could not be composed: never overridable)
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # Estimated cycle seconds (the pre-check table): from the strokes in reading order when judged,
    # from the ordered program when made; an estimate, not part of the judgement.
    cycle_s: float | None = field(default=None, compare=False)

    @classmethod
    def of(cls, item: ManifestItem, report: Report, cycle_s: float | None = None) -> Verdict:
        return cls(
            item,
            "ok" if report.passed else "not compliant",
            _problems(report),
            tuple(f"[{f.rule}] {f.message}" for f in report.warnings),
            cycle_s,
        )

    @classmethod
    def of_exemption(cls, item: ManifestItem, report: Report) -> Verdict:
        """An exemption the rule accepts is ``exempt``; one it refuses is no finding a supervisor
        overrides (there is no mark to override it for): ``invalid``."""
        if report.exempt:
            return cls(item, "exempt", (), tuple(f"[{f.rule}] {f.message}" for f in report.findings))
        return cls(item, "invalid", _problems(report))

    @property
    def passed(self) -> bool:
        return self.verdict in ("ok", "exempt")

    def row(self) -> dict[str, Any]:
        """The per-row report entry (see :meth:`Plan.rows`)."""
        return {
            "line": self.item.line,
            "item": self.item.item_key,
            "verdict": self.verdict,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }


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
            return self.error.splitlines()  # every field of the row at once, one line each
        assert self.report is not None
        return list(_problems(self.report))

    def verdict(self) -> Verdict:
        if self.error is not None or self.report is None:
            return Verdict(self.item, "invalid", tuple(self.problems()))
        if self.request is not None and self.request.exemption is not None:
            return Verdict.of_exemption(self.item, self.report)
        cycle_s = None
        if self.program is not None and self.layout is not None:
            cycle_s = estimate_cycle_time_s(self.program, self.layout.machine)
        return Verdict.of(self.item, self.report, cycle_s)


class _Remade(Sequence[Prepared]):
    """A plan's items as full :class:`Prepared` (layout, report, program), made on access, never kept."""

    def __init__(
        self, verdicts: Sequence[Verdict], catalogue: Catalogue, machine_profile: FirmwareProfile, today: date
    ) -> None:
        self._verdicts = verdicts
        self._catalogue, self._machine, self._today = catalogue, machine_profile, today

    def __len__(self) -> int:
        return len(self._verdicts)

    @overload
    def __getitem__(self, index: int) -> Prepared: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Prepared]: ...
    def __getitem__(self, index: int | slice) -> Prepared | Sequence[Prepared]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        item = self._verdicts[index].item
        try:
            request = request_for(item, self._catalogue, self._machine, self._today)
        except (LayoutError, ConfigError) as exc:
            return Prepared(item, error=str(exc))
        return prepare(request, self._machine, item)

    def __iter__(self) -> Iterator[Prepared]:
        return (self[i] for i in range(len(self)))

    def without_program(self, index: int) -> Prepared:
        """Item ``index`` composed and checked, with no program (previews: no stroke is ordered)."""
        item = self._verdicts[index].item
        try:
            request = request_for(item, self._catalogue, self._machine, self._today)
        except (LayoutError, ConfigError) as exc:
            return Prepared(item, error=str(exc))
        return prepare(request, self._machine, item, with_program=False)


@dataclass
class Plan:
    """A pre-checked manifest: a verdict per item; ``prepared`` gives each item's layout and program."""

    manifest: Manifest
    machine_profile: FirmwareProfile
    prepared: Sequence[Prepared]
    verdicts: Sequence[Verdict] = field(default_factory=list)  # a VerdictLog when the manifest streamed

    def __post_init__(self) -> None:
        if not self.verdicts and not isinstance(self.prepared, _Remade):
            self.verdicts = [p.verdict() for p in self.prepared]

    @classmethod
    def judged(
        cls,
        manifest: Manifest,
        catalogue: Catalogue,
        machine_profile: FirmwareProfile,
        verdicts: Sequence[Verdict],
        today: date,
    ) -> Plan:
        """The plan of a pre-check's verdicts; each item is made again (for ``today``) when marked."""
        return cls(manifest, machine_profile, _Remade(verdicts, catalogue, machine_profile, today), verdicts)

    def blocking(self, exclude: set[int], overrides: Mapping[int, str]) -> dict[int, list[str]]:
        """Lines whose problems stop the batch: not excluded, and not overridden (compliance only)."""
        blocked: dict[int, list[str]] = {}
        for issue in self.manifest.issues:
            if issue.line not in exclude:
                blocked.setdefault(issue.line, []).append(str(issue))
        for line, component, verdict, problems in briefs(self.verdicts):
            if verdict in ("ok", "exempt") or line in exclude:  # passed (Verdict.passed)
                continue
            if verdict != "invalid" and line in overrides:
                continue  # findings overridden by a supervisor (recorded when marked)
            blocked.setdefault(line, []).extend(f"line {line}: {component}: {m}" for m in problems)
        return blocked

    def previews(self) -> Iterator[Prepared]:
        """Each item's layout and report, made again without its program (a dry run's previews)."""
        if isinstance(self.prepared, _Remade):
            remade = self.prepared
            return (remade.without_program(i) for i in range(len(remade)))
        return iter(self.prepared)

    def rows(self) -> list[dict[str, Any]]:
        """The per-row report: line, weapon, component, verdict, problems."""
        out: list[dict[str, Any]] = [
            {"line": i.line, "item": None, "verdict": "invalid", "problems": [f"{i.field}: {i.message}"]}
            for i in self.manifest.issues
        ]
        out.extend(v.row() for v in self.verdicts)
        return sorted(out, key=lambda r: (r["line"], r["item"] or ""))


def briefs(verdicts: Sequence[Verdict]) -> Iterator[Brief]:
    """Line, component, verdict and problems of each verdict (a streamed plan reads no row for them)."""
    if isinstance(verdicts, VerdictLog):
        return verdicts.brief()
    return ((v.item.line, v.item.component, v.verdict, v.problems) for v in verdicts)


def request_for(
    item: ManifestItem, catalogue: Catalogue, machine_profile: FirmwareProfile, today: date | None = None
) -> MarkRequest:
    """The MarkRequest of one manifest item: its surface from the catalogue, its fields from the row."""
    rules = bundled_rules().get(item.mark_profile)
    template = catalogue.lookup(item.identity.get("model"), item.component)
    facts = {k: parse_flag(item.fields[k]) for k in FACT_COLUMNS if k in item.fields}
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
            **exemption_part(item),
        }
    )


#: Stands in for the supervisor while a row is judged; the one named when the batch runs
#: (``override_by``) is recorded, and the exemption is judged again with that name.
SUPERVISOR_AT_RUN = "the supervisor named when the batch runs"


def exemption_part(item: ManifestItem, supervisor: str = SUPERVISOR_AT_RUN) -> dict[str, Any]:
    """``{"exemption": {...}}`` for a row with an exemption, else ``{}``."""
    if not item.fields.get(EXEMPTION_COLUMNS["kind"]):
        return {}
    facts = {name: item.fields.get(column, "") for name, column in EXEMPTION_COLUMNS.items()}
    return {"exemption": {**facts, "recorded_by": supervisor}}


def _waived(fact: str | None, facts: Mapping[str, bool]) -> bool:
    return fact is not None and facts.get(fact, False)


def prepare(
    request: MarkRequest, machine_profile: FirmwareProfile, item: ManifestItem, *, with_program: bool = True
) -> Prepared:
    """Compose, check and (when compliant or overridable) make the program of one item.

    ``with_program=False`` stops after the check and the fit in the work area (previews)."""
    prepared = Prepared(item, request)
    if request.exemption is not None:  # judged, recorded, never composed or cut
        prepared.report = exemption_report(request)
        return prepared
    try:
        prepared.layout = compose(request, machine=machine_profile)
        prepared.report = check(prepared.layout)
        if not with_program:
            check_fits(prepared.layout, machine_profile)
            return prepared
        prepared.program = make_program(prepared.layout, machine_profile)
    except (LayoutError, ConfigError) as exc:
        prepared.error = _refusal(exc)
        return prepared
    prepared.error = _cannot(prepared.program, machine_profile)
    return prepared


def judge(
    item: ManifestItem, catalogue: Catalogue, machine_profile: FirmwareProfile, today: date | None = None
) -> Verdict:
    """One item's verdict: request, composition, check, fit in the work area and what the machine can
    do; no toolpath is ordered."""
    try:
        request = request_for(item, catalogue, machine_profile, today)
        if request.exemption is not None:
            return Verdict.of_exemption(item, exemption_report(request))
        layout = compose(request, machine=machine_profile)
        report = check(layout)
        check_fits(layout, machine_profile)
        # A pattern machine's program is its field list, cheap to make: judge what the machine can
        # mark now. Motion programs have no capability limits (capabilities.py) and cost an ordering:
        # their cycle is estimated from the strokes in reading order (within 0.2 % of the ordered
        # program's on bench/precheck.py's mix), and no stroke is ordered before an item is marked.
        if machine_profile.family == "grbl":
            cannot, cycle_s = None, estimate_layout_cycle_s(layout, machine_profile)
        else:
            pattern = make_program(layout, machine_profile)
            cannot, cycle_s = (
                _cannot(pattern, machine_profile),
                estimate_cycle_time_s(pattern, machine_profile),
            )
    except (LayoutError, ConfigError) as exc:
        return Verdict(item, "invalid", tuple(_refusal(exc).splitlines()))
    if cannot is not None:
        return Verdict(item, "invalid", (cannot,))
    return Verdict.of(item, report, cycle_s)


def _refusal(exc: LayoutError | ConfigError) -> str:
    """An item's error as lines: a manifest field names its column, one line per problem."""
    if isinstance(exc, ContentError):
        return "\n".join(
            f"column {name.removeprefix('fields.')}: [{rule}] {text}" for name, rule, text in exc.problems
        )
    return str(exc)


def _cannot(program: Program, machine_profile: FirmwareProfile) -> str | None:
    """What the machine cannot do, or None: not a finding a supervisor can override, so a refusal."""
    cannot = [p for p in machine_problems(program, machine_profile) if p.blocking]
    return "; ".join(str(p) for p in cannot) if cannot else None


class PrecheckCancelledError(MarkctlError):
    """The pre-check was stopped before every row was judged."""


OnVerdict = Callable[[Verdict], None]

_POOL_MIN_ITEMS = 400  # below this, starting worker processes costs more than it saves
_CHUNK = 32  # items per task: large enough to amortise pickling, small enough to report steadily
_IN_FLIGHT_PER_WORKER = 2  # bounded queue: memory stays flat, cancelling waits for little
_WORKER_NICE = 5  # the pool yields the CPU to the process that drives machines
_worker_state: tuple[Catalogue, FirmwareProfile, date] | None = None


def _worker_init(catalogue: Catalogue, machine_profile: FirmwareProfile, today: date) -> None:
    global _worker_state
    _worker_state = (catalogue, machine_profile, today)
    try:
        os.nice(_WORKER_NICE)
    except OSError:  # not permitted here: the pool still works, at normal priority
        pass


def _judge_chunk(items: list[ManifestItem]) -> list[Verdict]:
    assert _worker_state is not None
    return judge_items(items, *_worker_state)


def judge_items(
    items: Sequence[ManifestItem], catalogue: Catalogue, machine_profile: FirmwareProfile, today: date
) -> list[Verdict]:
    """The verdicts of some items, in order: a worker's share of a pre-check."""
    return [judge(item, catalogue, machine_profile, today) for item in items]


def _default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def precheck(
    manifest: Manifest | ManifestReader,
    catalogue: Catalogue,
    machine_profile: FirmwareProfile,
    *,
    today: date | None = None,
    workers: int | None = None,
    on_verdict: OnVerdict | None = None,
    cancel: threading.Event | None = None,
) -> Plan:
    """Compose and check every item of the manifest; no machine is touched.

    A :class:`ManifestReader` (``open_manifest``) streams: its rows are read as they are judged,
    and the plan keeps a :class:`VerdictLog` (a few dozen bytes per item) that reads each row
    again when it is marked; memory does not grow with the manifest's length. A :class:`Manifest`
    read whole gives a plan with a list of verdicts.

    Args:
        today: the date the marks are judged (and later made) for; today by default.
        workers: processes judging items; by default one per core, in-process for small manifests.
        on_verdict: called with each item's verdict as soon as it is known, in manifest order.
        cancel: when set, the pre-check stops at the next chunk and raises PrecheckCancelledError.
    """
    day = today or date.today()
    verdicts: list[Verdict] | VerdictLog
    keep: Callable[[Verdict], None]
    if isinstance(manifest, ManifestReader):
        log = VerdictLog(manifest)
        refs: deque[RowRef] = deque()  # of the items read and not yet judged (those in flight)

        def read(reader: ManifestReader) -> Iterator[ManifestItem]:
            for row_items, ref in reader.rows():
                for item in row_items:
                    refs.append(ref)
                    yield item

        def keep(verdict: Verdict) -> None:
            log.append(verdict, refs.popleft())

        items, verdicts, judged = read(manifest), log, manifest.manifest
    else:
        kept: list[Verdict] = []
        items, verdicts, keep, judged = iter(manifest.items), kept, kept.append, manifest

    def done(verdict: Verdict) -> None:
        keep(verdict)
        if on_verdict is not None:
            on_verdict(verdict)

    n_workers = max(1, workers if workers is not None else _default_workers())
    head = list(itertools.islice(items, _POOL_MIN_ITEMS if n_workers > 1 else 0))
    if n_workers == 1 or len(head) < _POOL_MIN_ITEMS:
        for item in itertools.chain(head, items):
            if cancel is not None and cancel.is_set():
                raise PrecheckCancelledError("the pre-check was cancelled; nothing was marked")
            done(judge(item, catalogue, machine_profile, day))
    else:
        _judge_in_pool(itertools.chain(head, items), catalogue, machine_profile, day, n_workers, done, cancel)
    return Plan.judged(judged, catalogue, machine_profile, verdicts, day)


async def precheck_off_loop(
    manifest: Manifest,
    catalogue: Catalogue,
    machine_profile: FirmwareProfile,
    *,
    today: date | None = None,
    on_verdict: OnVerdict | None = None,
) -> Plan:
    """:func:`precheck` in a worker thread, so the event loop keeps driving machines meanwhile.

    Cancelling the awaiting task stops the pre-check at its next chunk (its workers are shut
    down) before the cancellation goes on.
    """
    cancel = threading.Event()
    work = asyncio.ensure_future(
        asyncio.to_thread(
            precheck, manifest, catalogue, machine_profile, today=today, on_verdict=on_verdict, cancel=cancel
        )
    )
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        cancel.set()
        try:
            await work
        except PrecheckCancelledError:
            pass
        raise


def _judge_in_pool(
    items: Iterator[ManifestItem],
    catalogue: Catalogue,
    machine_profile: FirmwareProfile,
    today: date,
    workers: int,
    done: OnVerdict,
    cancel: threading.Event | None,
) -> None:
    # A single-threaded caller (the CLI) forks its workers: they start with everything imported. A
    # threaded one (the service) must not fork (a lock held by another thread would stay locked in
    # the child): its workers come from a forkserver that has imported the layouts once.
    ctx: multiprocessing.context.BaseContext
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("fork")
    else:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["markctl.jobs.runner"])
    pool = ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_worker_init, initargs=(catalogue, machine_profile, today)
    )
    pending: deque[Future[list[Verdict]]] = deque()
    try:
        while chunk := list(itertools.islice(items, _CHUNK)):
            while len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                for verdict in pending.popleft().result():
                    done(verdict)
            if cancel is not None and cancel.is_set():
                raise PrecheckCancelledError("the pre-check was cancelled; nothing was marked")
            pending.append(pool.submit(_judge_chunk, chunk))
        while pending:
            for verdict in pending.popleft().result():
                done(verdict)
            if cancel is not None and cancel.is_set() and pending:
                raise PrecheckCancelledError("the pre-check was cancelled; nothing was marked")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- running ---------------------------------------------------------------------------------


@dataclass
class ItemResult:
    item_key: str
    line: int
    state: str  # marked | exempt | failed | unknown | skipped | refused | excluded
    message: str = ""
    record: int | None = None
    verification: dict[str, Any] | None = None
    image: str | None = None
    machine_safe: bool = True  # False: the driver could not confirm its safe state after this item
    inspect: bool = False  # marked, but the check after marking failed: flagged for inspection


@dataclass
class BatchReport:
    batch_id: str
    results: list[ItemResult] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = dict(Counter(r.state for r in self.results))
        flagged = sum(r.inspect for r in self.results)
        if flagged:
            counts["flagged for inspection"] = flagged
        return counts

    @property
    def ok(self) -> bool:
        return all(
            r.state in ("marked", "exempt", "skipped", "excluded") and not r.inspect for r in self.results
        )


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
    layout = prepared.layout
    return {
        "request": prepared.request.model_dump(mode="json"),
        # what is cut, exactly as it reads: the register shows this, not a paraphrase of the fields
        "mark_lines": [line.text for line in layout.lines] if layout is not None else [],
        "mark_code": layout.code.symbol.content if layout is not None and layout.code is not None else None,
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
    continue_on_verify_fail: bool = False,
) -> BatchReport:
    """Mark every item of a pre-checked plan on ``machine``; records every step before reporting it.

    An item whose check after marking fails is flagged for inspection (a record of its own) and,
    unless ``continue_on_verify_fail``, stops the batch: the next weapon is not marked by a machine
    that just cut something other than what was meant.
    """
    exclude = exclude or set()
    overrides = overrides or {}
    if overrides and not (override_by and override_by.strip()):
        raise ConfigError("a compliance override names the supervisor who gave it (--override-by)")
    for line, reason in overrides.items():
        if len(reason.strip()) < 3:
            raise ConfigError(f"the override of line {line} needs a reason (a few words at least)")
    check_exempt_supervisor(plan, exclude, override_by)
    blocked = plan.blocking(exclude, overrides)
    if blocked:
        lines = ", ".join(str(n) for n in sorted(blocked))
        raise ConfigError(
            f"the manifest has rows with errors (lines {lines}); nothing was marked",
            hint="fix them, exclude them (--exclude LINE), or have a supervisor override findings with a reason",
        )
    # A production registry never takes a simulated mark, a training registry never a real one (ISSUE 10 §2).
    store.check_machine(_simulated(machine), str(machine.address))
    report = BatchReport(batch_id or uuid.uuid4().hex[:12])
    emit = on_event or (lambda event: None)
    item_lines = [b[0] for b in briefs(plan.verdicts)]  # a streamed plan reads rows again only to mark
    todo = [i for i, line in enumerate(item_lines) if line not in exclude]
    report.results.extend(
        ItemResult(v.item.item_key, v.item.line, "excluded", "excluded by the operator")
        for v in (plan.verdicts[i] for i, line in enumerate(item_lines) if line in exclude)
    )
    emit({"type": "batch-started", "batch": report.batch_id, "items": len(todo)})
    for index, at in enumerate(todo, start=1):
        verdict = plan.verdicts[at]
        emit({"type": "item-started", "index": index, "of": len(todo), "item": verdict.item.item_key})
        # The layout and program are made now (a worker thread: ordering a large mark takes a few
        # tens of milliseconds), from the request the pre-check judged.
        prepared = await asyncio.to_thread(plan.prepared.__getitem__, at)
        if prepared.verdict() != verdict:
            result = ItemResult(verdict.item.item_key, verdict.item.line, "refused",
                                "the item no longer composes as it was pre-checked: pre-check the manifest again")  # fmt: skip
        else:
            result = await _run_item(prepared, machine, store, operator, report.batch_id, overrides, override_by,
                                     emit, load_part, verify, images)  # fmt: skip
        report.results.append(result)
        emit({"type": "item-ended", "index": index, "of": len(todo), "item": result.item_key, "state": result.state,
              "message": result.message, "record": result.record})  # fmt: skip
        stop = None
        if result.state == "unknown" or not result.machine_safe:
            # The weapon's or the machine's state is in doubt: stop rather than cut the next weapon blind.
            stop = "batch stopped"
        elif result.inspect and not continue_on_verify_fail:
            stop = (
                f"batch stopped: the check of line {result.line} failed (--continue-on-verify-fail to go on)"
            )
        if stop is not None:
            for rest in todo[index:]:
                v = plan.verdicts[rest]
                report.results.append(ItemResult(v.item.item_key, v.item.line, "refused", stop))
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
    if prepared.request is not None and prepared.request.exemption is not None:
        assert override_by is not None  # run_plan refused exempt rows without a supervisor
        return await asyncio.to_thread(record_exemption, prepared, store, operator, override_by, batch_id)
    if current is not None and current.state is ItemState.EXEMPT:
        return ItemResult(key, item.line, "refused", _exempt_refusal(key))
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
        "simulated": _simulated(machine),
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
            store.append, key, "failed", operator,
            {"error": str(exc), "started": started.seq, "simulated": _simulated(machine)},
        )  # fmt: skip
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
                             {"result": _outcome(aborted), "started": started.seq, "error": "batch cancelled",
                              "simulated": _simulated(machine)})  # fmt: skip
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
    stored: dict[str, Any] | None = None
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
        else:
            try:  # kept by content beside the registry too, so the record's image outlives the batch folder
                stored = await asyncio.to_thread(put_image, store, Path(image))
            except OSError as exc:
                stored = {"error": f"not stored: {exc}"}
    final = {"result": outcome, "verification": verification, "image": image, "image_stored": stored,
             "started": started.seq,
             "simulated": _simulated(machine)}  # fmt: skip
    record = await asyncio.to_thread(store.append, key, state.value, operator, final)
    message = job_result.message or state.value
    inspect = verification is not None and not verification.get("passed", True)
    if inspect:
        assert verification is not None
        message = f"marked, but verification failed: {verification.get('detail')}; inspect the weapon"
        # A record of its own (the mark's record stays as written): the register shows the flag.
        flag = {"verification": verification, "image": image, "inspect": True, "marked": record.seq,
                "reason": "the check after marking failed: inspect the weapon"}  # fmt: skip
        record = await asyncio.to_thread(store.append, key, "verified", operator, flag)
    return ItemResult(key, item.line, state.value, message, record.seq, verification, image,
                      job_result.safe_state_confirmed, inspect)  # fmt: skip


def exempt_lines(plan: Plan, exclude: set[int]) -> list[int]:
    """Manifest lines with an exemption that the batch will record."""
    return sorted(
        {line for line, _, verdict, _ in briefs(plan.verdicts) if verdict == "exempt" and line not in exclude}
    )


def check_exempt_supervisor(plan: Plan, exclude: set[int], supervisor: str | None) -> None:
    lines = exempt_lines(plan, exclude)
    if lines and not (supervisor and supervisor.strip()):
        raise ConfigError(
            f"line(s) {', '.join(map(str, lines))} record a temporary-import exemption, which a supervisor "
            "gives (--override-by NAME in the CLI, a supervisor's token over the API); nothing was marked",
            hint="name the supervisor, or leave the lines out with --exclude LINE",
        )


def _exempt_refusal(key: str) -> str:
    return (
        "recorded exempt (temporary import): a supervisor ends the exemption before it is marked: "
        + END_EXEMPTION_HINT.replace("ITEM_KEY", shlex.quote(key))
    )


def record_exemption(
    prepared: Prepared, store: RecordStore, operator: str, supervisor: str, batch_id: str | None = None
) -> ItemResult:
    """Record an item exempt from the mark (ITI 8(b)): ``planned`` (if new), then ``exempted``.

    Nothing is cut and no machine is used. The exemption is judged again with ``supervisor`` as
    the one who records it and today's date; it is refused if the rule no longer accepts it (the
    re-export date passed since the pre-check). An item already exempt is skipped (a re-run); one
    already marked, started or unknown is refused: an exemption comes before marking, never after.
    """
    item, key = prepared.item, prepared.item.item_key
    assert prepared.request is not None and prepared.request.exemption is not None
    current = store.item(key)
    if current is not None and current.state is ItemState.EXEMPT:
        record = store.get(current.last_seq)
        facts = (record.data.get("exemption") or {}) if record is not None else {}
        passed = overdue_exemption(record.data, date.today()) if record is not None else None
        note = (
            f"; WARNING: its re-export date {passed} has passed: check that the weapon left" if passed else ""
        )
        return ItemResult(key, item.line, "skipped",
                          f"already recorded exempt (re-export by {facts.get('re_export_by', '?')}){note}",
                          current.last_seq)  # fmt: skip
    if current is not None and current.state not in (ItemState.PLANNED, ItemState.FAILED):
        return ItemResult(key, item.line, "refused", f"is {current.state.value}: an exemption is recorded "
                          "before a weapon is marked, never after")  # fmt: skip
    exemption = prepared.request.exemption.model_copy(update={"recorded_by": supervisor.strip()})
    request = prepared.request.model_copy(update={"exemption": exemption})
    report = exemption_report(request, today=date.today())  # now, whatever date the plan was judged for
    if not report.exempt:
        return ItemResult(
            key, item.line, "refused", "; ".join(_problems(report)) or "the exemption is refused"
        )
    if current is None:
        store.append(key, "planned", operator, {"line": item.line, "identity": item.identity},
                     weapon_key=item.weapon_key, component=item.component, mark_profile=item.mark_profile,
                     batch_id=batch_id)  # fmt: skip
    data = {
        "exemption": exemption.model_dump(mode="json"),
        "request": request.model_dump(mode="json"),
        "findings": report.to_dict()["findings"],
        "line": item.line,
    }
    record = store.append(key, "exempted", operator, data, batch_id=batch_id)
    message = (f"exempt, not marked: {exemption.kind}, re-export by {exemption.re_export_by.isoformat()}, "
               f"recorded by {exemption.recorded_by}")  # fmt: skip
    return ItemResult(key, item.line, "exempt", message, record.seq)


def _simulated(machine: Machine) -> bool:
    """Whether marks on ``machine`` are simulated (recorded with every cycle, ISSUE 10 §2)."""
    return machine.simulator is not None or machine.address.is_simulated


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
