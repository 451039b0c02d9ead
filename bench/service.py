"""Service benchmark: machine I/O under load, in one run.

16 simulated GRBL lasers mark through the HTTP service (a real uvicorn on 127.0.0.1, in this
process: the service's own event loop carries machine I/O, the API and the records) while, at the
same time, auditors verify and export a large registry over HTTP and a 10k-row manifest is
pre-checked (it ends rejected by a bad last row, so it never marks). Before that, the same
machines mark with no other load: the baseline. Printed, all from this run:

* jobs failed (must be 0);
* machine I/O latency p99: from a status report's arrival at the driver's link (the simulator
  hands the bytes over) to the driver's reader taking it, loaded vs baseline (ratio; goal <= 2);
* /health p99 during the loaded phase (goal < 100 ms), and how long verify/export/pre-check took;
* the process's RSS every 100 items of the loaded phase, first vs last (goal: within +-10 %).

The registry is generated with plain SQL inserts of well-formed, hash-chained rows (3 per weapon),
so it verifies. Loopback only; every loop is bounded.

    .venv/bin/python bench/service.py [--items 1000] [--registry-rows 1000000] [--precheck-rows 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from markctl.api import create_app
from markctl.auth import TokenStore
from markctl.config import MachineEntry, ServiceSection, Settings
from markctl.records import RecordStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import bulk_fill  # noqa: E402  (bench/records.py: the same registry generator)

REPO = Path(__file__).resolve().parent.parent
HEADER = "serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark\n"
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[98]


def make_registry(db: Path, weapons: int) -> int:
    """A training registry holding ``weapons`` marked frames (planned, started, marked); returns rows.

    The rows are written the way bench/records.py writes its large registries (one transaction of
    well-formed, chained rows), so both benches measure the same registry format.
    """
    bulk_fill(db, weapons, components=("frame",))
    return weapons * 3


class LinkLatency:
    """Arrival (the simulator feeds the pipe) to handling (the driver's reader gets the bytes) of
    every status report, on every machine's link."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.recording = False

    def instrument(self, transport: Any) -> None:
        # The simulator holds the pipe's feed method from when it attached, so time the link's
        # inbound queue itself (what both the simulator's feed and the driver's read go through).
        inbound = transport._inbound
        pending: deque[float] = deque()
        feed, read = inbound.feed, inbound.read

        def timed_feed(data: bytes) -> None:
            if b"<" in data:
                pending.append(time.perf_counter())
            feed(data)

        async def timed_read(timeout: float | None) -> bytes:
            data: bytes = await read(timeout)
            now = time.perf_counter()
            while pending and (data or not pending):
                arrived = pending.popleft()
                if self.recording:
                    self.samples.append(now - arrived)
            return data

        inbound.feed, inbound.read = timed_feed, timed_read


def manifest(prefix: str, rows: int) -> str:
    return HEADER + "".join(f"{prefix}{n:05d},Beretta,92FS,iti-import,frame,KE,26,yes\n" for n in range(rows))


class Poller(threading.Thread):
    """A client in its own thread: repeats one request until stopped, timing each."""

    def __init__(self, base: str, path: str, headers: dict[str, str], *, stream: bool = False,
                 pause: float = 0.0, limit: int = 100_000) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.base, self.path, self.headers, self.stream, self.pause, self.limit = (
            base,
            path,
            headers,
            stream,
            pause,
            limit,
        )
        self.times: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=600) as client:
            while not self.stop.is_set() and len(self.times) < self.limit:
                start = time.perf_counter()
                try:
                    if self.stream:
                        with client.stream("GET", self.path) as r:
                            for _ in r.iter_bytes():
                                pass
                            ok = r.status_code == 200
                    else:
                        ok = client.get(self.path).status_code == 200
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    ok = True  # counted as a failure above
                if not ok:
                    self.failures.append(self.path)
                self.times.append(time.perf_counter() - start)
                self.stop.wait(self.pause)


async def mark_all(client: httpx.AsyncClient, service: Any, names: list[str], per_machine: int, tag: str,
                   on_item: Any = None) -> int:  # fmt: skip
    """Each machine marks ``per_machine`` items; returns how many jobs did not end "done"."""
    catalogue = (REPO / "examples/import/parts.toml").read_text()
    ids = []
    for i, name in enumerate(names):
        body = {
            "manifest_csv": manifest(f"{tag}{i:02d}-", per_machine),
            "catalogue_toml": catalogue,
            "machine": name,
        }
        response = await client.post("/jobs", json=body)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    jobs = [service.jobs[i] for i in ids]
    seen = 0
    while not all(j.finished for j in jobs):
        await asyncio.sleep(0.2)
        done = sum(len(j.ended) for j in jobs)
        if on_item is not None and done != seen:
            on_item(done)
            seen = done
    if on_item is not None:
        on_item(sum(len(j.ended) for j in jobs))
    return sum(j.state != "done" for j in jobs)


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "records.db"
        t0 = time.perf_counter()
        rows = make_registry(db, args.registry_rows // 3)
        print(f"registry: {rows} rows generated in {time.perf_counter() - t0:.1f} s")
        names = [f"laser{i:02d}" for i in range(args.machines)]
        address = f"sim://grbl-1.1?clock={args.clock}"
        settings = Settings(machines={**{n: MachineEntry(address=address) for n in names},
                                      "precheck": MachineEntry(address="sim://grbl-1.1?clock=instant")},
                            service=ServiceSection(keep_finished_jobs=1000))  # fmt: skip
        with RecordStore.open(db) as store:
            tokens = TokenStore(store)
            op = {"Authorization": f"Bearer {tokens.create('bench-op', 'operator')}"}
            aud = {"Authorization": f"Bearer {tokens.create('bench-aud', 'auditor')}"}
            app = create_app(settings, store=store)
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", timeout_keep_alive=600)
            )
            serving = asyncio.create_task(server.serve())
            while not server.started:
                await asyncio.sleep(0.05)
            port = server.servers[0].sockets[0].getsockname()[1]
            base = f"http://127.0.0.1:{port}"
            service = app.state.service
            latency = LinkLatency()
            for name in names:
                latency.instrument((await service.machine(name)).driver.transport)
            try:
                async with httpx.AsyncClient(base_url=base, headers=op, timeout=600) as client:
                    # 1. baseline: marking alone
                    latency.recording = True
                    failed = await mark_all(client, service, names, args.baseline_items, "BASE")
                    baseline = list(latency.samples)
                    latency.samples.clear()
                    print(f"baseline: {len(names) * args.baseline_items} items, {failed} jobs failed, "
                          f"{len(baseline)} status reports")  # fmt: skip

                    # 2. the same machines marking, with auditors and a pre-check at the same time
                    health = Poller(base, "/health", {}, pause=0.05)
                    verify = Poller(base, "/records/verify", aud, limit=args.repeat)
                    export = Poller(base, "/records/export?format=csv", aud, stream=True, limit=args.repeat)
                    pollers = [health, verify, export]
                    for poller in pollers:
                        poller.start()
                    rejected = (
                        "ZZ99,Beretta,92FS,iti-import,frame,ZZ,26,yes\n"  # blocks the batch: never marks
                    )
                    big = {"manifest_csv": manifest("PRE", args.precheck_rows - 1) + rejected,
                           "catalogue_toml": (REPO / "examples/import/parts.toml").read_text(), "machine": "precheck"}  # fmt: skip
                    pre_start = time.perf_counter()
                    precheck = asyncio.create_task(client.post("/jobs", json=big))
                    rss: list[tuple[int, float]] = []

                    def on_item(done: int) -> None:
                        if not rss or done - rss[-1][0] >= 100:
                            rss.append((done, rss_mb()))

                    per_machine = max(1, args.items // len(names))
                    failed_loaded = await mark_all(client, service, names, per_machine, "LOAD", on_item)
                    pre = await precheck
                    pre_s = time.perf_counter() - pre_start
                    for poller in pollers:
                        poller.stop.set()
                    for poller in pollers:  # joined off the loop: the server they talk to runs on it
                        await asyncio.to_thread(poller.join, 600)
                    loaded = list(latency.samples)
            finally:
                server.should_exit = True
                await serving

        ratio = p99(loaded) / p99(baseline)
        print(f"loaded: {len(names) * per_machine} items on {len(names)} machines, "
              f"registry {rows} rows, pre-check {args.precheck_rows} rows")  # fmt: skip
        print(f"jobs failed: {failed + failed_loaded}")
        print(f"machine I/O latency p99: {p99(loaded) * 1e3:.2f} ms loaded vs {p99(baseline) * 1e3:.2f} ms "
              f"alone (ratio {ratio:.2f}; goal <= 2)  [{len(loaded)} / {len(baseline)} reports]")  # fmt: skip
        print(
            f"/health p99: {p99(health.times) * 1e3:.1f} ms over {len(health.times)} requests (goal < 100 ms)"
        )
        print(f"verify: {len(verify.times)} runs, mean {statistics.fmean(verify.times or [0]):.1f} s; "
              f"export csv: {len(export.times)} runs, mean {statistics.fmean(export.times or [0]):.1f} s; "
              f"client errors: {len(verify.failures) + len(export.failures) + len(health.failures)}")  # fmt: skip
        print(f"pre-check of {args.precheck_rows} rows: {pre.status_code} in {pre_s:.1f} s")
        if len(rss) >= 2:
            first, last = rss[0][1], rss[-1][1]
            print(f"RSS: {first:.0f} MB at item {rss[0][0]} -> {last:.0f} MB at item {rss[-1][0]} "
                  f"({(last - first) / first:+.1%}; goal within +-10 %); samples: "
                  + ", ".join(f"{n}:{mb:.0f}" for n, mb in rss))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=16)
    parser.add_argument(
        "--items", type=int, default=1000, help="items marked in the loaded phase (all machines)"
    )
    parser.add_argument("--baseline-items", type=int, default=2, help="items per machine with no other load")
    parser.add_argument("--registry-rows", type=int, default=1_000_000)
    parser.add_argument("--precheck-rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="at most this many verify and export runs")
    parser.add_argument("--clock", default="instant", help="simulation clock of the lasers")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
