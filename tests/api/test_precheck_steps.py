"""The service's pre-check steps are sized by the work they take (not a fixed 8 rows), report their
progress, give the verdicts a plain pre-check gives, and run in a worker at idle CPU priority."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

import markctl.service as service_module
from markctl.config import MachineEntry, Settings
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import parse_manifest
from markctl.profiles import load_profile
from markctl.records import RecordStore
from markctl.service import PRECHECK_FIRST_CHUNK, PRECHECK_STEP_S, MarkService

HEADER = "serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark\n"


def _manifest(rows: int) -> bytes:
    return (
        HEADER + "".join(f"T{n:04d},Beretta,92FS,iti-import,frame,KE,26,yes\n" for n in range(rows))
    ).encode()


def _run(records_db: Path, repo: Path, rows: int, *, process: bool,
         cost: float | None = None) -> tuple[list[int], list[int], Any, Any]:  # fmt: skip
    """Pre-check ``rows`` rows through the service; ``cost`` fakes each item's CPU seconds."""
    sizes: list[int] = []
    progress: list[int] = []
    real = service_module._judge_timed

    def judged(items: list[Any], *args: Any) -> tuple[list[Any], float]:
        verdicts, cpu = real(items, *args)
        sizes.append(len(items))
        return verdicts, cpu if cost is None else cost * len(items)

    settings = Settings(machines={"laser": MachineEntry(address="sim://grbl-1.1?clock=instant")})
    manifest = parse_manifest(_manifest(rows), source="manifest")
    catalogue = Catalogue.from_toml((repo / "examples/import/parts.toml").read_text(), "catalogue")
    profile = load_profile("grbl-1.1")

    async def go() -> tuple[Any, Any]:
        with RecordStore.open(records_db) as store:
            service = MarkService(settings, store, precheck_process=process)
            try:
                plan = await service.precheck(manifest, catalogue, profile, progress.append)
                policy = None
                if process and hasattr(os, "SCHED_IDLE"):
                    pids = list(service._prechecker._processes)  # type: ignore[union-attr]
                    policy = [os.sched_getscheduler(pid) for pid in pids]
                return plan, policy
            finally:
                await service.close()

    if cost is not None:
        service_module._judge_timed = judged  # type: ignore[assignment]
    try:
        plan, policy = asyncio.run(go())
    finally:
        service_module._judge_timed = real
    return sizes, progress, plan, policy


def test_steps_grow_to_the_target_time_for_quick_items(records_db: Path, repo: Path) -> None:
    sizes, progress, plan, _ = _run(records_db, repo, 120, process=False, cost=0.01)
    step = int(PRECHECK_STEP_S / 0.01)
    assert sizes[0] == PRECHECK_FIRST_CHUNK and sizes[1] == min(step, 120 - PRECHECK_FIRST_CHUNK)
    assert sum(sizes) == 120 and len(sizes) < 120 / 8  # fewer round trips than 8-row steps
    assert progress == [sum(sizes[: i + 1]) for i in range(len(sizes))]
    assert [r["line"] for r in plan.rows()] == list(range(2, 122))


def test_slow_items_go_one_at_a_time_so_a_cancel_waits_for_one_item(records_db: Path, repo: Path) -> None:
    sizes, _, _, _ = _run(records_db, repo, 6, process=False, cost=2 * PRECHECK_STEP_S)
    assert sizes == [PRECHECK_FIRST_CHUNK, 1, 1, 1, 1]


def test_the_worker_gives_the_plain_pre_check_verdicts_at_idle_priority(records_db: Path, repo: Path) -> None:
    _, progress, plan, policy = _run(records_db, repo, 12, process=True)
    _, _, plain, _ = _run(records_db, repo, 12, process=False)
    assert progress[-1] == 12
    assert plan.rows() == plain.rows()
    if hasattr(os, "SCHED_IDLE") and os.environ.get("MARKCTL_BACKGROUND_PRIORITY", "idle") == "idle":
        assert policy and set(policy) == {os.SCHED_IDLE}
    else:
        pytest.skip("SCHED_IDLE is Linux's")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)  # a zombie
    except FileNotFoundError:
        return True


SERVICE_SCRIPT = """
import asyncio, sys, time
from pathlib import Path
from markctl.config import MachineEntry, Settings
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import parse_manifest
from markctl.profiles import load_profile
from markctl.records import RecordStore
from markctl.service import MarkService

async def main():
    store = RecordStore.open(sys.argv[1])
    settings = Settings(machines={"laser": MachineEntry(address="sim://grbl-1.1?clock=instant")})
    service = MarkService(settings, store, precheck_process=True)
    manifest = parse_manifest(sys.argv[3].encode(), source="manifest")
    catalogue = Catalogue.from_toml(Path(sys.argv[2]).read_text(), "catalogue")
    await service.precheck(manifest, catalogue, load_profile("grbl-1.1"))
    print(*service._prechecker._processes, flush=True)
    time.sleep(600)

asyncio.run(main())
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_the_pre_check_worker_ends_when_the_service_is_killed(records_db: Path, repo: Path) -> None:
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", SERVICE_SCRIPT, str(records_db),
                             str(repo / "examples/import/parts.toml"), _manifest(2).decode()],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        workers = [int(pid) for pid in proc.stdout.readline().split()]
        assert workers and not any(_gone(pid) for pid in workers)
    finally:
        proc.kill()  # no clean-up runs: as when the service is killed
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    deadline = time.monotonic() + 30  # a bound on the wait, not a timing assertion
    while not all(_gone(pid) for pid in workers):
        assert time.monotonic() < deadline, f"pre-check worker(s) {workers} outlived the service"
        time.sleep(0.1)
