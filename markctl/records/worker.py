"""Long records work (verify, export, the register) in a child process at the lowest CPU priority.

Why a process: verifying or exporting a million-row registry is minutes of Python (hashing,
JSON, CSV). In a thread of the service it holds the interpreter lock in turns with the event loop
that carries every machine's I/O, so status reports wait behind it. In a child process it cannot
take the interpreter away, and at the lowest CPU priority (``SCHED_IDLE`` on Linux, else nice 19)
the kernel gives the service's loop and the machines' reader threads the CPU first on a small
depot PC; the work still uses every idle cycle. See docs/service.md ("Background work").

The child is ``python -m markctl.records.worker``. It reads one JSON request on stdin (the records
URL travels there, never on the command line where ``ps`` would show a database password) and
writes the answer on stdout: a JSON object for ``verify`` and ``register-file``, the exported bytes
as they are made for ``export`` and ``register`` (the parent streams them on; a slow client stops the
child on a full pipe, so memory stays bounded). Closing the stream (the client went away) or
cancelling the call kills the child at once.

``MARKCTL_BACKGROUND_PRIORITY`` (``idle``, the default; ``nice``; ``normal``) chooses the priority of
this child and of the pre-check worker: the bench compares them in one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import select
import sys
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

from markctl.errors import RecordError

__all__ = [
    "background_worker",
    "exit_with",
    "export_chunks",
    "lower_priority",
    "register_chunks",
    "run_task",
    "stream_task",
    "uses_worker",
]

PRIORITY_ENV = "MARKCTL_BACKGROUND_PRIORITY"
_CHUNK = 500  # records or weapons per streamed chunk
_READ = 1 << 16  # bytes the parent reads from the child at a time


def lower_priority() -> str:
    """Put this process at the priority ``MARKCTL_BACKGROUND_PRIORITY`` names; returns what it got.

    ``idle`` is Linux's SCHED_IDLE: the process runs only when no normal process wants the CPU
    (and a normal process that wakes takes the CPU from it at once); ``nice`` is nice 19 (a small
    share of the CPU under contention); ``normal`` leaves the priority alone. Where SCHED_IDLE is
    missing (not Linux) nice 19 is used instead.
    """
    wanted = os.environ.get(PRIORITY_ENV, "idle").strip().lower()
    if wanted == "normal":
        return "normal"
    if wanted == "idle" and hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "idle"
        except OSError:
            pass
    with contextlib.suppress(OSError):
        os.nice(19 - os.nice(0))
    return "nice"


def exit_with(pid: int) -> None:
    """End this process as soon as process ``pid`` (the service) has ended, however it ended.

    A worker blocked on its parent's pipes never sees an end of file when the parent is killed
    (it holds a copy of the pipe's other end itself), and a verify writes nothing for minutes: without
    this a killed service would leave its workers running. Linux's pidfd wakes a thread the
    moment the process ends; elsewhere the thread looks every second.
    """

    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                time.sleep(1.0)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    continue
        os._exit(0)

    threading.Thread(target=watch, name="markctl-exit-with-parent", daemon=True).start()


def background_worker(service_pid: int) -> None:
    """A background worker's start: the lowest priority, and an end with the service."""
    lower_priority()
    exit_with(service_pid)


# --- what the work produces (the same in the child and, for a memory database, in a thread) ------


def export_chunks(store: Any, fmt: str) -> Iterator[str]:
    """Every record as a JSON list or formula-safe CSV, a few hundred records per chunk."""
    from markctl.records.register import csv_safe

    buffer = io.StringIO()
    if fmt == "csv":
        writer = csv.writer(buffer)
        writer.writerow(["seq", "at", "item_key", "event", "state", "actor", "data", "prev_hash", "hash"])
    else:
        buffer.write("[")
    n = 0
    for n, r in enumerate(store.records(), start=1):
        if fmt == "csv":
            writer.writerow(csv_safe([r.seq, r.at, r.item_key, r.event, r.state, r.actor,
                                      json.dumps(r.data, sort_keys=True, ensure_ascii=False), r.prev_hash, r.hash]))  # fmt: skip
        else:
            buffer.write(("\n  " if n == 1 else ",\n  ") + json.dumps(r.as_dict(), sort_keys=True))
        if n % _CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if fmt == "json":
        buffer.write("\n]\n" if n else "]\n")
    yield buffer.getvalue()


def register_chunks(store: Any, fmt: str, filters: Any) -> Iterator[str]:
    """The register, one weapon per JSON line or its rows as CSV, a few hundred weapons per chunk."""
    from markctl.records.register import COLUMNS, csv_safe, entries

    site = store.registry.site
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    if fmt == "csv":
        writer.writerow(COLUMNS)
    for n, weapon in enumerate(entries(store, filters), start=1):
        if fmt == "csv":
            for row in weapon.rows(site):
                writer.writerow(csv_safe(row))
        else:
            buffer.write(json.dumps(weapon.as_dict(site), ensure_ascii=False) + "\n")
        if n % _CHUNK == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def verify_answer(store: Any, expect_head: str | None) -> dict[str, Any]:
    """What ``GET /records/verify`` answers: the report, the site and whether it is for training."""
    report = store.verify(expect_head=expect_head)
    info = store.registry
    return {**report.as_dict(), "site": info.site, "training": info.training}


def _filters(args: dict[str, Any]) -> Any:
    from markctl.records import ItemState
    from markctl.records.register import Filters

    state = args.get("state")
    return Filters(args.get("since"), args.get("until"), args.get("batch"), args.get("profile"),
                   ItemState(state) if state else None)  # fmt: skip


# --- the parent's side ---------------------------------------------------------------------------


def uses_worker(store: Any) -> bool:
    """Whether another process can open this store (an in-memory SQLite database cannot)."""
    from markctl.records.store import sqlite_path

    return store.engine.dialect.name != "sqlite" or sqlite_path(store.url) is not None


async def _start(store: Any, task: str, args: dict[str, Any]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "markctl.records.worker",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"url": store.url, "task": task, "args": args}).encode() + b"\n")
    with contextlib.suppress(ConnectionError):
        await proc.stdin.drain()
    proc.stdin.close()
    return proc


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Kill the child if it still runs, and reap it (no zombie is left behind)."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    await asyncio.shield(proc.wait())


async def _failure(proc: asyncio.subprocess.Process, task: str) -> RecordError:
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode(errors="replace").strip().splitlines()
    await proc.wait()
    last = err[-1] if err else f"exit status {proc.returncode}"
    return RecordError(f"records {task} failed in its worker process: {last}")


async def run_task(store: Any, task: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run ``verify`` or ``register-file`` in a child; its JSON answer. Cancelling kills the child.

    A refusal the user can act on (a bad ``expect_head``) comes back as ``{"error": ...}``.
    """
    proc = await _start(store, task, args)
    try:
        assert proc.stdout is not None
        out = await proc.stdout.read()
        if not out:
            raise await _failure(proc, task)
        await proc.wait()
        answer: dict[str, Any] = json.loads(out)
        return answer
    finally:
        await _stop(proc)


async def stream_task(store: Any, task: str, args: dict[str, Any]) -> AsyncGenerator[bytes, None]:
    """The bytes of ``export`` or ``register`` as the child makes them; closing the iterator (or
    cancelling its reader) kills the child. A child that fails before its first byte raises
    RecordError; one that fails later ends the stream short (the status was sent already)."""
    proc = await _start(store, task, args)
    try:
        assert proc.stdout is not None
        first = True
        while True:
            data = await proc.stdout.read(_READ)
            if not data:
                break
            first = False
            yield data
        if await proc.wait() != 0:
            failure = await _failure(proc, task)
            if first:
                raise failure
    finally:
        await _stop(proc)


# --- the child -----------------------------------------------------------------------------------


def _child() -> int:
    background_worker(os.getppid())
    request = json.loads(sys.stdin.readline())
    task, args = request["task"], request.get("args", {})
    from markctl.records import RecordStore

    out = sys.stdout.buffer
    try:
        with RecordStore.open(request["url"]) as store:
            if task == "verify":
                try:
                    answer = verify_answer(store, args.get("expect_head"))
                except RecordError as exc:
                    answer = {"error": str(exc)}
                out.write(json.dumps(answer).encode())
            elif task == "export":
                for chunk in export_chunks(store, args["format"]):
                    out.write(chunk.encode())
                    out.flush()
            elif task == "register":
                for chunk in register_chunks(store, args["format"], _filters(args)):
                    out.write(chunk.encode())
                    out.flush()
            elif task == "register-file":
                from markctl.records.register import write_register

                count = write_register(store, args["format"], Path(args["path"]), _filters(args))
                out.write(json.dumps({"weapons": count}).encode())
            else:
                raise RecordError(f"unknown records task {task!r}")
            out.flush()
    except BrokenPipeError:  # the parent stopped reading (client gone): nothing more to do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # the parent reports this line to the user
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_child())
