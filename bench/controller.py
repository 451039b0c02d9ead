"""Controller benchmark: N simulated lasers marking at once from one service process.

Each machine marks one import mark (examples/import) on a scaled simulation clock. Reported, all
from this run:

* wall time of the whole concurrent run (pre-check, records, streaming, verification included);
* the longest machine's simulated marking time, converted to wall seconds (÷ clock factor): what
  the slowest machine needs however good the controller is;
* their ratio (goal <= 1.1: the controller adds at most 10 %);
* the status endpoint (GET /machines through the FastAPI app) polled every 100 ms during the run:
  how many answers, and the slowest one.

    .venv/bin/python bench/controller.py [--machines 16] [--factor 10]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from markctl.api import create_app
from markctl.auth import TokenStore
from markctl.config import MachineEntry, Settings
from markctl.jobs.catalogue import Catalogue
from markctl.jobs.manifest import parse_manifest
from markctl.layouts import program_stats
from markctl.profiles import load_profile
from markctl.records import RecordStore
from markctl.service import MarkService

REPO = Path(__file__).resolve().parent.parent
HEADER = "serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark\n"


async def run(machines: int, factor: float) -> None:
    catalogue = (REPO / "examples/import/parts.toml").read_text()
    names = [f"laser{i:02d}" for i in range(machines)]
    settings = Settings(
        machines={n: MachineEntry(address=f"sim://grbl-1.1?clock=scaled:{factor:g}") for n in names}
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        RecordStore.init(Path(tmp) / "records.db", site="bench", training=True) as store,
    ):
        service = MarkService(settings, store)
        app = create_app(settings, store=store)
        app.state.service = service  # the lifespan's job, done by hand for an in-process client
        app.state.tokens = TokenStore(store)
        token = app.state.tokens.create("bench", "operator")
        await asyncio.gather(*(service.machine(n) for n in names))  # connecting is not marking
        latencies: list[float] = []
        done = asyncio.Event()

        async def poll() -> None:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
                while not done.is_set():
                    start = time.perf_counter()
                    response = await client.get("/machines", headers={"Authorization": f"Bearer {token}"})
                    assert response.status_code == 200 and len(response.json()) == machines
                    latencies.append(time.perf_counter() - start)
                    await asyncio.sleep(0.1)

        poller = asyncio.create_task(poll())
        start = time.perf_counter()
        jobs = await asyncio.gather(
            *(
                service.submit(
                    f"{HEADER}S{i:05d},Beretta,92FS,iti-import,frame,KE,26,yes\n".encode(),
                    catalogue,
                    machine=name,
                    operator="bench",
                    wait=True,
                )  # fmt: skip
                for i, name in enumerate(names)
            )
        )
        wall = time.perf_counter() - start
        done.set()
        await poller
        spans = []
        underruns = 0
        for name in names:
            sim = (await service.machine(name)).simulator
            spans.append((sim.burn_log[-1].t1 - sim.burn_log[0].t0) / factor)
            underruns += sim.planner_underruns
        # An independent ideal: the layouts' own cycle-time estimate for the same program.
        plan = service.plan(parse_manifest(f"{HEADER}S0,Beretta,92FS,iti-import,frame,KE,26,yes\n".encode()),
                            Catalogue.from_toml(catalogue), "grbl-1.1")  # fmt: skip
        program = plan.prepared[0].program
        assert program is not None
        estimate = program_stats(program, load_profile("grbl-1.1")).cycle_time_s / factor
        await service.close()
    assert all(job.state == "done" for job in jobs), [job.error for job in jobs]
    longest = max(spans)
    print(f"machines                      {machines} (sim://grbl-1.1, clock x{factor:g})")
    print(f"wall time                     {wall:.2f} s")
    print(f"longest machine marking time  {longest:.2f} s (simulated {longest * factor:.1f} s / {factor:g})")
    print(f"wall / longest                {wall / longest:.3f} (goal <= 1.1)")
    print(
        f"wall / layouts' estimate      {wall / estimate:.3f} (estimate {estimate * factor:.1f} s simulated)"
    )
    print(f"planner underruns (all)       {underruns} (the head waited for the host)")
    print(f"status answers during run     {len(latencies)}, slowest {max(latencies) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--machines", type=int, default=16)
    parser.add_argument("--factor", type=float, default=10.0, help="simulation clock speed-up")
    args = parser.parse_args()
    asyncio.run(run(args.machines, args.factor))


if __name__ == "__main__":
    main()
