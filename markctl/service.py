"""The service layer: what the CLI and the HTTP API both call.

It owns the record store, the named machines (opened on first use, one job at a time each) and the
jobs of this process, each with an event log that progress displays and server-sent events read.
Closing the service aborts running jobs and closes every machine to its safe state.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from markctl.address import parse_address
from markctl.config import MachineEntry, Settings
from markctl.errors import ConfigError, MarkctlError
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import Manifest, parse_manifest
from markctl.jobs.owner import owner_is_gone
from markctl.jobs.runner import BatchReport, Plan, Prepared, precheck, precheck_off_loop, run_plan
from markctl.layouts import MarkRequest, compose
from markctl.layouts import program as make_program
from markctl.layouts.program import MotionProgram
from markctl.machines import Machine, open_machine
from markctl.profiles import load_profile
from markctl.records import Record, RecordStore, RegistryModeError
from markctl.simulator.workpiece import Workpiece
from markctl.verify import expected_program, verify_extent, verify_photo, verify_workpiece

__all__ = ["JobRun", "MarkService"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class JobRun:
    """One job of this process: its pre-check, its events and its result."""

    id: str
    machine: str
    operator: str
    created: str
    state: str = "pre-checked"  # pre-checked | running | done | failed | aborted | rejected
    rows: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    report: BatchReport | None = None
    error: str | None = None
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _notifications: set[asyncio.Task[None]] = field(default_factory=set)

    async def add_event(self, event: dict[str, Any]) -> None:
        async with self._changed:
            self.events.append({"seq": len(self.events) + 1, "at": _now(), **event})
            self._changed.notify_all()

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "machine": self.machine,
            "operator": self.operator,
            "created": self.created,
            "state": self.state,
            "error": self.error,
            "counts": self.report.counts() if self.report else {},
            "results": [r.__dict__ for r in self.report.results] if self.report else [],
            "rows": self.rows,
        }

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "aborted", "rejected")

    async def follow(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Events after ``after``, then new ones as they come, until the job has finished."""
        index = after
        while True:
            async with self._changed:
                while index >= len(self.events) and not self.finished:
                    await self._changed.wait()
                batch = self.events[index:]
            for event in batch:
                yield event
            index += len(batch)
            if self.finished and index >= len(self.events):
                return


@dataclass
class _Slot:
    entry: MachineEntry
    machine: Machine | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one job at a time
    opening: asyncio.Lock = field(default_factory=asyncio.Lock)  # one connection per machine


class MarkService:
    """Records, machines and jobs; see the module docstring."""

    def __init__(self, settings: Settings, store: RecordStore, *, out_dir: Path | None = None) -> None:
        self.settings = settings
        self.store = store
        self.out_dir = out_dir
        self._slots = {name: _Slot(entry) for name, entry in settings.machines.items()}
        self.jobs: dict[str, JobRun] = {}
        recovered = store.recover_interrupted(
            "markctl:startup", is_stale=lambda started: owner_is_gone(started.data.get("owner"))
        )
        self.recovered = [r.item_key for r in recovered]

    # --- machines ----------------------------------------------------------------------------

    def machine_names(self) -> list[str]:
        return sorted(self._slots)

    def add_machine(self, name: str, entry: MachineEntry) -> None:
        if name in self._slots:
            raise ConfigError(f"machine {name!r} exists already")
        self._slots[name] = _Slot(entry)

    def _slot(self, name: str) -> _Slot:
        if name not in self._slots:
            if "://" in name:
                self._slots[name] = _Slot(MachineEntry(address=name))
            else:
                raise ConfigError(
                    f"unknown machine {name!r} (known: {', '.join(sorted(self._slots)) or 'none'})"
                )
        return self._slots[name]

    async def machine(self, name: str) -> Machine:
        """The opened machine of that name; opened on first use, once, however many callers race."""
        slot = self._slot(name)
        async with slot.opening:
            if slot.machine is None:
                slot.machine = await open_machine(slot.entry.address, profile=slot.entry.profile)
        return slot.machine

    def profile_of(self, name: str) -> str:
        """The firmware profile id of a machine (a simulator's address names it)."""
        entry = self._slot(name).entry
        if entry.profile:
            return entry.profile
        address = parse_address(entry.address)
        if address.is_simulated:
            return address.location
        raise ConfigError(f"machine {name!r} ({entry.address}) needs a firmware profile")

    def machine_status(self) -> list[dict[str, Any]]:
        out = []
        for name, slot in sorted(self._slots.items()):
            m = slot.machine
            out.append(
                {
                    "name": name,
                    "address": slot.entry.address,
                    "profile": slot.entry.profile or (m.profile.id if m else None),
                    "state": m.driver.state.value if m else "not connected",
                    "busy": slot.lock.locked(),
                }
            )
        return out

    # --- jobs --------------------------------------------------------------------------------

    def plan(
        self, manifest: Manifest, catalogue: Catalogue, machine_profile_id: str, today: date | None = None
    ) -> Plan:
        return precheck(manifest, catalogue, load_profile(machine_profile_id), today=today)

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
        """Pre-check a manifest and, if it may run, start marking it; returns the job at once."""
        job = self.new_job(machine, operator)
        manifest = parse_manifest(
            manifest_csv, source="manifest", default_mark_profile=self.settings.defaults.mark_profile
        )
        catalogue = Catalogue.from_toml(catalogue_toml, "catalogue")
        plan = await precheck_off_loop(manifest, catalogue, load_profile(self.profile_of(machine)))
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
        slot = self._slot(job.machine)
        self.jobs[job.id] = job
        job.rows = plan.rows()
        blocked = plan.blocking(exclude or set(), overrides or {})
        if blocked:
            job.state = "rejected"
            job.error = f"rows with errors block the batch: lines {', '.join(map(str, sorted(blocked)))}"
            await job.add_event({"type": "rejected", "lines": sorted(blocked)})
            return job
        try:  # before any machine is opened: a production registry takes no simulated mark (ISSUE 10 §2)
            self.store.check_machine(parse_address(slot.entry.address).is_simulated, slot.entry.address)
        except RegistryModeError as exc:
            job.state, job.error = "rejected", str(exc)
            await job.add_event({"type": "rejected", "error": job.error})
            return job
        job.task = asyncio.create_task(
            self._run(job, plan, slot, exclude, overrides, override_by, on_event, continue_on_verify_fail)
        )
        if wait:
            await asyncio.shield(job.task)
        return job

    def new_job(self, machine: str, operator: str) -> JobRun:
        self._slot(machine)
        return JobRun(uuid.uuid4().hex[:12], machine, operator, _now())

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
            job.events.append({"seq": len(job.events) + 1, "at": _now(), **event})
            if on_event is not None:
                on_event(event)
            # Wake SSE followers; keep a reference so the task cannot be collected before it runs.
            task = asyncio.get_running_loop().create_task(_notify(job))
            job._notifications.add(task)
            task.add_done_callback(job._notifications.discard)

        async with slot.lock:
            job.state = "running"
            try:
                machine = await self.machine(job.machine)
                images = self.out_dir / "workpieces" / job.id if self.out_dir else None
                job.report = await run_plan(plan, machine, self.store, operator=job.operator, batch_id=job.id,
                                            exclude=exclude, overrides=overrides, override_by=override_by,
                                            on_event=emit, load_part=load_part, verify=verify_item,
                                            images=images,
                                            continue_on_verify_fail=continue_on_verify_fail)  # fmt: skip
                job.state = "done" if job.report.ok else "failed"
            except asyncio.CancelledError:
                job.state = "aborted"
                await _notify(job)
                raise
            except MarkctlError as exc:
                job.state, job.error = "failed", str(exc)
            except Exception as exc:  # a bug: the job ends visibly, never "running" forever
                job.state, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
            finally:
                await _notify(job)

    async def abort(self, job_id: str) -> JobRun:
        job = self.job(job_id)
        if job.task is not None and not job.task.done():
            job.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job.task
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
        """Abort running jobs, then close every machine to its safe state."""
        for job in list(self.jobs.values()):
            if job.task is not None and not job.task.done():
                await self.abort(job.id)
        for slot in self._slots.values():
            if slot.machine is not None:
                await slot.machine.close()
                slot.machine = None


async def _notify(job: JobRun) -> None:
    async with job._changed:
        job._changed.notify_all()


# --- simulated parts ---------------------------------------------------------------------------

PX_PER_MM = 20.0


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
    """On a simulator: compare the cut with the program (or, for pattern machines, with the layout's
    text block) and read back the Data Matrix."""
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
    assert prepared.request is not None
    ox, oy = prepared.request.options.origin_mm
    dots = np.concatenate([stroke for line in layout.lines for stroke in line.strokes()])
    (x0, y0), (x1, y1) = dots.min(axis=0) - layout.half_width_mm, dots.max(axis=0) + layout.half_width_mm
    tolerance = 0.2 * layout.char_height_mm + 0.3  # a controller's own font differs in detail
    return verify_extent(
        (x0 + ox, y0 + oy, x1 + ox, y1 + oy), sim.workpiece, tolerance_mm=tolerance
    ).as_dict()
