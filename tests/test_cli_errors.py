"""Every failure of every command: one line on stderr that names its cause, no traceback, the right exit code.

Table-driven over the real CLI: most cases run ``markctl.cli.main`` in-process (as the console
script does), a few run ``python -m markctl`` as a subprocess, with MARKCTL_RECORDS pointing at a
fresh file in a temp dir and that dir as the current folder (as a reviewer's script would).
Machines are reached only on loopback: a closed port, a silent TCP server, a simulator served by
``markctl sim serve`` in another process.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from markctl.cli import main

REQ = "examples/requests/iti-import-steel-frame.toml"
STOCKPILE = ("examples/stockpile/manifest.csv", "--parts", "examples/stockpile/parts.toml")
MARK = ["mark", "REQ", "--serial", "P1", "--manufacturer", "M", "--operator", "x"]


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]
    names: tuple[str, ...]  # every one must appear in the error line
    code: int = 2
    config: str | None = None  # a markctl.toml written in the current folder first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _silent_server() -> Iterator[int]:
    """A TCP server that accepts and never says a word (a powered-off controller behind a serial server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


CLOSED = _free_port()

CASES = [
    # --- files -------------------------------------------------------------------------------
    Case(
        "manifest missing",
        ["batch", "missing.csv", "--parts", "missing.toml", "--machine", "sim://grbl-1.1", "--operator", "x"],
        ("missing.csv", "no such file"),
    ),  # fmt: skip
    Case(
        "manifest is a folder",
        ["batch", ".", "--parts", "PARTS", "--machine", "sim://grbl-1.1"],
        ("manifest", "is a folder"),
    ),  # fmt: skip
    Case(
        "parts missing",
        ["batch", "MANIFEST", "--parts", "nope.toml", "--machine", "sim://grbl-1.1"],
        ("--parts", "nope.toml"),
    ),  # fmt: skip
    Case(
        "parts not TOML",
        ["batch", "MANIFEST", "--parts", "MANIFEST", "--machine", "sim://grbl-1.1", "--operator", "x"],
        ("manifest.csv", "not valid TOML"),
    ),  # fmt: skip
    Case("request missing", ["mark", "nope.toml", "--serial", "P1", "--manufacturer", "M"], ("nope.toml",)),
    Case(
        "verify image missing",
        ["verify", "--image", "missing.png", "--record", "1", "--operator", "x"],
        ("missing.png",),
    ),  # fmt: skip
    Case(
        "--out is a file",
        ["batch", "MANIFEST", "--parts", "PARTS", "--out", "MANIFEST"],
        ("--out", "not a folder"),
    ),
    Case(
        "records export into a missing folder",
        ["records", "export", "-o", "no/such/dir/x.csv"],
        ("no/such/dir/x.csv",),
    ),  # fmt: skip
    Case(
        "broken markctl.toml",
        MARK,
        ("markctl.toml", "machines.laser.addres"),
        config="[machines.laser]\naddres = 'sim://grbl-1.1'\n",
    ),  # fmt: skip
    # --- machine addresses -------------------------------------------------------------------
    Case("sim option misspelt", [*MARK, "--machine", "sim://grbl-1.1?clok=instant"], ("clok", "clock")),
    Case(
        "serial port missing",
        [*MARK, "--machine", "grbl+serial://TMP/no-such-port", "--profile", "grbl-1.1"],
        ("no-such-port", "does not exist"),
    ),  # fmt: skip
    Case(
        "baudrate for baud",
        [*MARK, "--machine", "grbl+serial:///dev/null?baudrate=9600", "--profile", "grbl-1.1"],
        ("baudrate", "baud"),
    ),  # fmt: skip
    Case(
        "transport misspelt",
        ["batch", *STOCKPILE, "--machine", "peen+modbus-tpc://127.0.0.1:502", "--profile", "peen-modbus"],
        ("modbus-tpc", "modbus-tcp"),
    ),  # fmt: skip
    Case("hardware without profile", [*MARK, "--machine", "grbl+serial:///dev/null"], ("--profile",)),
    Case(
        "profile of another protocol",
        [*MARK, "--machine", "grbl+serial:///dev/null", "--profile", "peen-modbus"],
        ("peen-modbus", "grbl"),
    ),  # fmt: skip
    Case(
        "unknown profile", [*MARK, "--machine", "grbl+serial:///dev/null", "--profile", "grbl-9"], ("grbl-9",)
    ),
    Case("unknown machine name", [*MARK, "--machine", "lazer"], ("lazer", "unknown machine")),
    Case("bad clock", [*MARK, "--machine", "sim://grbl-1.1?clock=warp"], ("clock", "warp")),
    Case(
        "connection refused",
        [
            "batch",
            *STOCKPILE,
            "--machine",
            f"peen+modbus-tcp://127.0.0.1:{CLOSED}",
            "--profile",
            "peen-modbus",
            "--yes",
            "--operator",
            "x",
        ],
        (f"127.0.0.1:{CLOSED}",),
        1,
    ),  # fmt: skip
    # --- options -----------------------------------------------------------------------------
    Case(
        "override without override-by",
        ["batch", "MANIFEST", "--parts", "PARTS", "--override", "2:waived by variance"],
        ("--override-by",),
    ),  # fmt: skip
    Case(
        "override malformed",
        ["batch", "MANIFEST", "--parts", "PARTS", "--override", "two"],
        ("--override", "LINE:REASON"),
    ),
    Case("no operator", ["batch", *STOCKPILE, "--machine", "sim://peen-modbus", "--yes"], ("--operator",)),
    Case("no machine", ["batch", *STOCKPILE, "--operator", "x"], ("--machine",)),
    Case(
        "no terminal, no --yes",
        ["batch", *STOCKPILE, "--machine", "sim://peen-modbus", "--operator", "x"],
        ("--yes",),
    ),
    Case(
        "mark serial malformed",
        [*MARK[:3], "P#1", *MARK[4:], "--machine", "sim://grbl-1.1"],
        ("--serial", "P#1"),
    ),
    Case(
        "blocked row names line and field",
        [
            "batch",
            "BAD",
            "--parts",
            "PARTS",
            "--machine",
            "sim://grbl-1.1?clock=instant",
            "--operator",
            "x",
            "--yes",
        ],
        ("line 2", "import_country", "--exclude"),
        1,
    ),  # fmt: skip
    Case(
        "sim serve unknown profile",
        ["sim", "serve", "no-such-profile", "--tcp", "127.0.0.1:0"],
        ("no-such-profile",),
    ),
    Case(
        "sim serve bad faults",
        ["sim", "serve", "grbl-1.1", "--tcp", "127.0.0.1:0", "--faults", "explode@line:x"],
        ("--faults",),
    ),  # fmt: skip
    Case(
        "sim serve bad clock",
        ["sim", "serve", "grbl-1.1", "--tcp", "127.0.0.1:0", "--clock", "warp"],
        ("--clock",),
    ),
    Case("profiles show unknown", ["profiles", "show", "nope"], ("nope",)),
    Case(
        "items resolve bad outcome",
        [
            "items",
            "resolve",
            "A|B|frame|iti-import",
            "--outcome",
            "maybe",
            "--reason",
            "r",
            "--supervisor",
            "s",
        ],
        ("--outcome",),
    ),  # fmt: skip
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo: Path, records_db: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MARKCTL_RECORDS", str(records_db))  # an initialised, empty training registry
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("MARKCTL_MACHINE", "MARKCTL_OPERATOR", "MARKCTL_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "manifest.csv").write_text((repo / "examples/import/manifest.csv").read_text())
    (tmp_path / "parts.toml").write_text((repo / "examples/import/parts.toml").read_text())
    (tmp_path / "bad.csv").write_text(
        "serial,manufacturer,model,mark_profile,components,import_country,import_year,has_unique_mark\n"
        "B2,Beretta,92FS,iti-import,frame,QQ,26,yes\n"
    )
    return tmp_path


def _args(case: Case, repo: Path, workdir: Path) -> list[str]:
    subst = {"REQ": str(repo / REQ), "MANIFEST": str(workdir / "manifest.csv"),
             "PARTS": str(workdir / "parts.toml"), "BAD": str(workdir / "bad.csv")}  # fmt: skip
    return [subst.get(a, str(repo / a) if a.startswith("examples/") else a) for a in case.args]


def assert_one_line(err: str, names: tuple[str, ...]) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("markctl: "), line
    for name in names:
        assert name in line, f"{name!r} not named in: {line}"
    return line


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_failure_is_one_line_naming_the_cause(
    case: Case, repo: Path, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if case.config is not None:
        (workdir / "markctl.toml").write_text(case.config)
    code = main(_args(case, repo, workdir))
    seen = capsys.readouterr()
    assert_one_line(seen.err, case.names)
    assert code == case.code, seen.err


def test_debug_adds_the_traceback(repo: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "batch", "missing.csv", "--parts", "p.toml", "--machine", "sim://grbl-1.1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith(
        "markctl: error: manifest missing.csv"
    )


def test_handshake_timeout_is_one_line(repo: Path, workdir: Path, capsys: pytest.CaptureFixture[str],
                                       production_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("MARKCTL_RECORDS", str(production_db))  # a real machine's address: real marks only
    with _silent_server() as port:
        address = f"grbl+tcp://127.0.0.1:{port}?handshake_timeout_s=0.3"
        code = main(
            [*_args(Case("", MARK, ()), repo, workdir), "--machine", address, "--profile", "grbl-1.1"]
        )
    assert code == 1
    assert_one_line(capsys.readouterr().err, (f"127.0.0.1:{port}", "no GRBL banner"))


def test_a_busy_port_and_a_wrong_modbus_unit(repo: Path, workdir: Path, production_db: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Subprocesses: a simulator holds a port; a second one cannot listen there; a job addressing
    the wrong Modbus unit fails in one line, with none of pymodbus's own log lines."""
    monkeypatch.setenv("MARKCTL_RECORDS", str(production_db))  # served over TCP, it is a real address
    port = _free_port()
    sim = subprocess.Popen([sys.executable, "-m", "markctl", "sim", "serve", "peen-modbus", "--modbus-tcp",
                            f"127.0.0.1:{port}", "--clock", "instant", "--seconds", "60"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=workdir)  # fmt: skip
    try:
        assert sim.stdout is not None
        assert "serving peen-modbus" in sim.stdout.readline()
        run: Callable[..., subprocess.CompletedProcess[str]] = lambda *a: subprocess.run(  # noqa: E731
            [sys.executable, "-m", "markctl", *a], capture_output=True, text=True, cwd=workdir, timeout=60
        )
        busy = run("sim", "serve", "peen-modbus", "--modbus-tcp", f"127.0.0.1:{port}", "--seconds", "1")
        assert busy.returncode == 2
        assert_one_line(busy.stderr, (f"--modbus-tcp 127.0.0.1:{port}", "cannot listen"))
        wrong = run("batch", *(str(repo / p) if p.startswith("examples/") else p for p in STOCKPILE), "--machine",
                    f"peen+modbus-tcp://127.0.0.1:{port}?unit=7", "--profile", "peen-modbus", "--operator",
                    "x", "--yes")  # fmt: skip
        assert wrong.returncode == 1
        assert_one_line(wrong.stderr, ("unit id 7",))
        assert "pre-check" in wrong.stdout  # the report is on stdout
    finally:
        sim.terminate()
        sim.communicate(timeout=10)


REVIEWER = [
    (
        ["batch", "missing.csv", "--parts", "missing.toml", "--machine", "sim://grbl-1.1", "--operator", "x"],
        "missing.csv",
    ),  # fmt: skip
    (["verify", "--image", "missing.png", "--record", "1", "--operator", "x"], "missing.png"),
    (["sim", "serve", "no-such-profile", "--tcp", "127.0.0.1:0"], "no-such-profile"),
    ([*MARK, "--machine", "sim://grbl-1.1?clok=instant"], "clok"),
    ([*MARK, "--machine", "grbl+serial://TMP/no-such-port", "--profile", "grbl-1.1"], "no-such-port"),
]


@pytest.mark.parametrize(("args", "name"), REVIEWER, ids=[n for _, n in REVIEWER])
def test_reviewer_script_on_a_fresh_registry(args: list[str], name: str, repo: Path, tmp_path: Path) -> None:
    """As a subprocess, with MARKCTL_RECORDS at a file that does not exist yet: inputs are judged
    before the registry is opened, so each names its own cause."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MARKCTL_RECORDS": str(tmp_path / "fresh.db")}
    argv = [str(repo / REQ) if a == "REQ" else a for a in args]
    result = subprocess.run([sys.executable, "-m", "markctl", *argv], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert_one_line(result.stderr, (name,))
    assert not (tmp_path / "fresh.db").exists()


def test_serve_on_a_busy_port_is_one_line(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["serve", "--host", "127.0.0.1", "--port", str(port)]) == 2
    assert_one_line(capsys.readouterr().err, (f"--port {port}", "cannot listen"))
