"""Service benchmark: machine I/O under load, in one run.

Every party runs in its own process, as in a depot: 16 simulated GRBL lasers (``markctl sim serve
grbl-1.1 --tcp``, registered with the service as real ``grbl+tcp://`` addresses), the service
(uvicorn + the app, on a production registry), the auditors' clients and this orchestrator. First
the machines mark with no other load (the baseline); then they mark again while, at the same time,
auditors verify and export the registry (``--registry-rows``, 1,000,000 by default) over HTTP, a
manifest of ``--precheck-rows`` rows is pre-checked again and again (it ends rejected by a bad last
row, so it never marks) and ``/health`` is polled. The loaded phase marks ``--items`` items and goes
on (whole rounds) until verify and export have each finished once, or ``--max-loaded-s``.

Printed, all from this run:

* jobs failed (must be 0);
* machine I/O latency p99: a status report's trip from the simulator's socket write (its own
  process) to the driver's read in the service (both clocks are the system's CLOCK_MONOTONIC),
  loaded vs baseline: the ratio (goal <= 2);
* ``/health`` p99 during the loaded phase (goal < 100 ms); verify, export and pre-check times;
* the service process's RSS every 100 items of the loaded phase: item 100 vs the last (goal +-10 %).

The registry is generated once per size with plain SQL inserts of well-formed, hash-chained rows
(bench/records.py ``bulk_fill``; ``records verify`` passes on it) and cached in
``$TMPDIR/markctl-bench-service``; each run works on a copy. Loopback only; every wait is bounded.

    .venv/bin/python bench/service.py [--items 1000] [--registry-rows 1000000] [--precheck-rows 10000]
        [--priority idle|nice|normal]   # of the service's background workers (verify, export, pre-check)
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import bulk_fill  # noqa: E402  (bench/records.py: the same registry generator)

REPO = Path(__file__).resolve().parent.parent
HEADER = "serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark\n"
PAGE = os.sysconf("SC_PAGE_SIZE")
FINISHED = {"done", "failed", "aborted", "rejected"}

#: The simulator's process: ``markctl sim serve`` with one addition, the time of every status
#: report's socket write, kept in a file (flushed in blocks: memory stays flat).
SIM_CHILD = r"""
import array, asyncio, atexit, os, sys, time
sent, path = array.array("d"), os.environ["BENCH_SENT"]
def flush():
    with open(path, "ab") as f:
        sent.tofile(f)
    del sent[:]
write = asyncio.StreamWriter.write
def timed_write(self, data):
    n = data.count(b"<")
    if n:
        sent.extend([time.perf_counter()] * n)
        if len(sent) > 65536:
            flush()
    return write(self, data)
asyncio.StreamWriter.write = timed_write
atexit.register(flush)
from markctl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE / 1e6


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[98]


def manifest(prefix: str, rows: int) -> str:
    return HEADER + "".join(f"{prefix}{n:05d},Beretta,92FS,iti-import,frame,KE,26,yes\n" for n in range(rows))


def cached_registry(rows: int) -> Path:
    """A production registry of ``rows`` rows (3 per weapon), built once per size and kept."""
    cache = Path(tempfile.gettempdir()) / "markctl-bench-service"
    cache.mkdir(exist_ok=True)
    db = cache / f"registry-{rows}.db"
    if not db.exists():
        t0 = time.perf_counter()
        partial = cache / f"partial-{os.getpid()}.db"
        for leftover in cache.glob(f"{partial.name}*"):
            leftover.unlink()
        bulk_fill(partial, max(1, rows // 3), components=("frame",), training=False)
        partial.with_name(partial.name + ".key").rename(db.with_name(db.name + ".key"))
        partial.rename(db)
        print(f"registry: {rows} rows generated in {time.perf_counter() - t0:.1f} s (cached in {cache})")
    return db


# --- the service's process -------------------------------------------------------------------------


def service_child(db: Path, recv_dir: Path) -> None:
    """The service, with the time of every status report's read by a driver kept in a file per machine."""
    import uvicorn

    from markctl.api import create_app
    from markctl.config import ServiceSection, Settings
    from markctl.drivers.transports.serial import TCPTransport
    from markctl.records import RecordStore

    logs: dict[str, array.array[float]] = {}

    def flush(port: str) -> None:
        with open(recv_dir / f"{port}.recv", "ab") as f:
            logs[port].tofile(f)
        del logs[port][:]

    read = TCPTransport.read

    async def timed_read(self: TCPTransport, timeout: float | None = None) -> bytes:
        data = await read(self, timeout)
        n = data.count(b"<")
        if n:
            now = time.perf_counter()
            port = re.findall(r":(\d+)", self.description)[-1]
            log = logs.setdefault(port, array.array("d"))
            log.extend([now] * n)
            if len(log) > 65536:
                flush(port)
        return data

    TCPTransport.read = timed_read  # type: ignore[method-assign]
    settings = Settings(service=ServiceSection(keep_finished_jobs=10_000))
    store = RecordStore.open(db)
    app = create_app(settings, store=store)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_keep_alive=600))
    # uvicorn raises the signal again once it has shut down: let it end this process through
    # the finally below (the last timestamps are written), not by the default action.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run(sockets=[sock])
    finally:
        for port in list(logs):
            flush(port)
        store.close()


# --- clients in their own processes --------------------------------------------------------------


def poll(base: str, path: str, headers: dict[str, str], stream: bool, pause: float, out: Any) -> None:
    """Repeat one request until terminated; put (path, started, seconds, ok) for each one."""
    with httpx.Client(base_url=base, headers=headers, timeout=3600) as client:
        while True:
            start = time.perf_counter()
            try:
                if stream:
                    with client.stream("GET", path) as r:
                        for _ in r.iter_bytes():
                            pass
                        ok = r.status_code == 200
                else:
                    ok = client.get(path).status_code == 200
            except httpx.HTTPError:
                ok = False
            out.put((path, start, time.perf_counter() - start, ok))
            time.sleep(pause)


class Pollers:
    def __init__(self, base: str, specs: list[tuple[str, dict[str, str], bool, float]]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.out = ctx.Queue()
        self.procs = [ctx.Process(target=poll, args=(base, path, h, stream, pause, self.out), daemon=True)
                      for path, h, stream, pause in specs]  # fmt: skip
        self.results: dict[str, list[tuple[float, float, bool]]] = {path: [] for path, *_ in specs}
        self.started = time.perf_counter()

    def start(self) -> None:
        for p in self.procs:
            p.start()

    def drain(self) -> None:
        while True:
            try:
                path, start, seconds, ok = self.out.get_nowait()
            except Exception:  # queue.Empty
                return
            self.results[path].append((start, seconds, ok))

    def done(self, path: str) -> int:
        self.drain()
        return sum(1 for _, _, ok in self.results[path] if ok)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join(10)
        self.drain()


# --- marking through the API ---------------------------------------------------------------------


async def mark_round(client: httpx.AsyncClient, names: list[str], per_machine: int, tag: str,
                     on_item: Any = None) -> int:  # fmt: skip
    """Each machine marks ``per_machine`` items; returns how many jobs did not end "done"."""
    catalogue = (REPO / "examples/import/parts.toml").read_text()
    before = {j["id"] for j in (await client.get("/jobs")).json()}
    ids: set[str] = set()
    # Submitted together; each answer waits for its pre-check, so progress is sampled meanwhile.
    submitting = [asyncio.ensure_future(client.post("/jobs", json={
        "manifest_csv": manifest(f"{tag}{i:02d}-", per_machine), "catalogue_toml": catalogue, "machine": name}))
        for i, name in enumerate(names)]  # fmt: skip
    while not all(s.done() for s in submitting):
        await asyncio.sleep(0.5)
        if on_item is not None:
            jobs = (await client.get("/jobs")).json()
            on_item(
                sum(
                    sum(j["counts"].values()) for j in jobs if j["id"] not in before and j["machine"] in names
                )
            )
    for response in (s.result() for s in submitting):
        assert response.status_code == 202, response.text
        ids.add(response.json()["id"])
    while True:
        await asyncio.sleep(0.5)
        jobs = [j for j in (await client.get("/jobs")).json() if j["id"] in ids]
        if on_item is not None:
            on_item(sum(sum(j["counts"].values()) for j in jobs))
        if all(j["state"] in FINISHED for j in jobs):
            return sum(j["state"] != "done" for j in jobs)


async def precheck_loop(client: httpx.AsyncClient, rows: int, runs: list[float]) -> None:
    """Pre-check a ``rows``-row manifest (rejected by its last row) again and again until cancelled."""
    body = {"manifest_csv": manifest("PRE", rows - 1) + "ZZ99,Beretta,92FS,iti-import,frame,ZZ,26,yes\n",
            "catalogue_toml": (REPO / "examples/import/parts.toml").read_text(), "machine": "precheck"}  # fmt: skip
    while True:
        start = time.perf_counter()
        response = await client.post("/jobs", json=body)
        assert response.status_code == 422, response.text
        runs.append(time.perf_counter() - start)


def start_sim(clock: str, sent_file: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SIM_CHILD, "sim", "serve", "grbl-1.1", "--tcp", "127.0.0.1:0", "--clock", clock],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "BENCH_SENT": str(sent_file)},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    port = int(line.rsplit(":", 1)[1])
    return proc, port


def latencies(run: Path, ports: list[int], phases: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Pair the n-th status report written by each simulator with the n-th read by its driver."""
    out: dict[str, list[float]] = {phase: [] for phase in phases}
    for port in ports:
        sent, recv = array.array("d"), array.array("d")
        for arr, name in ((sent, f"{port}.sent"), (recv, f"{port}.recv")):
            path = run / name
            if path.exists():
                arr.frombytes(path.read_bytes())
        for s, r in zip(sent, recv, strict=False):
            for phase, (t0, t1) in phases.items():
                if t0 <= r <= t1:
                    out[phase].append(r - s)
    return out


async def main(args: argparse.Namespace) -> None:
    db_cached = cached_registry(args.registry_rows)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        db = run / "records.db"
        t0 = time.perf_counter()
        shutil.copy(db_cached, db)
        shutil.copy(db_cached.with_name(db_cached.name + ".key"), db.with_name(db.name + ".key"))
        print(f"registry: {args.registry_rows} rows copied in {time.perf_counter() - t0:.1f} s")
        from markctl.auth import TokenStore
        from markctl.records import RecordStore

        with RecordStore.open(db) as store:
            tokens = TokenStore(store)
            auth = {role: {"Authorization": f"Bearer {tokens.create(f'bench-{role}', role)}"}
                    for role in ("operator", "supervisor", "auditor")}  # fmt: skip
        sims: list[tuple[subprocess.Popen[str], int]] = []
        service: subprocess.Popen[str] | None = None
        pollers: Pollers | None = None
        try:
            for i in range(args.machines):
                sims.append(start_sim(args.clock, run / f"sim{i}.sent"))
            for i in range(args.machines):  # renamed by port at the end (a simulator knows its port late)
                (run / f"sim{i}.sent").touch()
            env = {**os.environ, "MARKCTL_BACKGROUND_PRIORITY": args.priority}
            service = subprocess.Popen([sys.executable, __file__, "--role-service", str(db), str(run)],
                                       stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
            assert service.stdout is not None
            base = f"http://127.0.0.1:{int(service.stdout.readline())}"
            async with httpx.AsyncClient(base_url=base, timeout=3600) as client:
                for _ in range(300):
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/health")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
                names = [f"laser{i:02d}" for i in range(args.machines)]
                for name, (_, port) in zip(names, sims, strict=True):
                    r = await client.post("/machines", headers=auth["supervisor"],
                                          json={"name": name, "address": f"grbl+tcp://127.0.0.1:{port}",
                                                "profile": "grbl-1.1"})  # fmt: skip
                    assert r.status_code == 201, r.text
                r = await client.post("/machines", headers=auth["supervisor"],  # pre-checks only: never opened
                                      json={"name": "precheck", "address": "grbl+tcp://127.0.0.1:9",
                                            "profile": "grbl-1.1"})  # fmt: skip
                assert r.status_code == 201, r.text
                client.headers.update(auth["operator"])

                # 1. baseline: marking alone
                b0 = time.perf_counter()
                failed = await mark_round(client, names, args.baseline_items, "BASE")
                b1 = time.perf_counter()
                print(
                    f"baseline: {len(names) * args.baseline_items} items in {b1 - b0:.1f} s, {failed} jobs failed"
                )

                # 2. the same machines marking, with auditors and pre-checks at the same time
                pollers = Pollers(base, [("/health", {}, False, 0.05), ("/records/verify", auth["auditor"], False, 0.0),
                                         ("/records/export?format=csv", auth["auditor"], True, 0.0)])  # fmt: skip
                pollers.start()
                pre_runs: list[float] = []
                pre_task = asyncio.create_task(precheck_loop(client, args.precheck_rows, pre_runs))
                rss: list[tuple[int, float]] = []
                marked = 0

                def on_item(done: int) -> None:
                    total = marked + done
                    if (not rss and total >= 100) or (rss and total - rss[-1][0] >= 100):
                        rss.append((total, rss_mb(service.pid)))  # type: ignore[union-attr]

                l0 = time.perf_counter()
                per_machine = max(1, min(args.items, args.round_items) // len(names))
                failed_loaded, rounds = 0, 0
                while True:
                    failed_loaded += await mark_round(client, names, per_machine, f"L{rounds:03d}", on_item)
                    rounds += 1
                    marked += per_machine * len(names)
                    enough = (
                        marked >= args.items
                        and pollers.done("/records/verify")
                        and pollers.done("/records/export?format=csv")
                    )
                    if enough or time.perf_counter() - l0 > args.max_loaded_s:
                        break
                l1 = time.perf_counter()
                jobs = (await client.get("/jobs")).json()
                prechecking = [j.get("prechecked", 0) for j in jobs if j["state"] == "pre-checking"]
                pre_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pre_task
                pollers.stop()
        finally:
            if pollers is not None:
                pollers.stop()
            if service is not None:
                service.send_signal(signal.SIGTERM)
                service.wait(120)
            for proc, _ in sims:
                proc.send_signal(signal.SIGTERM)
            for proc, _ in sims:
                proc.wait(60)
        for i, (_, port) in enumerate(sims):
            (run / f"sim{i}.sent").rename(run / f"{port}.sent")
        lat = latencies(run, [port for _, port in sims], {"baseline": (b0, b1), "loaded": (l0, l1)})

    base_l, load_l = lat["baseline"], lat["loaded"]
    ratio = p99(load_l) / p99(base_l)
    health = [s for start, s, _ in pollers.results["/health"] if l0 <= start <= l1]
    verify = pollers.results["/records/verify"]
    export = pollers.results["/records/export?format=csv"]
    errors = sum(not ok for rows in pollers.results.values() for _, _, ok in rows)
    print(f"loaded: {marked} items on {len(names)} machines in {rounds} rounds, {l1 - l0:.0f} s; "
          f"registry {args.registry_rows} rows; pre-check {args.precheck_rows} rows; background priority "
          f"{args.priority}; simulator clock {args.clock}")  # fmt: skip
    print(f"jobs failed: {failed + failed_loaded}  (goal 0)")
    print(f"machine I/O latency p99: {p99(load_l) * 1e3:.2f} ms loaded vs {p99(base_l) * 1e3:.2f} ms alone "
          f"(ratio {ratio:.2f}; goal <= 2)  [{len(load_l)} / {len(base_l)} status reports]; "
          f"p50 {statistics.median(load_l or [0]) * 1e3:.2f} vs {statistics.median(base_l or [0]) * 1e3:.2f} ms")  # fmt: skip
    print(f"/health p99: {p99(health) * 1e3:.1f} ms over {len(health)} requests, max {max(health or [0]) * 1e3:.0f} ms "
          f"(goal < 100 ms)")  # fmt: skip
    for label, runs in (("verify", verify), ("export csv", export)):
        finished = [s for _, s, ok in runs if ok]
        print(f"{label}: {len(finished)} finished, mean {statistics.fmean(finished or [0]):.1f} s"
              + (f"; one unfinished at the end after {runs[-1][1]:.0f} s" if runs and not runs[-1][2] else ""))  # fmt: skip
    print(f"pre-check of {args.precheck_rows} rows: {len(pre_runs)} finished"
          + (f", mean {statistics.fmean(pre_runs):.1f} s" if pre_runs else "")
          + (f"; the one running had judged {prechecking[0]} rows" if prechecking else ""))  # fmt: skip
    print(f"client errors: {errors}")
    if len(rss) >= 2:
        at100 = min(rss, key=lambda s: abs(s[0] - 100))
        at1000 = min(rss, key=lambda s: abs(s[0] - 1000))
        print(f"RSS at item {at100[0]}: {at100[1]:.0f} MB; at item {at1000[0]}: {at1000[1]:.0f} MB "
              f"(ratio {at1000[1] / at100[1]:.3f}; goal 0.9-1.1)")  # fmt: skip
        first, last = rss[0][1], rss[-1][1]
        print(f"RSS: {first:.0f} MB at item {rss[0][0]} -> {last:.0f} MB at item {rss[-1][0]} "
              f"(ratio {last / first:.3f}, {(last - first) / first:+.1%}; goal within +-10 %); samples: "
              + ", ".join(f"{n}:{mb:.0f}" for n, mb in rss))  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--role-service":
        service_child(Path(sys.argv[2]), Path(sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=16)
    parser.add_argument(
        "--items", type=int, default=1000, help="items marked in the loaded phase (all machines)"
    )
    parser.add_argument(
        "--round-items", type=int, default=1000, help="items per round of jobs (all machines)"
    )
    parser.add_argument("--baseline-items", type=int, default=4, help="items per machine with no other load")
    parser.add_argument("--registry-rows", type=int, default=1_000_000)
    parser.add_argument("--precheck-rows", type=int, default=10_000)
    parser.add_argument("--max-loaded-s", type=float, default=3600.0)
    parser.add_argument("--priority", default="idle", choices=("idle", "nice", "normal"))
    parser.add_argument("--clock", default="instant", help="simulation clock of the lasers")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(parser.parse_args()))
