"""The service layer: what the CLI and the HTTP API both call.

It owns the record store, the named machines (opened on first use, one job at a time each) and the
jobs of this process. Machine I/O shares the event loop with everything else the service does, so
nothing that can take long runs on it: pre-checks run in small cancellable chunks in a worker
process, record writes and checks in threads (the runner). A job keeps a bounded window of its
events and a summary (counts, results); finished jobs are forgotten after a while (their records
stay). Closing the service cancels pre-checks, aborts running jobs and closes every machine to its
safe state, all machines at once, and ends every event stream.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import io
import math
import multiprocessing
import os
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from markctl.address import parse_address
from markctl.config import MachineEntry, Settings
from markctl.errors import ConfigError, MachineError, MarkctlError
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import Manifest, parse_manifest
from markctl.jobs.owner import owner_is_gone
from markctl.jobs.runner import BatchReport, Plan, Prepared, Verdict, judge_items, precheck, run_plan
from markctl.layouts import MarkRequest, compose
from markctl.layouts import program as make_program
from markctl.layouts.compose import MIN_DOT_PITCH_MM
from markctl.layouts.program import MotionProgram
from markctl.machines import Machine, check_machine, open_machine
from markctl.profiles import FirmwareProfile, load_profile
from markctl.records import Record, RecordStore, RegistryModeError
from markctl.records.worker import background_worker
from markctl.simulator.workpiece import Workpiece
from markctl.verify import expected_program, verify_extent, verify_photo, verify_workpiece

__all__ = ["JobRun", "MarkService"]

#: Worker CPU seconds one pre-check step aims at. Steps are sized by time, not by a count of items:
#: an item takes from milliseconds to a second to compose and check, and a fixed count either
#: round-trips to the worker (pickling the catalogue and profile each time) far more often than
#: needed or makes steps that are long to cancel. Between two steps the pre-check can be cancelled.
PRECHECK_STEP_S = 0.5
#: The first step (nothing measured yet) and the largest one.
PRECHECK_FIRST_CHUNK = 2
PRECHECK_MAX_CHUNK = 500


def _precheck_pool() -> ProcessPoolExecutor:
    """One worker process for pre-checks: composing and checking is CPU work that, in a thread,
    would take the interpreter away from the event loop that carries machine I/O (a pre-check in a
    thread slowed marking on other machines several times over). It runs at the lowest CPU
    priority (markctl.records.worker.lower_priority), so on a small PC the loop and the machines'
    reader threads get the CPU first; it ends when the service does, even a killed one. Forked
    from a server process that has imported the layout code once, so a new worker starts in
    milliseconds."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["markctl.service"])
    pool = ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=background_worker,
                               initargs=(os.getpid(),))  # fmt: skip
    pool.submit(int).result()  # the worker is up (the first start imports the layout code: seconds)
    return pool


def _judge_timed(
    items: list[Any], catalogue: Catalogue, profile: FirmwareProfile, today: date
) -> tuple[list[Verdict], float]:
    """The verdicts of a step and the CPU seconds they took in the worker (waiting for the CPU,
    at idle priority, not counted: the next step is sized by the work, not by the load)."""
    start = time.thread_time()
    verdicts = judge_items(items, catalogue, profile, today)
    return verdicts, time.thread_time() - start


def _next_chunk(cpu_s: float, done: int) -> int:
    per_item = cpu_s / max(1, done)
    if per_item <= 0:
        return PRECHECK_MAX_CHUNK
    return max(1, min(PRECHECK_MAX_CHUNK, int(PRECHECK_STEP_S / per_item)))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class JobRun:
    """One job of this process: its pre-check, a window of its latest events, and its result.

    A GRBL item alone emits thousands of progress events, so only the last ``window`` events are
    kept; what a person needs afterwards (counts and per-item results) is kept as a summary that
    does not grow with progress events.
    """

    id: str
    machine: str
    operator: str
    created: str
    state: str = "pre-checking"  # pre-checking | running | done | failed | aborted | rejected
    rows: list[dict[str, Any]] = field(default_factory=list)
    window: int = 1000
    events: deque[dict[str, Any]] = field(init=False)
    report: BatchReport | None = None
    error: str | None = None
    task: asyncio.Task[Any] | None = None  # the pre-check, then the marking
    finished_at: float | None = None  # time.monotonic() when it ended
    last_seq: int = 0
    prechecked: int = 0  # rows judged so far by the pre-check
    ended: list[dict[str, Any]] = field(default_factory=list)  # one entry per item that ended
    milestones: list[dict[str, Any]] = field(default_factory=list)  # every event but progress
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)
    _closed: bool = False

    def __post_init__(self) -> None:
        self.events = deque(maxlen=max(1, self.window))

    def add_event(self, event: dict[str, Any]) -> None:
        """Keep ``event`` (numbered), note an item's end in the summary, wake every follower."""
        self.last_seq += 1
        numbered = {"seq": self.last_seq, "at": _now(), **event}
        self.events.append(numbered)
        if event.get("type") != "progress":  # a few per item: kept whole, so no follower misses one
            self.milestones.append(numbered)
        if event.get("type") == "item-ended":
            self.ended.append({k: event.get(k) for k in ("item", "state", "message", "record")})
        self._wake()

    def end(self, state: str, error: str | None = None) -> None:
        self.state = state
        if error is not None:
            self.error = error
        self.finished_at = time.monotonic()
        self._wake()

    def close(self) -> None:
        """End every stream following this job (the service is shutting down)."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def counts(self) -> dict[str, int]:
        if self.report is not None:
            return self.report.counts()
        return dict(Counter(str(e["state"]) for e in self.ended))

    def results(self) -> list[dict[str, Any]]:
        if self.report is not None:
            return [r.__dict__ for r in self.report.results]
        return [{"item_key": e["item"], "state": e["state"], "message": e["message"], "record": e["record"]}
                for e in self.ended]  # fmt: skip

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "machine": self.machine,
            "operator": self.operator,
            "created": self.created,
            "state": self.state,
            "error": self.error,
            "counts": self.counts(),
            "results": self.results(),
            "events": {"last": self.last_seq, "kept_from": self.events[0]["seq"] if self.events else None},
            "rows": self.rows,
            "prechecked": self.prechecked,
        }

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "aborted", "rejected")

    async def follow(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Kept events numbered after ``after``, then new ones as they come, until the job has finished.

        A follower slower than the window misses the progress events that fell out of it (their
        sequence numbers jump); every other event (batch and item starts and ends) is always sent.
        """
        seen = after
        while True:
            batch = [e for e in self.events if e["seq"] > seen] if self.last_seq > seen else []
            if batch and batch[0]["seq"] > seen + 1:  # fell behind the window: the milestones missed
                first = bisect.bisect_right([m["seq"] for m in self.milestones], seen)
                batch = [m for m in self.milestones[first:] if m["seq"] < batch[0]["seq"]] + batch
            for event in batch:
                yield event
            if batch:
                seen = batch[-1]["seq"]
                continue
            if self.finished or self._closed:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


@dataclass
class _Slot:
    entry: MachineEntry
    machine: Machine | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one job at a time
    opening: asyncio.Lock = field(default_factory=asyncio.Lock)  # one connection per machine


class MarkService:
    """Records, machines and jobs; see the module docstring.

    ``addresses_as_machines``: a job may name a machine by address (the CLI: the person at the
    keyboard chose it). The HTTP service passes False: jobs name registered machines only, so no
    request creates a machine that a supervisor did not register.
    ``keep_finished`` / ``keep_finished_s``: how many finished jobs are kept, and for how long.
    ``precheck_process``: pre-check in a worker process (the HTTP service, where machines mark
    while others pre-check) rather than a thread (the CLI, which pre-checks before it marks).
    """

    def __init__(
        self,
        settings: Settings,
        store: RecordStore,
        *,
        out_dir: Path | None = None,
        addresses_as_machines: bool = True,
        event_window: int = 1000,
        keep_finished: int = 200,
        keep_finished_s: float = 3600.0,
        precheck_process: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.out_dir = out_dir
        self.addresses_as_machines = addresses_as_machines
        self.event_window = event_window
        self.keep_finished = keep_finished
        self.keep_finished_s = keep_finished_s
        self._slots = {name: _Slot(entry) for name, entry in settings.machines.items()}
        self.jobs: dict[str, JobRun] = {}
        self.closing = False
        self.precheck_process = precheck_process
        self._prechecker: Executor | None = None  # started on the first pre-check
        self._starting_prechecker = asyncio.Lock()
        recovered = store.recover_interrupted(
            "markctl:startup", is_stale=lambda started: owner_is_gone(started.data.get("owner"))
        )
        self.recovered = [r.item_key for r in recovered]

    # --- machines ----------------------------------------------------------------------------

    def machine_names(self) -> list[str]:
        return sorted(self._slots)

    def add_machine(self, name: str, entry: MachineEntry) -> MachineEntry:
        """Register a machine after checking its address and profile together (nothing is opened).

        Raises AddressError / ConfigError naming the bad part; nothing is registered then.
        """
        if name in self._slots:
            raise ConfigError(f"machine {name!r} exists already")
        if "://" in name:
            raise ConfigError(f"machine name {name!r}: a name, not an address")
        found = check_machine(entry.address, entry.profile)
        checked = MachineEntry(address=str(found.address), profile=entry.profile or found.profile.id)
        self._slots[name] = _Slot(checked)
        return checked

    def _slot(self, name: str) -> _Slot:
        if name not in self._slots:
            if "://" in name and self.addresses_as_machines:
                self._slots[name] = _Slot(MachineEntry(address=name))
            else:
                raise ConfigError(
                    f"unknown machine {name!r} (registered: {', '.join(sorted(self._slots)) or 'none'})",
                    hint="a supervisor registers machines with POST /machines" if "://" in name else None,
                )
        return self._slots[name]

    async def machine(self, name: str) -> Machine:
        """The opened machine of that name; opened on first use, once, however many callers race."""
        slot = self._slot(name)
        async with slot.opening:
            if slot.machine is None:
                slot.machine = await open_machine(slot.entry.address, profile=slot.entry.profile)
        return slot.machine

    async def recover(self, name: str) -> dict[str, Any]:
        """Reconnect a machine whose link was lost or whose safe state was not confirmed, and confirm
        its safe state now (a supervisor, after inspecting it). Refused while a job runs on it."""
        slot = self._slot(name)
        if slot.lock.locked():
            raise MachineError(f"machine {name!r} is running a job; abort it first", address=name)
        async with slot.lock, slot.opening:
            if slot.machine is None:
                slot.machine = await open_machine(slot.entry.address, profile=slot.entry.profile)
                confirmed = await slot.machine.driver.safe_state("recover")
            else:
                await slot.machine.driver.recover()  # raises SafetyError if still not confirmed
                confirmed = True
        status = self._status(name, slot)
        return {**status, "safe_state_confirmed": confirmed}

    def profile_of(self, name: str) -> str:
        """The firmware profile id of a machine (a simulator's address names it)."""
        entry = self._slot(name).entry
        if entry.profile:
            return entry.profile
        address = parse_address(entry.address)
        if address.is_simulated:
            return address.location
        raise ConfigError(f"machine {name!r} ({entry.address}) needs a firmware profile")

    def _status(self, name: str, slot: _Slot) -> dict[str, Any]:
        m = slot.machine
        return {
            "name": name,
            "address": slot.entry.address,
            "profile": slot.entry.profile or (m.profile.id if m else None),
            "state": m.driver.state.value if m else "not connected",
            "busy": slot.lock.locked(),
        }

    def machine_status(self) -> list[dict[str, Any]]:
        return [self._status(name, slot) for name, slot in sorted(self._slots.items())]

    # --- jobs --------------------------------------------------------------------------------

    def plan(
        self, manifest: Manifest, catalogue: Catalogue, machine_profile_id: str, today: date | None = None
    ) -> Plan:
        return precheck(manifest, catalogue, load_profile(machine_profile_id), today=today)

    async def precheck(
        self,
        manifest: Manifest,
        catalogue: Catalogue,
        profile: FirmwareProfile,
        on_progress: Callable[[int], None] | None = None,
    ) -> Plan:
        """The whole manifest's pre-check, in the pre-check process, a step of items at a time
        (each about ``PRECHECK_STEP_S`` of work); ``on_progress`` gets the items judged so far.

        Cancelling the caller returns at once; the worker drops the step in progress when it ends:
        a client that went away, an abort or a shutdown never leaves a pre-check running for minutes.
        """
        loop = asyncio.get_running_loop()
        async with self._starting_prechecker:  # two first pre-checks start one worker
            if self._prechecker is None:
                self._prechecker = (
                    await asyncio.to_thread(
                        _precheck_pool
                    )  # starting it waits for the worker: not on the loop
                    if self.precheck_process
                    else ThreadPoolExecutor(max_workers=1, thread_name_prefix="markctl-precheck")
                )
        today = date.today()  # judged once: the items are made again for this day when marked
        verdicts: list[Verdict] = []
        items = manifest.items
        size, start = PRECHECK_FIRST_CHUNK, 0
        while start < len(items):
            chunk = items[start : start + size]
            judged, cpu_s = await loop.run_in_executor(
                self._prechecker, _judge_timed, chunk, catalogue, profile, today
            )
            verdicts += judged
            start += len(chunk)
            size = _next_chunk(cpu_s, len(chunk))
            if on_progress is not None:
                on_progress(start)
        return Plan.judged(manifest, catalogue, profile, verdicts, today)

    async def submit(
        self,
        manifest_csv: bytes,
        catalogue_toml: str,
        *,
        machine: str,
        operator: str,
        exclude: set[int] | None = None,
        overrides: Mapping[int, str] | None = None,
        override_by: str | None = None,
        wait: bool = False,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        continue_on_verify_fail: bool = False,
    ) -> JobRun:
        """Pre-check a manifest and, if it may run, start marking it; returns the job at once.

        While it is pre-checked the job is listed (state ``pre-checking``) and can be aborted; a
        rejected job is not kept: the answer carries its report.
        """
        if self.closing:
            raise ConfigError("the service is shutting down; submit the job again once it is back")
        job = self.new_job(machine, operator)
        profile = load_profile(self.profile_of(machine))
        manifest = await asyncio.to_thread(parse_manifest, manifest_csv, source="manifest",
                                           default_mark_profile=self.settings.defaults.mark_profile)  # fmt: skip
        catalogue = Catalogue.from_toml(catalogue_toml, "catalogue")
        self._expire()
        self.jobs[job.id] = job

        def progress(done: int) -> None:
            job.prechecked = done

        checking = asyncio.create_task(self.precheck(manifest, catalogue, profile, progress))
        job.task = checking  # an abort (or shutdown) cancels the pre-check
        try:
            plan = await checking  # our caller cancelled (client gone): the pre-check is cancelled too
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                self.jobs.pop(job.id, None)
                raise
            job.end("aborted", "aborted during the pre-check; nothing was marked")
            return job
        except BaseException:
            self.jobs.pop(job.id, None)
            raise
        return await self.submit_plan(plan, job, exclude=exclude, overrides=overrides, override_by=override_by,
                                      wait=wait, on_event=on_event,
                                      continue_on_verify_fail=continue_on_verify_fail)  # fmt: skip

    async def submit_plan(
        self,
        plan: Plan,
        job: JobRun,
        *,
        exclude: set[int] | None = None,
        overrides: Mapping[int, str] | None = None,
        override_by: str | None = None,
        wait: bool = False,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        continue_on_verify_fail: bool = False,
    ) -> JobRun:
        """Run a pre-checked plan as ``job`` (rejected if rows block it)."""
        if self.closing:
            raise ConfigError("the service is shutting down; submit the job again once it is back")
        slot = self._slot(job.machine)
        # A 10,000-row report is tens of milliseconds of Python: not on the loop that drives machines.
        job.rows = await asyncio.to_thread(plan.rows)
        blocked = await asyncio.to_thread(plan.blocking, exclude or set(), overrides or {})
        if blocked:
            self.jobs.pop(job.id, None)
            job.error = f"rows with errors block the batch: lines {', '.join(map(str, sorted(blocked)))}"
            job.add_event({"type": "rejected", "lines": sorted(blocked)})
            job.end("rejected")
            return job
        try:  # before any machine is opened: a production registry takes no simulated mark (ISSUE 10 §2)
            self.store.check_machine(parse_address(slot.entry.address).is_simulated, slot.entry.address)
        except RegistryModeError as exc:
            self.jobs.pop(job.id, None)
            job.error = str(exc)
            job.add_event({"type": "rejected", "error": job.error})
            job.end("rejected")
            return job
        self.jobs[job.id] = job
        job.state = "pending"
        job.task = asyncio.create_task(
            self._run(job, plan, slot, exclude, overrides, override_by, on_event, continue_on_verify_fail)
        )
        if wait:
            await asyncio.shield(job.task)
        return job

    def new_job(self, machine: str, operator: str) -> JobRun:
        self._slot(machine)
        return JobRun(uuid.uuid4().hex[:12], machine, operator, _now(), window=self.event_window)

    def _expire(self) -> None:
        """Forget finished jobs older than ``keep_finished_s``, and all but the ``keep_finished`` newest."""
        finished = sorted((j for j in self.jobs.values() if j.finished_at is not None),
                          key=lambda j: j.finished_at or 0.0)  # fmt: skip
        cutoff = time.monotonic() - self.keep_finished_s
        excess = len(finished) - self.keep_finished
        for index, job in enumerate(finished):
            if index < excess or (job.finished_at or 0.0) < cutoff:
                del self.jobs[job.id]

    def list_jobs(self) -> list[JobRun]:
        self._expire()
        return list(self.jobs.values())

    async def _run(
        self,
        job: JobRun,
        plan: Plan,
        slot: _Slot,
        exclude: set[int] | None,
        overrides: Mapping[int, str] | None,
        override_by: str | None,
        on_event: Callable[[dict[str, Any]], None] | None,
        continue_on_verify_fail: bool = False,
    ) -> None:
        def emit(event: dict[str, Any]) -> None:
            job.add_event(event)
            if on_event is not None:
                on_event(event)

        state, error = "failed", None
        try:
            async with slot.lock:
                job.state = "running"
                machine = await self.machine(job.machine)
                images = self.out_dir / "workpieces" / job.id if self.out_dir else None
                job.report = await run_plan(plan, machine, self.store, operator=job.operator, batch_id=job.id,
                                            exclude=exclude, overrides=overrides, override_by=override_by,
                                            on_event=emit, load_part=load_part, verify=verify_item,
                                            images=images,
                                            continue_on_verify_fail=continue_on_verify_fail)  # fmt: skip
                state = "done" if job.report.ok else "failed"
        except asyncio.CancelledError:
            state = "aborted"
            raise
        except MarkctlError as exc:
            error = str(exc)
        except Exception as exc:  # a bug: the job ends visibly, never "running" forever
            error = f"internal error: {type(exc).__name__}: {exc}"
        finally:
            job.end(state, error)

    async def abort(self, job_id: str) -> JobRun:
        job = self.job(job_id)
        task = job.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task})
        return job

    def job(self, job_id: str) -> JobRun:
        if job_id not in self.jobs:
            raise ConfigError(f"no job {job_id!r}")
        return self.jobs[job_id]

    # --- supervisor actions ------------------------------------------------------------------

    def resolve(self, item_key: str, outcome: str, reason: str, who: str) -> Record:
        """A supervisor's resolution; from ``started`` only when the owning process is certainly gone."""
        written = self.store.resolve(
            item_key,
            outcome,
            reason,
            who,
            owner_gone=lambda started: owner_is_gone(started.data.get("owner")),
        )
        return written[-1]

    def allow_remark(self, item_key: str, reason: str, who: str) -> Record:
        return self.store.append(item_key, "override", who, {"reason": reason})

    def end_exemption(self, item_key: str, reason: str, who: str) -> Record:
        return self.store.append(item_key, "exemption-ended", who, {"reason": reason})

    def verify_image(
        self, record_seq: int, image: Path | io.BytesIO, who: str, *, px_per_mm: float | None = None
    ) -> Record:
        """Read a photo of an applied mark back against the item's recorded layout; record the result.

        The recorded request is composed again and must give the recorded program digest, so the
        comparison is against exactly what was sent to the machine. Each verification is a new
        record; none is ever overwritten.
        """
        found = self.store.get(record_seq)
        if found is None:
            raise ConfigError(f"no record {record_seq}")
        started = [r for r in self.store.history(found.item_key) if r.event == "started"]
        if not started:
            raise ConfigError(f"item {found.item_key} was never started: nothing to verify")
        data = started[-1].data
        request = MarkRequest.parse(data["request"])
        layout = compose(request)
        prog = make_program(layout, data["machine_profile"])
        if prog.digest != data["program_digest"]:
            raise ConfigError(
                "the recorded request no longer gives the recorded program (was the software changed?)"
            )
        code = layout.code.symbol.content if layout.code is not None else None
        result = verify_photo(image, expected_program(layout, prog), spot_mm=2 * layout.half_width_mm,
                              code=code, px_per_mm=px_per_mm, layout=layout)  # fmt: skip
        label = image.name if isinstance(image, Path) else "uploaded image"
        return self.store.append(
            found.item_key, "verified", who, {"image": str(label), "verification": result.as_dict()}
        )

    async def close(self) -> None:
        """Cancel pre-checks, abort running jobs, close every machine to its safe state; all machines
        at once (each driver's safe-state path is bounded in time), then end every event stream."""
        self.closing = True
        running = [job for job in self.jobs.values() if job.task is not None and not job.task.done()]
        await asyncio.gather(*(self.abort(job.id) for job in running), return_exceptions=True)
        slots = [slot for slot in self._slots.values() if slot.machine is not None]
        await asyncio.gather(*(self._close_slot(slot) for slot in slots), return_exceptions=True)
        for job in self.jobs.values():
            job.close()
        if self._prechecker is not None:
            self._prechecker.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    async def _close_slot(slot: _Slot) -> None:
        machine, slot.machine = slot.machine, None
        if machine is not None:
            await machine.close()


# --- simulated parts ---------------------------------------------------------------------------

PX_PER_MM = 20.0
# Dents wider than this many dot pitches merge into strokes the dot-peen judge cannot read dot by
# dot (1.34 read right in the tests, 1.9 did not).
_DENTS_RUN_TOGETHER = 1.4


async def load_part(prepared: Prepared, machine: Machine) -> None:
    """On a simulator, put a fresh plate under the head for each item, sized to the part's zone."""
    sim = machine.simulator
    if sim is None or prepared.program is None:
        return
    x0, y0, x1, y1 = _program_extent(prepared)
    sim.workpiece = Workpiece(x1 - x0, y1 - y0, px_per_mm=PX_PER_MM, origin=(x0, y0))


def _program_extent(prepared: Prepared) -> tuple[float, float, float, float]:
    assert prepared.request is not None
    ox, oy = prepared.request.options.origin_mm
    xs = [x for x, _ in prepared.request.component.zone]
    ys = [y for _, y in prepared.request.component.zone]
    margin = 5.0
    return (ox + min(xs) - margin, oy + min(ys) - margin, ox + max(xs) + margin, oy + max(ys) + margin)


def verify_item(prepared: Prepared, machine: Machine) -> dict[str, Any] | None:
    """On a simulator: compare the cut with the program (for pattern machines, with the dots the
    layout places) and read back the Data Matrix."""
    sim = machine.simulator
    if sim is None or prepared.program is None:
        return None
    layout = prepared.layout
    if isinstance(prepared.program, MotionProgram):
        spot = machine.profile.laser.spot_mm if machine.profile.laser else 0.3
        code = layout.code.symbol.content if layout.code is not None else None
        return verify_workpiece(
            prepared.program, sim.workpiece, spot_mm=spot, code=code, layout=layout
        ).as_dict()
    # A pattern machine's layout is what it strikes: its fields where the host put them or where
    # the stored pattern does (compose pins them there), in the font the simulated controller
    # shares. So each character and dot is judged, at the size of the dents it made (its force and
    # depth model are the controller's, not the layout's process plan) ...
    spec = machine.profile.dot_peen
    depth = float(sim.workpiece.depth.max())
    cone = spec.stylus_cone_deg if spec is not None else 90.0
    dent = 2.0 * depth * math.tan(math.radians(cone / 2.0)) if depth > 0 else None
    process = layout.process
    pitch = process.dot_pitch_mm or (
        layout.font.pitch_em * layout.char_height_mm
        if layout.font.kind == "dot"
        else max(process.stroke_width_mm, MIN_DOT_PITCH_MM)
    )
    if dent is None or dent <= _DENTS_RUN_TOGETHER * pitch:
        return verify_workpiece(
            expected_program(layout, prepared.program), sim.workpiece, spot_mm=2 * layout.half_width_mm,
            layout=layout, dot_mm=dent,
        ).as_dict()  # fmt: skip
    # ... unless its dents run together (wider than the dot pitch): characters cannot be read dot by
    # dot, so only where the text landed is checked, and the record says why.
    assert prepared.request is not None
    ox, oy = prepared.request.options.origin_mm
    dots = np.concatenate([stroke for line in layout.lines for stroke in line.strokes()])
    reach = dent / 2.0
    (x0, y0), (x1, y1) = dots.min(axis=0) - reach, dots.max(axis=0) + reach
    extent = verify_extent(
        (x0 + ox, y0 + oy, x1 + ox, y1 + oy), sim.workpiece, tolerance_mm=0.2 * pitch + 0.1
    )
    note = (
        f"dents {dent:.2f} mm wide at a {pitch:.2f} mm dot pitch run together: characters were not read, "
        "only where the text landed was checked"
    )
    return dataclasses.replace(extent, notes=(note,)).as_dict()
