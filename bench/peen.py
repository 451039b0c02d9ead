"""Dot-peen pattern machines: host overhead per marking cycle, and the Modbus polling rate.

One 12-character mark (3.175 mm 5x7, the rate the profiles' ``chars_per_s`` is given for) is run
on each simulated machine through real I/O: the Telesis marker over TCP (``serve_tcp`` +
``TCPTransport``), the Modbus marker over pymodbus TCP and over RTU on a pty pair. The simulator
runs on the realtime clock (``--clock`` to change it), so the host polls as often as it would
against a real machine during the cycle. Reported per cycle, all measured in this run:

* ``marking`` - the simulated marking time of the cycle (simulator, from first to last strike);
* ``host busy / marking`` - wall time the driver spent inside request/answer exchanges (load,
  fields, parameters, Go, every status poll, the safe state's abort and confirmation) divided by
  the marking time. Goal: <= 2 %;
* ``added / marking`` - how much longer the whole job took than the marking itself (setup before
  Go, the wait until a poll sees Done, the safe state), divided by the marking time. Not a goal of
  the issue, shown so the polling latency is not hidden;
* ``line / marking`` - bytes exchanged x 10 bits / the profile's baud rate: what the same traffic
  would occupy on a real serial line (the simulator's pipes have no baud rate). Informative;
* ``polls``, ``max poll rate`` - status polls seen by the machine, the highest instantaneous rate
  (1 / shortest gap) against the profile's limit. Goal: never above it.

    .venv/bin/python bench/peen.py [--clock realtime|scaled:F] [--text 'AB12-XY/7Z34']
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from markctl.drivers.base import CommLog
from markctl.drivers.modbus_marker import ModbusMarkerDriver
from markctl.drivers.telesis import TelesisDriver
from markctl.drivers.transports import TCPTransport
from markctl.drivers.transports.modbus import ModbusLink, ModbusRTULink, ModbusTCPLink
from markctl.layouts.program import PatternField, PatternProgram
from markctl.profiles import load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.peen_modbus import ModbusMarkerSimulator
from markctl.simulator.serve import serve_tcp
from markctl.simulator.telesis import TelesisSimulator


@dataclass
class Row:
    name: str
    chars: int
    marking_s: float
    busy_s: float
    job_s: float
    line_s: float
    polls: int
    max_rate_hz: float
    limit_hz: float


def _max_rate(times: list[float]) -> float:
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return 1.0 / min(gaps) if gaps else 0.0


async def telesis(text: str, clock: str) -> Row:
    profile = load_profile("telesis-tmp")
    sim = TelesisSimulator(profile, clock=make_clock(clock))
    await sim.start()
    server, port = await serve_tcp(sim, "127.0.0.1", 0)
    driver = TelesisDriver(TCPTransport(f"127.0.0.1:{port}"), profile)
    program = PatternProgram("BENCH", (PatternField(text, 3.175, 2.0, 10.0),))
    try:
        await driver.connect()
        busy0, mark0 = driver.exchange_s, len(driver.history)
        started = time.monotonic()
        result = await driver.run(program)
        job_s = time.monotonic() - started
        assert result.ok, result.message
        busy = driver.exchange_s - busy0
        logs = [e for e in list(driver.history)[mark0:] if isinstance(e, CommLog)]
        polls = [e.t for e in logs if e.direction == "tx" and e.data.startswith(b"\x01I")]
        line_s = sum(len(e.data) for e in logs) * 10 / profile.protocol.baud
    finally:
        await driver.close()
        server.close()
        await server.wait_closed()
        await sim.stop()
    cycle = sim.marker.cycles[-1]
    assert cycle.ended_t is not None
    limit = profile.protocol.status_poll_hz_max  # type: ignore[union-attr]
    marking = cycle.ended_t - cycle.started_t
    return Row(
        "telesis / TCP", cycle.chars_total, marking, busy, job_s, line_s, len(polls), _max_rate(polls), limit
    )


async def modbus(text: str, clock: str, rtu: bool) -> Row:
    profile = load_profile("peen-modbus")
    sim = ModbusMarkerSimulator(profile, clock=make_clock(clock))
    link: ModbusLink = (
        ModbusRTULink(await sim.serve_rtu_pty())
        if rtu
        else ModbusTCPLink(f"127.0.0.1:{await sim.serve_tcp()}")
    )
    driver = ModbusMarkerDriver(link, profile)
    program = PatternProgram("1", (PatternField(text, 3.175, 2.0, 10.0),))
    try:
        await driver.connect()
        busy0, bytes0, first = link.busy_s, link.bytes_in + link.bytes_out, len(sim.requests)
        started = time.monotonic()
        result = await driver.run(program)
        job_s = time.monotonic() - started
        assert result.ok, result.message
        busy = link.busy_s - busy0
        wire = link.bytes_in + link.bytes_out - bytes0
    finally:
        await driver.close()
        await link.close()
        await sim.stop()
    status = profile.protocol.registers.status  # type: ignore[union-attr]
    polls = [
        r.wall_t
        for r in sim.requests[first:]
        if r.function_code == 3 and r.address <= status < r.address + r.count
    ]
    cycle = sim.marker.cycles[-1]
    assert cycle.ended_t is not None
    limit = profile.protocol.poll_hz_max  # type: ignore[union-attr]
    # RTU on a real line: the 19200 baud of the profile; TCP framing counted the same way.
    line_s = wire * 10 / profile.protocol.baud  # type: ignore[union-attr]
    name = "peen-modbus / RTU pty" if rtu else "peen-modbus / TCP"
    marking = cycle.ended_t - cycle.started_t
    return Row(name, cycle.chars_total, marking, busy, job_s, line_s, len(polls), _max_rate(polls), limit)


async def main(clock: str, text: str) -> int:
    rows = [
        await telesis(text, clock),
        await modbus(text, clock, rtu=False),
        await modbus(text, clock, rtu=True),
    ]
    factor = 1.0 if clock == "realtime" else float(clock.split(":")[1])
    print(f"one {len(text.replace(' ', ''))}-character mark per machine, 3.175 mm 5x7, clock {clock}")
    head = f"{'machine':24} {'chars':>5} {'marking s':>9} {'host busy/marking':>17} {'added/marking':>13} {'line/marking':>12} {'polls':>5} {'max poll Hz':>11} {'limit Hz':>8}"
    print(head)
    failed = 0
    for r in rows:
        marking_wall = r.marking_s / factor
        busy = r.busy_s / marking_wall
        added = (r.job_s - marking_wall) / marking_wall
        line = r.line_s / r.marking_s
        ok_busy = busy <= 0.02
        ok_rate = r.max_rate_hz <= r.limit_hz
        failed += (not ok_busy) + (not ok_rate)
        print(
            f"{r.name:24} {r.chars:5d} {r.marking_s:9.2f} {busy:16.2%}{'' if ok_busy else '!'} "
            f"{added:13.2%} {line:12.2%} {r.polls:5d} {r.max_rate_hz:11.2f} {r.limit_hz:8.1f}{'' if ok_rate else '!'}"
        )
    print(
        "goals: host busy/marking <= 2 %, max poll rate <= limit"
        + ("" if not failed else f"; {failed} missed (!)")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clock", default="realtime", help="realtime (default) or scaled:F")
    parser.add_argument("--text", default="AB12-XY/7Z34", help="the mark (12 characters by default)")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.clock, args.text)))
