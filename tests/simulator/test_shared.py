"""The simulator's shared pieces: clocks, the workpiece model, and pty/TCP serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import serial

from markctl.profiles import FirmwareProfile, load_profile
from markctl.simulator.clock import InstantClock, RealtimeClock, ScaledClock, make_clock
from markctl.simulator.serve import PtyBridge, serve_tcp
from markctl.simulator.workpiece import Workpiece


def test_make_clock() -> None:
    assert isinstance(make_clock("instant"), InstantClock)
    assert isinstance(make_clock("realtime"), RealtimeClock)
    scaled = make_clock("scaled:100")
    assert isinstance(scaled, ScaledClock) and scaled.factor == 100
    assert make_clock("x50").description == "scaled x50"
    with pytest.raises(ValueError, match="expected instant"):
        make_clock("fast")


async def test_instant_clock_orders_concurrent_sleepers_by_simulated_time() -> None:
    clock = InstantClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, steps: list[float]) -> None:
        for step in steps:
            await clock.sleep(step)
            woke.append((name, clock.now()))

    await asyncio.gather(sleeper("motion", [1.0, 1.0, 1.0]), sleeper("door", [2.5]))
    assert woke == [("motion", 1.0), ("motion", 2.0), ("door", 2.5), ("motion", 3.0)]
    assert clock.now() == 3.0


async def test_instant_clock_jumps_hours_at_once() -> None:
    clock = InstantClock()
    await clock.sleep(3600 * 5)
    assert clock.now() == 18000


def test_burn_segment_marks_a_capsule_and_passes_add_up() -> None:
    wp = Workpiece(20, 10, px_per_mm=10)
    wp.burn_segment(2, 5, 12, 5, width_mm=0.4, depth_mm=0.03)
    wp.burn_segment(2, 5, 12, 5, width_mm=0.4, depth_mm=0.03)
    x0, y0, x1, y1 = wp.marked_bbox_mm()  # type: ignore[misc]
    assert x0 == pytest.approx(1.8, abs=0.11) and x1 == pytest.approx(12.2, abs=0.11)
    assert y0 == pytest.approx(4.8, abs=0.11) and y1 == pytest.approx(5.2, abs=0.11)
    assert float(wp.depth.max()) == pytest.approx(0.06)
    assert wp.marked(min_depth_mm=0.05).any() and not wp.marked(min_depth_mm=0.07).any()


def test_strike_dot_is_a_cone_of_the_stylus_angle() -> None:
    wp = Workpiece(10, 10, px_per_mm=50)
    wp.strike_dot(5, 5, depth_mm=0.2, cone_deg=90)
    col, row = wp.to_px(5, 5)
    # The nearest pixel centre lies half a pixel diagonal (0.014 mm) from the dot's axis.
    assert float(wp.depth[int(row), int(col)]) == pytest.approx(0.2 - 0.0141, abs=0.002)
    x0, y0, x1, y1 = wp.marked_bbox_mm()  # type: ignore[misc]
    assert x1 - x0 == pytest.approx(0.4, abs=0.05)  # 90 deg cone: radius = depth
    assert wp.strikes == 1


def test_nothing_marked_outside_and_png(tmp_path: Path) -> None:
    wp = Workpiece(10, 10)
    assert wp.marked_bbox_mm() is None
    wp.burn_segment(-5, -5, -1, -1, width_mm=0.2, depth_mm=0.01)  # off the plate
    assert wp.marked_bbox_mm() is None
    wp.burn_segment(1, 1, 9, 9, width_mm=0.2, depth_mm=0.01)
    image = wp.image()
    assert image.size == (200, 200)
    pixels = np.asarray(image)
    assert pixels.min() < 150 and pixels.max() == 225
    assert wp.save_png(tmp_path / "w.png").stat().st_size > 0


class Echo:
    """A tiny byte device: answers each line with its upper-case echo."""

    def __init__(self, profile: FirmwareProfile, *, greet: bool = True) -> None:
        self.profile = profile
        self.greet = greet
        self.workpiece = Workpiece(1, 1)
        self.send: object = None
        self.attached = 0
        self.detached = 0

    def attach(self, send, hang_up) -> None:  # type: ignore[no-untyped-def]
        self.send = send
        self.attached += 1
        if self.greet:
            send(b"HELLO\r\n")

    def detach(self) -> None:
        self.detached += 1

    def receive(self, data: bytes) -> None:
        self.send(data.upper())  # type: ignore[operator]

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def test_tcp_server_bridges_a_device() -> None:
    device = Echo(load_profile("grbl-1.1"))
    server, port = await serve_tcp(device)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.readline(), 5) == b"HELLO\r\n"
        writer.write(b"abc\xff\n")
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"ABC\xff\n"
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if device.detached:
                break
            await asyncio.sleep(0.01)
        assert device.detached == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_pty_bridge_is_a_raw_serial_port() -> None:
    # No greeting: pyserial flushes input on open, as a real port does, so a banner printed
    # before the host opened the port is gone (drivers then send a soft reset; PROTOCOLS.md 9.3).
    device = Echo(load_profile("grbl-1.1"), greet=False)
    bridge = PtyBridge(device)
    bridge.start()
    loop = asyncio.get_running_loop()
    try:
        port = serial.Serial(bridge.path, 115200, timeout=2)
        try:
            await loop.run_in_executor(None, port.write, b"x\r\x80\n")
            assert await loop.run_in_executor(None, port.read, 4) == b"X\r\x80\n"
        finally:
            port.close()
    finally:
        bridge.close()
