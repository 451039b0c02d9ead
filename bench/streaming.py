"""Streaming benchmark: character counting vs send-response on a modelled serial line.

Streams a 5,000-segment engraving (segments 0.2-1 mm, 3,000 mm/min, laser M4) through the real
GRBL driver into the GRBL simulator (grbl-1.1 profile: 128-byte RX buffer, 15-block planner,
1000 mm/s^2), with the serial line modelled on the simulation clock: every byte takes 10/baud s
each way, plus a fixed host latency each way (USB-serial adapters add ~1-2 ms per direction).

The clock is the discrete-event ("instant") clock: baud and latency are simulated time, not wall
time, so the figures do not depend on how busy this machine is. The driver is not on that clock;
it reacts to each byte within a few event-loop turns, and the clock waits ``SETTLE_TURNS`` turns
before advancing, so a host reaction costs no simulated time beyond the modelled latency.

Printed per scenario and mode (all in one run):

* achieved lines/s = job lines / simulated time from the first byte sent to the machine idle;
* the line-rate bound = (baud / 10) / mean line bytes (newline included) and achieved / bound;
* the motion bound = job lines / the time the same job takes with an unlimited link and a
  planner that never waits for data, and achieved / min(both bounds);
* planner starvation events = times the head stopped for lack of blocks and then went on;
* RX overflows (must be 0) and the char-count / send-response throughput ratio.

Scenario A is the one asked for (115200 baud, 2 ms), where the motion, not the link, is the binding
bound; B and C are the same link behind slower USB adapters (8 and 16 ms each way, the latter an
FTDI chip's default latency timer); D (4800 baud) makes the link the binding bound, which is where
character counting has to show >= 0.9 of the line-rate bound.

Run: ``.venv/bin/python bench/streaming.py`` (``--segments``, ``--latency-ms`` to vary).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from dataclasses import dataclass

import numpy as np

from markctl.drivers.grbl import GRBLDriver, GRBLOptions
from markctl.drivers.transports import PipeTransport
from markctl.layouts.program import MotionProgram, ProcessParams, Stroke, StrokeKind
from markctl.profiles import FirmwareProfile, GrblProtocol, load_profile
from markctl.simulator.clock import InstantClock
from markctl.simulator.grbl import GrblSimulator
from markctl.simulator.workpiece import Workpiece


class SettledClock(InstantClock):
    """The discrete-event clock, waiting more loop turns so the host's reaction lands first."""

    SETTLE_TURNS = 25


def engraving(segments: int, seed: int = 4) -> MotionProgram:
    """``segments`` segments of 0.2-1 mm in strokes of 100 (random walks, like script), G0 between."""
    rng = np.random.default_rng(seed)
    strokes = []
    per_stroke = 100
    for k in range(math.ceil(segments / per_stroke)):
        n = min(per_stroke, segments - k * per_stroke)
        lengths = rng.uniform(0.2, 1.0, n)
        heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, 0.15, n))
        steps = np.column_stack([lengths * np.cos(heading), lengths * np.sin(heading)])
        start = np.array([20 + (k % 10) * 7.0, 20 + (k // 10) * 12.0])
        points = np.vstack([start, start + np.cumsum(steps, axis=0)])
        strokes.append(points)
    low = np.min([p.min(axis=0) for p in strokes], axis=0)
    shifted = [Stroke(StrokeKind.LINE, p - low + 5.0, 0) for p in strokes]  # keep inside the work area
    return MotionProgram(tuple(shifted), (ProcessParams(speed_mm_min=3000, power_pct=40),))


def bench_profile(*, planner_blocks: int | None = None, rx: int | None = None) -> FirmwareProfile:
    profile = load_profile("grbl-1.1")
    assert isinstance(profile.protocol, GrblProtocol)
    update: dict[str, object] = {}
    if planner_blocks is not None:
        update["planner_blocks"] = planner_blocks
    if rx is not None:
        update["rx_buffer_bytes"] = rx
    return profile.model_copy(update={"protocol": profile.protocol.model_copy(update=update)})


@dataclass
class Run:
    lines: int
    mean_bytes: float
    sim_seconds: float
    underruns: int
    starved_blocks: int
    overflows: int
    wall_seconds: float

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.sim_seconds


async def stream(
    program: MotionProgram, *, baud: int, latency_s: float, streaming: str, profile: FirmwareProfile
) -> Run:
    clock = SettledClock()
    sim = GrblSimulator(
        profile, clock=clock, workpiece=Workpiece(400, 400, px_per_mm=1), baud=baud, host_latency_s=latency_s
    )
    pipe = PipeTransport("bench", sink=sim.receive)
    sim.attach(pipe.feed, pipe.hang_up)
    await sim.start()
    driver = GRBLDriver(pipe, profile, GRBLOptions(streaming=streaming))  # type: ignore[arg-type]
    try:
        await driver.connect()
        lines = driver.lines_for(program)
        mean_bytes = sum(len(line) + 1 for line in lines) / len(lines)
        wall = time.perf_counter()
        t0 = clock.now()
        result = await driver.run(program)
        t1 = clock.now()
        wall = time.perf_counter() - wall
        if not result.ok:
            raise RuntimeError(f"{streaming} run failed: {result}")
        return Run(
            len(lines),
            mean_bytes,
            t1 - t0,
            sim.planner_underruns,
            sim.lookahead_starved_blocks,
            sim.rx_overflow_bytes,
            wall,
        )
    finally:
        await driver.close()
        await sim.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=5000)
    parser.add_argument("--latency-ms", type=float, default=2.0, help="host latency, each way")
    args = parser.parse_args()
    program = engraving(args.segments)
    latency = args.latency_ms / 1000
    profile = bench_profile()
    # The motion bound: unlimited link (baud 0 = no line-rate model, no latency) and a planner
    # deep enough never to wait for data.
    ideal = await stream(
        program,
        baud=0,
        latency_s=0.0,
        streaming="char-count",
        profile=bench_profile(planner_blocks=1024, rx=65536),
    )
    print(
        f"engraving: {ideal.lines} lines, {args.segments} segments of 0.2-1 mm at 3000 mm/min, "
        f"mean line {ideal.mean_bytes:.2f} bytes; host latency {args.latency_ms:g} ms each way"
    )
    print(
        f"motion bound (unlimited link, deep planner): {ideal.lines_per_s:.1f} lines/s "
        f"({ideal.sim_seconds:.2f} s simulated)"
    )
    scenarios = (
        ("A", 115200, latency),
        ("B", 115200, 4 * latency),
        ("C", 115200, 8 * latency),
        ("D", 4800, latency),
    )
    for label, baud, lat in scenarios:
        line_bound = baud / 10 / ideal.mean_bytes
        binding = min(line_bound, ideal.lines_per_s)
        which = "link" if line_bound < ideal.lines_per_s else "motion"
        print(
            f"\nscenario {label}: {baud} baud, host latency {lat * 1000:g} ms each way; line-rate bound "
            f"{line_bound:.1f} lines/s; binding bound {binding:.1f} lines/s ({which})"
        )
        print(
            f"  {'mode':<14}{'lines/s':>9}{'/line bound':>13}{'/binding':>10}{'stops':>7}{'starved':>9}"
            f"{'overflow':>10}{'sim s':>9}{'wall s':>8}"
        )
        runs = {}
        for mode in ("char-count", "send-response"):
            run = await stream(program, baud=baud, latency_s=lat, streaming=mode, profile=profile)
            runs[mode] = run
            print(
                f"  {mode:<14}{run.lines_per_s:>9.1f}{run.lines_per_s / line_bound:>13.3f}"
                f"{run.lines_per_s / binding:>10.3f}{run.underruns:>7d}{run.starved_blocks:>9d}"
                f"{run.overflows:>10d}{run.sim_seconds:>9.2f}{run.wall_seconds:>8.1f}"
            )
        ratio = runs["char-count"].lines_per_s / runs["send-response"].lines_per_s
        print(f"  char-count / send-response throughput: {ratio:.2f}x")
    print(
        "\nstops: the head stopped for lack of blocks, then went on; starved: blocks run slower "
        "than the path allows because too few blocks were queued (not counted when the queue "
        "ends at a planned stop such as the end of the job)."
    )


if __name__ == "__main__":
    asyncio.run(main())
