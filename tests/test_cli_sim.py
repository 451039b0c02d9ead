"""``markctl sim serve`` in a subprocess, reached by markctl's own drivers over TCP and Modbus/TCP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from markctl.cli import main
from markctl.drivers.base import State
from markctl.machines import open_machine


@contextmanager
def _served(*args: str) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "markctl", "sim", "serve", *args, "--seconds", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving "), (line, proc.stderr.read() if proc.stderr else "")
        yield line.strip().rsplit(" ", 1)[1]
    finally:
        proc.terminate()
        proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize(
    ("profile", "option", "address"),
    [
        ("grbl-1.1", "--tcp", "grbl+tcp://{}"),
        ("grbl-1.1", "--pty", "grbl+serial://{}"),
        ("telesis-tmp", "--tcp", "telesis+tcp://{}"),
        ("peen-modbus", "--modbus-tcp", "peen+modbus-tcp://{}"),
        ("peen-modbus", "--modbus-rtu-pty", "peen+modbus-rtu://{}"),
    ],
)
async def test_served_simulator_answers_a_driver(profile: str, option: str, address: str) -> None:
    extra = ("127.0.0.1:0",) if option in ("--tcp", "--modbus-tcp") else ()
    with _served(profile, option, *extra) as where:
        machine = await open_machine(address.format(where), profile=profile)
        try:
            assert machine.driver.info is not None and machine.driver.state is State.IDLE
        finally:
            await machine.close()


def test_wrong_serving_mode_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "serve", "peen-modbus", "--tcp", "127.0.0.1:0"]) == 2
    assert "is a Modbus marker" in capsys.readouterr().err
    assert main(["sim", "serve", "grbl-1.1"]) == 2
    assert main(["sim", "serve", "grbl-1.1", "--pty", "--faults", "explode@t:1"]) == 2
