"""The ``mbpoll`` scripts of docs/modbus.md drive a full cycle of each shipped Modbus profile.

The scripts are taken from the document itself (each ``sh`` block that starts with
``# mbpoll-cycle: PROFILE``), so the documentation cannot drift from what works. mbpoll is an
independent Modbus client (libmodbus), run as a subprocess against the simulator on loopback.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest

from markctl.profiles import list_profiles, load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.peen_modbus import ModbusMarkerSimulator

DOC = Path(__file__).parents[3] / "docs" / "modbus.md"
BLOCK = re.compile(r"```sh\n# mbpoll-cycle: (?P<profile>[a-z0-9.-]+)\n(?P<body>.*?)```", re.S)
SCRIPTS = {m["profile"]: m["body"] for m in BLOCK.finditer(DOC.read_text("utf-8"))}

pytestmark = pytest.mark.skipif(
    shutil.which("mbpoll") is None, reason="mbpoll is not installed (apt-get install mbpoll)"
)


def test_every_shipped_modbus_profile_has_a_script() -> None:
    modbus = {p.id for p in list_profiles() if load_profile(p.id).family == "peen"}
    assert modbus and modbus == set(SCRIPTS)


@pytest.mark.parametrize("profile_id", sorted(SCRIPTS))
async def test_the_documented_script_marks_a12(profile_id: str) -> None:
    sim = ModbusMarkerSimulator(load_profile(profile_id), clock=make_clock("instant"))
    port = await sim.serve_tcp("127.0.0.1", 0)
    try:
        proc = await asyncio.create_subprocess_exec(
            "bash", "-euo", "pipefail", "-c", SCRIPTS[profile_id],
            env={**os.environ, "PORT": str(port), "HOST": "127.0.0.1"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await sim.stop()
    assert proc.returncode == 0, (out.decode(), err.decode())
    cycle = sim.marker.cycles[-1]
    assert len(sim.marker.cycles) == 1 and cycle.outcome == "done" and cycle.chars_total == 3
    assert sim.marker.texts == {1: "A12"} and sim.workpiece.strikes > 0
    assert sim.marker.char_height_mm == pytest.approx(3.0)
