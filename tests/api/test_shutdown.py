"""SIGTERM to a real ``markctl serve`` with an SSE client attached and a job marking: the job is
aborted, the machine reaches its safe state, the stream ends and the process exits within a bound."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from markctl.auth import TokenStore
from markctl.records import RecordStore

EXIT_BOUND_S = 20.0  # shutdown_grace_s (5) + the driver's bounded safe-state path, with margin

MANIFEST = """serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark
S1,Beretta,92FS,iti-import,frame,KE,26,yes
S2,Beretta,92FS,iti-import,frame,KE,26,yes
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, tmp_path: Path, machines: str) -> None:
        (tmp_path / "markctl.toml").write_text(f"{machines}\n[service]\nshutdown_grace_s = 5\n")
        with RecordStore.init(tmp_path / "r.db", site="test-depot", training=True) as store:
            tokens = TokenStore(store)
            self.tokens = {role: tokens.create(f"{role}-1", role) for role in ("operator", "supervisor")}
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.db = tmp_path / "r.db"
        self.log = tmp_path / "serve.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "markctl", "serve", "--port", str(self.port), "--records", str(self.db)],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=self._log_file,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.base}/health", timeout=1)
                return
            except httpx.TransportError:
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "the service did not come up"
                time.sleep(0.1)

    def headers(self, role: str = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log_file.close()


@pytest.fixture
def server(tmp_path: Path) -> Any:
    started: list[Server] = []

    def start(machines: str) -> Server:
        started.append(Server(tmp_path, machines))
        return started[-1]

    yield start
    for s in started:
        s.stop()


def _follow(base: str, headers: dict[str, str], job_id: str, into: list[tuple[str, dict[str, Any]]]) -> None:
    try:
        _read_events(base, headers, job_id, into)
    except httpx.HTTPError as exc:  # the test asserts on what arrived; this says how the stream ended
        into.append(("transport-error", {"error": repr(exc)}))


def _read_events(
    base: str, headers: dict[str, str], job_id: str, into: list[tuple[str, dict[str, Any]]]
) -> None:
    with httpx.stream("GET", f"{base}/jobs/{job_id}/events", headers=headers, timeout=60) as stream:
        kind = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                into.append((kind, json.loads(line.removeprefix("data: "))))


@pytest.mark.slow
def test_sigterm_with_an_sse_client_aborts_the_job_and_reaches_a_safe_state(server: Any, repo: Path) -> None:
    srv: Server = server('[machines.laser]\naddress = "sim://grbl-1.1?clock=realtime"\n')
    body = {"manifest_csv": MANIFEST, "catalogue_toml": (repo / "examples/import/parts.toml").read_text(),
            "machine": "laser"}  # fmt: skip
    submitted = httpx.post(f"{srv.base}/jobs", json=body, headers=srv.headers(), timeout=30)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    events: list[tuple[str, dict[str, Any]]] = []
    follower = threading.Thread(target=_follow, args=(srv.base, srv.headers(), job_id, events), daemon=True)
    follower.start()
    deadline = time.monotonic() + 30
    while not any(kind == "progress" for kind, _ in events):
        assert time.monotonic() < deadline, f"no progress from the machine: {events[:5]}"
        time.sleep(0.05)

    srv.proc.send_signal(signal.SIGTERM)
    code = srv.proc.wait(EXIT_BOUND_S)  # raises TimeoutExpired if the service hangs on its client
    follower.join(5)
    assert not follower.is_alive(), "the event stream did not end"
    # uvicorn re-raises the signal once shut down, so the exit status is "terminated by SIGTERM".
    assert code in (0, -signal.SIGTERM), (code, srv.log.read_text()[-2000:])
    assert "Application shutdown complete" in srv.log.read_text()

    ended = [e for kind, e in events if kind == "item-ended"]
    assert ended and ended[0]["item"] == "BERETTA|S1|frame|iti-import"
    assert ended[0]["state"] == "unknown" and ended[0]["safe_state_confirmed"] is True
    assert events[-1] == ("end", {"state": "aborted"})
    with RecordStore.open(srv.db) as store:
        history = store.history("BERETTA|S1|frame|iti-import")
        assert [r.event for r in history] == ["planned", "started", "unknown"]
        assert history[-1].data["error"] == "batch cancelled"
        assert history[-1].data["result"]["safe_state_confirmed"] is True
        assert store.item("BERETTA|S2|frame|iti-import") is None  # the next weapon was never started
        assert store.verify().ok


def test_a_pre_check_stops_when_its_client_goes_away(server: Any, repo: Path) -> None:
    srv: Server = server('[machines.laser]\naddress = "sim://grbl-1.1?clock=instant"\n')
    rows = "".join(f"P{n:05d},Beretta,92FS,iti-import,frame,KE,26,yes\n" for n in range(20_000))
    body = {"manifest_csv": MANIFEST.splitlines(keepends=True)[0] + rows,
            "catalogue_toml": (repo / "examples/import/parts.toml").read_text(), "machine": "laser"}  # fmt: skip
    with pytest.raises(httpx.ReadTimeout):  # 20,000 rows take far longer than this client waits
        httpx.post(f"{srv.base}/jobs", json=body, headers=srv.headers(), timeout=3)
    deadline = time.monotonic() + 30  # the chunk in progress (8 items) ends first
    while True:
        jobs = httpx.get(f"{srv.base}/jobs", headers=srv.headers(), timeout=5).json()
        if not jobs:
            break  # the pre-check was cancelled and left nothing behind
        assert time.monotonic() < deadline, jobs
        assert [j["state"] for j in jobs] == ["pre-checking"]
        time.sleep(0.2)
    with RecordStore.open(srv.db) as store:
        assert store.items() == []
