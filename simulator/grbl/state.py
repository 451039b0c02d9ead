"""Everything one simulated machine remembers, in one place, so every layer of the split simulator
(serial, settings, planner, stepper, reports, G-code, system commands, protocol) reads and writes the
same state the way Grbl's modules share ``sys``, ``gc_state`` and ``settings``."""

from __future__ import annotations

import asyncio
from collections import deque

from markctl.profiles import FirmwareProfile, GrblProtocol
from markctl.simulator.base import HangUp, Send
from markctl.simulator.clock import Clock
from markctl.simulator.faults import Fault, parse_faults
from markctl.simulator.grbl.blocks import BurnRecord, _Exec, _Motion
from markctl.simulator.grbl.defaults import default_settings
from markctl.simulator.workpiece import Workpiece

FAULT_KINDS = ("disconnect", "silence", "garble", "alarm", "door", "slow", "stall")


_MOVING = ("Run", "Jog", "Home")


class _State:
    """Machine state shared by every layer; power-on and soft-reset initialisation."""

    def __init__(
        self,
        profile: FirmwareProfile,
        *,
        clock: Clock,
        faults: str = "",
        workpiece: Workpiece | None = None,
        baud: int | None = None,
        host_latency_s: float = 0.0,
        reset_on_attach: bool = True,
    ) -> None:
        if not isinstance(profile.protocol, GrblProtocol):
            raise ValueError(f"profile {profile.id!r} is not a GRBL-family profile")
        self.profile = profile
        self.proto: GrblProtocol = profile.protocol
        self.clock = clock
        self.faults: tuple[Fault, ...] = parse_faults(faults, FAULT_KINDS)
        if workpiece is None:
            w, h = profile.machine.work_area_x_mm, profile.machine.work_area_y_mm
            workpiece = Workpiece(w, h, px_per_mm=min(10.0, 2000.0 / max(w, h)))
        self.workpiece = workpiece
        self.baud = self.proto.baud if baud is None else baud
        if self.baud < 0 or host_latency_s < 0:
            raise ValueError("baud and host_latency_s must not be negative")
        self.byte_time_s = 10.0 / self.baud if self.baud else 0.0
        self.host_latency_s = host_latency_s
        self.reset_on_attach = reset_on_attach
        self.dialect = self.proto.dialect
        self.realtime = self._realtime_table()
        self.settings: dict[int, float] = default_settings(self.proto.settings)
        self.startup_lines = ["", ""]
        self.build_info = ""
        self.spot_mm = profile.laser.spot_mm if profile.laser is not None else 0.1
        self.power_w = profile.laser.power_w if profile.laser is not None else 1.0
        # counters and records tests assert on
        self.rx_overflow_bytes = 0
        self.rx_eeprom_lost_bytes = 0
        self.corrupted_lines: list[int] = []
        self.lines_received = 0
        self.responses_sent = 0
        self.planner_underruns = 0
        self.lookahead_starved_blocks = 0
        self._starved_pending = 0
        self.status_reports = 0
        self.resets = 0
        self.burn_log: list[BurnRecord] = []
        self.travel_log: list[tuple[float, float, float, float, str]] = []
        self.alarms: list[int] = []
        self.realtime_log: list[tuple[float, int]] = []  # (sim time, byte) of every realtime command but '?'
        self.fault_times: dict[str, float] = {}
        # host link
        self._send: Send | None = None
        self._hang_up: HangUp | None = None
        self._started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._rx_wire: deque[tuple[float, bytes]] = deque()
        self._tx_wire: deque[tuple[float, bytes]] = deque()
        self._rx_wire_free = 0.0
        self._tx_wire_free = 0.0
        self._rx_kick = asyncio.Event()
        self._tx_kick = asyncio.Event()
        self._bytes_sent = 0
        self._slow_extra = 0.0
        self._motion_origin: float | None = None
        # machine
        self._pos = [0.0, 0.0, 0.0]
        # Physical head position = Grbl's machine position + this offset. It changes only when a
        # power cycle (DTR reset on open) makes Grbl forget where the head is; homing clears it.
        self._offset = [0.0, 0.0, 0.0]
        self._wcs = [[0.0, 0.0, 0.0] for _ in range(6)]
        self._g28 = [0.0, 0.0, 0.0]
        self._g30 = [0.0, 0.0, 0.0]
        self._tlo = 0.0  # G43.1 dynamic tool length offset on Z
        self._eeprom_busy_until = -1.0
        self._door_open = False
        self._dwelling = False
        self._starved_at: float | None = None
        self._ring_kick = asyncio.Event()
        self._motion_started = asyncio.Event()
        self._main_task: asyncio.Task[None] | None = None
        self._motion_wake: asyncio.Future[None] | None = None
        self._motion_idle: asyncio.Future[None] | None = None
        self._main_wake: asyncio.Future[None] | None = None
        self._boot()

    def _realtime_table(self) -> frozenset[int]:
        table = set(range(0x84, 0x86)) | set(range(0x90, 0x98)) | set(range(0x99, 0x9F))
        table |= {0x18, ord("?"), ord("~"), ord("!"), 0xA0, 0xA1}
        if self.dialect == "grblhal":
            table |= {0x80, 0x81, 0x82, 0x87}
        return frozenset(table)

    def _boot(self) -> None:
        """Power-on state (also the part of it a soft reset restores)."""
        self.state = "Alarm" if self.settings.get(22, 0) else "Idle"
        self.substate: int | None = None
        self._critical = False
        self._check = False
        self._check_pos: list[float] | None = None
        self._ring = bytearray()
        self._ring_lines = 0  # line terminators stored so far (to know which line lost a byte)
        self._ring_lines_taken = 0
        self._corrupt_ordinals: set[int] = set()
        self._planner: deque[_Motion] = deque()
        self._exec: _Exec | None = None
        self._last_block: _Motion | None = None  # the last block the stepper finished
        self._spindle_out = 0.0  # sys.spindle_speed: the S at the output now (0: off)
        self._spindle_stop = False  # a spindle-stop override is in force (hold, door, 0x9E)
        self._stalled = False  # the stall fault: Run reported, nothing moves, no line is taken
        self._decelerating = False  # a hold, door or jog cancel is bringing the head to a stop
        self._in_flight: int | None = None  # the line the protocol loop is executing
        self._last_exit_v = 0.0
        self._pending_report = False
        self._wco_counter = 0
        self._ovr_counter = 0
        self._reset_modal()
        self.feed_ovr = 100
        self.rapid_ovr = 100
        self.spindle_ovr = 100
        self._hold_pending_resume = False
        self._silenced: set[int] = set()

    def _reset_modal(self) -> None:
        self.motion_mode = 0.0
        self.units = 21.0
        self.distance = 90.0
        self.feed_mode = 94.0
        self.plane = 17.0
        self.wcs_index = 0
        self.spindle = "M5"
        self.coolant = "M9"
        self.feed = 0.0
        self.s = 0.0
        self.tool = 0
        self._g92 = [0.0, 0.0, 0.0]

    async def _wait_motion(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._motion_idle = fut
        await fut

    def _kick_motion(self) -> None:
        fut = self._motion_idle
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _kick_main(self) -> None:
        fut = self._main_wake
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _wait_main(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._main_wake = fut
        await fut

    # Upward calls: the serial interrupt, the G-code executor and the system commands reach these
    # protocol-level actions, which the protocol layer defines (as Grbl's modules set sys_rt_exec
    # flags that protocol.c acts on).
    def _realtime_command(self, byte: int) -> None:
        raise NotImplementedError

    def _raise_alarm(self, code: int) -> None:
        raise NotImplementedError

    def _soft_reset(self, *, power_cycle: bool = False) -> None:
        raise NotImplementedError
