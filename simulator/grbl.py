"""A GRBL-family laser engraver a driver cannot tell from firmware: Grbl 1.1h, grblHAL, FluidNC.

One model object per machine, configured by the same firmware profile as the driver
(``profile.protocol`` is a :class:`~markctl.profiles.GrblProtocol`), reachable in-process
(:class:`~markctl.simulator.base.ByteDevice`), on a pseudo-terminal and on TCP
(:mod:`markctl.simulator.serve`). Behaviour follows PROTOCOLS.md §1 (Grbl 1.1 interface), §2
(grblHAL / FluidNC differences) and the fidelity list of §9.4:

* **Serial line**: every byte takes ``10 / baud`` s on the wire each way, plus ``host_latency_s``
  (USB-serial latency) each way; both on the simulation clock.
* **RX buffer** of ``rx_buffer_bytes``: realtime bytes are picked out at "interrupt" time wherever
  they appear (never stored); other bytes go into the ring, and when the ring is full they are
  **dropped** as on real firmware (``serial.c``), so a host that sends too much gets merged or
  mangled lines. :attr:`GrblSimulator.rx_overflow_bytes` counts them and
  :attr:`GrblSimulator.corrupted_lines` names the lines that lost bytes. On the ``grbl`` dialect a
  ``$x=`` / ``G10 L2`` / ``G28.1`` EEPROM write blocks reception for a few ms, and bytes streamed
  behind it are lost too (§1.2: why settings must be sent send-response).
* **Line buffer** of ``line_buffer_chars``: longer lines are answered ``error:11``.
* **Planner** of ``planner_blocks`` blocks; a motion line's ``ok`` is sent only when its block
  fits (so ``ok`` lags execution, "acked != executed"). Motion uses a trapezoidal profile per
  block with Grbl-style look-ahead: junction speeds from junction deviation ($11, 0.01 mm) and
  exit speeds that can always stop by the end of what is queued, so a starved planner slows the
  head down, as on a real machine. :attr:`GrblSimulator.planner_underruns` counts the times the
  head had to stop for lack of blocks and then started again,
  :attr:`GrblSimulator.lookahead_starved_blocks` the blocks run slower than the path allows
  because too few blocks were queued behind them (neither counts a planned stop: M3/M4/M5
  changes, dwells, program end).
* **States** Idle, Run, Hold:0/1, Jog, Alarm, Door:0-2, Check, Home, Sleep with Grbl's rules:
  G-code in Alarm/Jog gives ``error:9``; ``$X`` unlocks; ^X while moving gives ``ALARM:3`` (or
  ``ALARM:6`` homing) and the machine stays in Alarm; ``$C`` check mode with the automatic reset
  on exit; ``$H`` (``error:5`` unless $22=1); ``$J=`` jogs cancelled by 0x85; ``$SLP``; overrides
  10-200 %.
* **Laser** (§1.7): with ``$32=1`` the beam fires only in G1/G2/G3 blocks (and in jogs, which
  inherit the laser state), ``M4`` power scales with actual speed / programmed speed and is off
  standing still, ``M3`` is constant (fires during a dwell), ``S0``/``M5`` off, laser off during
  hold and door. With ``$32=0`` the "spindle" output fires whenever on, G0 included - which is why
  drivers verify ``$32=1``.
* **Status reports** (§1.4): ``MPos`` or ``WPos`` per ``$10`` bit 0, ``Bf`` per bit 1, ``FS`` with
  the actual laser S (M4 scaling and override included), ``Pn`` (door), ``WCO`` every 10 idle /
  30 busy reports and on change, ``Ov`` every 10/20 reports and on change (one report later if
  ``WCO`` is printed), ``A:`` with ``Ov``. Duplicate ``?`` before a report goes out are coalesced;
  ``?`` is ignored while homing and after a hard/soft-limit alarm until reset.
* **The burn**: every marked piece of motion is burned into :attr:`workpiece` with the profile's
  ``laser.spot_mm`` as width. Model (documented, deliberately simple): the line energy
  ``E/L`` in J/mm is ``power_w * S/$30 * override`` integrated over the piece (M3: over time; M4:
  over distance / programmed speed) divided by its length; depth = ``DEPTH_MM_PER_J_PER_MM * E/L``
  and shade = ``min(1, E/L / SHADE_FULL_J_PER_MM)``. :attr:`burn_log` keeps every burned piece with
  its simulated start and end time and the program line it came from.
* **Faults** (``faults="..."``, grammar in :mod:`markctl.simulator.faults`):
  ``disconnect@line:N`` (the link drops when host line N arrives, counting every line since
  power-on, handshake commands included; the machine keeps executing what it already queued, as
  real Grbl does), ``silence@line:N`` (the response to line N is lost),
  ``garble@byte:N[=mask]`` (the N-th byte sent is XORed with ``mask``, default 0x80),
  ``alarm@t:T=N`` (``ALARM:N``; 1 and 2 are critical: ``[MSG:Reset to continue]`` and only ^X is
  served), ``door@t:T[=seconds open]``, ``slow@t:T=S`` (S more seconds before the host reads each
  reply). ``t`` counts simulated seconds from the first planned motion (job start), so one spec
  means the same under every clock; ``t:0`` means from power-on.

* **Power cycles**: attaching a host to a running simulator pulses "DTR" (``reset_on_attach``): the
  board resets and forgets its position, so :attr:`GrblSimulator.position` (what Grbl reports)
  and :attr:`GrblSimulator.physical_position` (where the head is, where burns land) differ until
  ``$H`` homes to the physical origin.

Not modelled: probing, tool changes, arcs outside the XY plane, spindle ramp-up, $N startup-line
execution errors beyond ``>line:ok``, flash-string timing, limit switches other than by the alarm
fault; homing moves straight to the origin; feed overrides take effect at the next block; a feed
hold decelerates within the current block; a stationary M3 beam burns only during G4 dwells.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from dataclasses import dataclass, field

from markctl.profiles import FirmwareProfile, GrblProtocol
from markctl.simulator.base import HangUp, Send
from markctl.simulator.clock import Clock
from markctl.simulator.faults import Fault, parse_faults
from markctl.simulator.grbl_gcode import (
    GCodeError,
    arc_points,
    check_block,
    parse_block,
    parse_jog,
    preprocess,
)
from markctl.simulator.workpiece import Workpiece

__all__ = ["BurnRecord", "GrblSimulator"]

FAULT_KINDS = ("disconnect", "silence", "garble", "alarm", "door", "slow")
DEPTH_MM_PER_J_PER_MM = 0.08
SHADE_FULL_J_PER_MM = 0.15
JUNCTION_DEVIATION_MM = 0.01
EEPROM_WRITE_S = 0.025  # AVR EEPROM: ~3.3 ms per byte; a setting is a few bytes plus checksum
_SLICE = 16  # bytes delivered per wire event

_HELP = "[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x]"
_MOVING = ("Run", "Jog", "Home")


@dataclass
class _Motion:
    """One planner block: a straight move (arcs are cut into these), a jog or a homing move."""

    kind: str  # "rapid" | "line" | "jog" | "home"
    start: tuple[float, float, float]
    end: tuple[float, float, float]
    feed_mm_min: float  # programmed rate (rapid: max rate)
    spindle: str  # "M3" | "M4" | "M5"
    s: float
    line: int
    junction_v: float = 0.0  # max entry speed from the junction with the previous block, mm/s
    length: float = field(init=False)

    def __post_init__(self) -> None:
        self.length = math.dist(self.start, self.end)

    def unit(self) -> tuple[float, float, float]:
        if self.length == 0:
            return (0.0, 0.0, 0.0)
        return _p3([(e - s) / self.length for s, e in zip(self.start, self.end, strict=True)])


@dataclass
class _Exec:
    """The block being executed: when it started and its speed profile."""

    block: _Motion
    t0: float
    segments: list[tuple[float, float, float]]  # (duration, start speed, acceleration)
    v_exit: float
    s_burned: float = 0.0  # distance already burned into the workpiece
    t_burned: float = 0.0
    alone: bool = False  # planned to stop because nothing followed it in the planner

    @property
    def duration(self) -> float:
        return sum(d for d, _, _ in self.segments)

    def at(self, t: float) -> tuple[float, float]:
        """(distance travelled, speed) at ``t`` seconds into the block."""
        s = 0.0
        for dur, v0, acc in self.segments:
            if t <= dur:
                return s + v0 * t + 0.5 * acc * t * t, v0 + acc * t
            s += v0 * dur + 0.5 * acc * dur * dur
            t -= dur
        last_v = self.segments[-1][1] + self.segments[-1][2] * self.segments[-1][0] if self.segments else 0.0
        return min(s, self.block.length), last_v


@dataclass(frozen=True, slots=True)
class BurnRecord:
    """One burned piece of motion (or a dwell dot), in machine mm and simulated seconds."""

    t0: float
    t1: float
    x0: float
    y0: float
    x1: float
    y1: float
    line_energy_j_per_mm: float
    line: int


def _p3(values: list[float] | tuple[float, ...]) -> tuple[float, float, float]:
    return (float(values[0]), float(values[1]), float(values[2]))


def _profile(
    length: float, v0: float, vn: float, v1: float, a: float
) -> tuple[list[tuple[float, float, float]], float]:
    """Trapezoid (or triangle) segments covering ``length`` from ``v0`` to at most ``v1``."""
    if length <= 1e-12:
        return [], v0
    v1 = min(v1, math.sqrt(v0 * v0 + 2 * a * length))
    if v0 * v0 - 2 * a * length > v1 * v1:
        v_end = math.sqrt(v0 * v0 - 2 * a * length)
        return [((v0 - v_end) / a, v0, -a)], v_end
    peak = math.sqrt((2 * a * length + v0 * v0 + v1 * v1) / 2)
    vp = max(min(vn, peak), v0, v1)
    d_acc = max(0.0, (vp * vp - v0 * v0) / (2 * a))
    d_dec = max(0.0, (vp * vp - v1 * v1) / (2 * a))
    cruise = max(0.0, length - d_acc - d_dec)
    segs = []
    if vp > v0:
        segs.append(((vp - v0) / a, v0, a))
    elif v0 > vp:
        segs.append(((v0 - vp) / a, v0, -a))
    if cruise > 0 and vp > 0:
        segs.append((cruise / vp, vp, 0.0))
    if vp > v1:
        segs.append(((vp - v1) / a, vp, -a))
    return segs, v1


class GrblSimulator:
    """A GRBL-family machine; see the module docstring for what is modelled and what is not."""

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
        self.settings: dict[int, float] = {k: float(v) for k, v in self.proto.settings.items()}
        self.settings.setdefault(10, 1.0)
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

    # --- configuration ---------------------------------------------------------------------

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

    # --- ByteDevice ------------------------------------------------------------------------

    def attach(self, send: Send, hang_up: HangUp) -> None:
        self._send, self._hang_up = send, hang_up
        if self._started and self.reset_on_attach:
            # Opening a USB-serial port pulses DTR, which resets an Arduino-based Grbl.
            self._soft_reset(power_cycle=True)

    def detach(self) -> None:
        self._send = None
        self._hang_up = None

    def receive(self, data: bytes) -> None:
        if not data or self._send is None:
            return
        now = self.clock.now()
        start = max(now + self.host_latency_s, self._rx_wire_free)
        for i in range(0, len(data), _SLICE):
            piece = data[i : i + _SLICE]
            start += len(piece) * self.byte_time_s
            self._rx_wire.append((start, piece))
        self._rx_wire_free = start
        self._rx_kick.set()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for coro in (self._rx_loop(), self._tx_loop(), self._motion_loop()):
            self._tasks.append(asyncio.create_task(coro))
        self._restart_protocol_loop()
        for fault in self.faults:
            if fault.trigger == "t":
                self._tasks.append(asyncio.create_task(self._timed_fault(fault)))
        self._banner()
        if self.state == "Alarm":  # homing enabled: power-up locks until $H or $X (§1.5)
            self._line_out("[MSG:'$H'|'$X' to unlock]")

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        if self._main_task is not None:
            tasks.append(self._main_task)
            self._main_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._started = False

    # --- what tests read -------------------------------------------------------------------

    @property
    def position(self) -> tuple[float, float, float]:
        """Machine position now."""
        return _p3(self._position_now())

    @property
    def physical_position(self) -> tuple[float, float, float]:
        """Where the head really is (differs from :attr:`position` after a power cycle until homing)."""
        return _p3(self._phys(self._position_now()))

    @property
    def beam_on(self) -> bool:
        """Whether the laser is emitting at this instant."""
        return self._beam_fraction_now() > 0

    @property
    def planner_depth(self) -> int:
        return len(self._planner)

    @property
    def rx_free(self) -> int:
        return self.proto.rx_buffer_bytes - len(self._ring)

    def burned_after(self, t: float) -> list[BurnRecord]:
        """Burned pieces that ended after simulated time ``t``."""
        return [b for b in self.burn_log if b.t1 > t + 1e-9]

    # --- the wire --------------------------------------------------------------------------

    async def _rx_loop(self) -> None:
        while True:
            if not self._rx_wire:
                self._rx_kick.clear()
                await self._rx_kick.wait()
                continue
            due, piece = self._rx_wire[0]
            wait = due - self.clock.now()
            if wait > 0:
                await self.clock.sleep(wait)
            self._rx_wire.popleft()
            for byte in piece:
                self._isr(byte)
                if byte in (0x0A, 0x0D):
                    # A complete line: the protocol loop gets to act on it (e.g. start an EEPROM
                    # write that shuts the RX interrupt) before the rest of the slice arrives.
                    await asyncio.sleep(0)
            await asyncio.sleep(0)

    def _out(self, data: bytes) -> None:
        if self._send is None:
            return
        buf = bytearray(data)
        for fault in self.faults:
            if fault.kind == "garble" and self._bytes_sent < fault.at <= self._bytes_sent + len(buf):
                mask = int(fault.arg, 0) if fault.arg else 0x80
                buf[int(fault.at) - self._bytes_sent - 1] ^= mask & 0xFF
                self.fault_times.setdefault("garble", self.clock.now())
        self._bytes_sent += len(buf)
        now = self.clock.now()
        done = max(now, self._tx_wire_free) + len(buf) * self.byte_time_s
        self._tx_wire_free = done
        due = done + self.host_latency_s + self._slow_extra
        if due <= now and not self._tx_wire:
            self._send(bytes(buf))
            return
        self._tx_wire.append((due, bytes(buf)))
        self._tx_kick.set()

    async def _tx_loop(self) -> None:
        while True:
            if not self._tx_wire:
                self._tx_kick.clear()
                await self._tx_kick.wait()
                continue
            due, data = self._tx_wire[0]
            wait = due - self.clock.now()
            if wait > 0:
                await self.clock.sleep(wait)
            self._tx_wire.popleft()
            if self._send is not None:
                self._send(data)

    def _line_out(self, text: str) -> None:
        self._out(text.encode("ascii") + b"\r\n")

    def _banner(self) -> None:
        self._out(b"\r\n" + self.proto.banner.encode("ascii") + b"\r\n")

    # --- the serial interrupt: realtime bytes and the RX ring ------------------------------

    def _isr(self, byte: int) -> None:
        if self._send is None:
            return
        if self.clock.now() < self._eeprom_busy_until:
            # AVR EEPROM writes run with the RX interrupt off: the byte never arrives (§1.2).
            self.rx_eeprom_lost_bytes += 1
            self._corrupt_ordinals.add(self._ring_lines + 1)
            return
        if byte in self.realtime:
            self._realtime_command(byte)
            return
        if len(self._ring) >= self.proto.rx_buffer_bytes:
            self.rx_overflow_bytes += 1
            self._corrupt_ordinals.add(self._ring_lines + 1)
            return
        self._ring.append(byte)
        if byte in (0x0A, 0x0D):
            self._ring_lines += 1
        self._ring_kick.set()

    def _realtime_command(self, byte: int) -> None:
        if byte != ord("?"):
            self.realtime_log.append((self.clock.now(), byte))
        if byte == 0x18:
            self._soft_reset()
            return
        if byte in (ord("?"), 0x80, 0x87):
            self._status_request()
            return
        if self._critical or self.state == "Sleep":
            return
        if byte in (ord("!"), 0x82):
            self._feed_hold()
        elif byte in (ord("~"), 0x81):
            self._cycle_start()
        elif byte == 0x84:
            self._door_event()
        elif byte == 0x85:
            if self.state == "Jog":
                self._jog_cancel()
        elif 0x90 <= byte <= 0x94:
            self.feed_ovr = self._step_override(self.feed_ovr, byte - 0x90)
        elif 0x95 <= byte <= 0x97:
            self.rapid_ovr = {0x95: 100, 0x96: 50, 0x97: 25}[byte]
            self._ovr_counter = 0
        elif 0x99 <= byte <= 0x9D:
            self.spindle_ovr = self._step_override(self.spindle_ovr, byte - 0x99)
        elif byte == 0x9E:
            pass  # spindle stop toggle only matters in Hold, where the laser is already off
        elif byte in (0xA0, 0xA1):
            self.coolant = "M9" if self.coolant != "M9" else ("M8" if byte == 0xA0 else "M7")

    def _step_override(self, value: int, op: int) -> int:
        self._ovr_counter = 0  # show Ov on the next report
        if op == 0:
            return 100
        step = {1: 10, 2: -10, 3: 1, 4: -1}[op]
        return max(10, min(200, value + step))

    # --- status reports ----------------------------------------------------------------------

    def _status_request(self) -> None:
        if self._critical or self.state == "Home" or self._pending_report:
            return  # ignored after a critical alarm and while homing; duplicates coalesce (§1.4)
        self._pending_report = True
        asyncio.get_running_loop().call_soon(self._send_report)

    def _send_report(self) -> None:
        self._pending_report = False
        if self._critical or self.state == "Home":
            return
        self.status_reports += 1
        self._line_out(self.status_line())

    def status_line(self) -> str:
        """The ``<...>`` report as the firmware would print it now (advances WCO/Ov counters)."""
        state = self.state if self.substate is None else f"{self.state}:{self.substate}"
        mask = int(self.settings.get(10, 1))
        mpos = self._position_now()
        wco = self._wco()
        fields = [state]
        if mask & 1:
            fields.append("MPos:" + ",".join(f"{v:.3f}" for v in mpos))
        else:
            fields.append("WPos:" + ",".join(f"{m - o:.3f}" for m, o in zip(mpos, wco, strict=True)))
        if mask & 2:
            fields.append(f"Bf:{self.proto.planner_blocks - len(self._planner)},{self.rx_free}")
        # FS: the actual rate and the S actually applied (M4 scaling, override), one instant.
        v, block = self._speed_now()
        spindle = self._power_fraction(block, v) * (self.settings.get(30, 1000.0) or 1000.0)
        fields.append(f"FS:{round(v * 60)},{round(spindle)}")
        if self._door_open:
            fields.append("Pn:D")
        busy = self.state in ("Run", "Jog", "Hold", "Home", "Door")
        if self._wco_counter > 0:
            self._wco_counter -= 1
            show_wco = False
        else:
            self._wco_counter = (30 if busy else 10) - 1
            show_wco = True
            self._ovr_counter = max(self._ovr_counter, 1)  # Ov waits one report (report.c)
        if show_wco:
            fields.append("WCO:" + ",".join(f"{o:.3f}" for o in wco))
            if self.dialect == "grblhal":
                fields.append(f"WCS:G{54 + self.wcs_index}")
        if self._ovr_counter > 0:
            self._ovr_counter -= 1
        else:
            self._ovr_counter = (20 if busy else 10) - 1
            fields.append(f"Ov:{self.feed_ovr},{self.rapid_ovr},{self.spindle_ovr}")
            acc = ""
            if self.spindle == "M3":
                acc += "S"
            elif self.spindle == "M4":
                acc += "C"
            if self.coolant == "M8":
                acc += "F"
            elif self.coolant == "M7":
                acc += "M"
            if acc:
                fields.append(f"A:{acc}")
        return "<" + "|".join(fields) + ">"

    def _wco(self) -> list[float]:
        return [w + g for w, g in zip(self._wcs[self.wcs_index], self._g92, strict=True)]

    # --- motion state ------------------------------------------------------------------------

    def _position_now(self) -> list[float]:
        ex = self._exec
        if ex is None:
            return list(self._pos)
        s, _ = ex.at(self.clock.now() - ex.t0)
        u = ex.block.unit()
        return [a + ui * s for a, ui in zip(ex.block.start, u, strict=True)]

    def _speed_now(self) -> tuple[float, _Motion | None]:
        ex = self._exec
        if ex is None:
            return 0.0, None
        _, v = ex.at(self.clock.now() - ex.t0)
        return max(0.0, v), ex.block

    def _power_fraction(self, block: _Motion | None, v_mm_s: float) -> float:
        """Fraction of full laser power for ``block`` at speed ``v`` (None: standing still)."""
        spindle = block.spindle if block is not None else self.spindle
        s_value = block.s if block is not None else self.s
        if spindle == "M5" or s_value <= 0 or self._check or self.state in ("Alarm", "Sleep"):
            return 0.0
        s_max = self.settings.get(30, 1000.0) or 1000.0
        base = min(1.0, max(0.0, min(1.0, s_value / s_max)) * self.spindle_ovr / 100.0)
        if not self.settings.get(32, 0):
            return base  # a spindle output: on whenever it is on, G0 included
        if self.state in ("Hold", "Door"):
            return 0.0  # DISABLE_LASER_DURING_HOLD; the door kills the output
        if block is None:
            return base if spindle == "M3" else 0.0  # M3 fires standing still, M4 does not (§1.7)
        if block.kind in ("rapid", "home"):
            return 0.0  # G0 never fires in laser mode
        if spindle == "M4":
            v_prog = self._nominal(block)
            return min(1.0, base * (v_mm_s / v_prog if v_prog > 0 else 0.0))
        return base

    def _beam_fraction_now(self) -> float:
        v, block = self._speed_now()
        return self._power_fraction(block, v)

    def _nominal(self, block: _Motion) -> float:
        """Programmed speed of ``block`` in mm/s with overrides and the machine's max rate."""
        vmax = min(self.settings.get(110, 6000.0), self.settings.get(111, 6000.0)) / 60.0
        if block.kind == "rapid":
            return vmax * self.rapid_ovr / 100.0
        if block.kind in ("jog", "home"):
            return min(vmax, block.feed_mm_min / 60.0)
        return min(vmax, block.feed_mm_min / 60.0 * self.feed_ovr / 100.0)

    @property
    def accel(self) -> float:
        return min(self.settings.get(120, 1000.0), self.settings.get(121, 1000.0))

    def _junction_speed(self, prev: tuple[float, float, float] | None, block: _Motion) -> float:
        if prev is None or block.length == 0:
            return 0.0
        u = block.unit()
        cos_theta = -sum(a * b for a, b in zip(prev, u, strict=True))
        if cos_theta > 0.999999:
            return 0.0  # full reversal
        if cos_theta < -0.999999:
            return math.inf  # straight on
        sin_half = math.sqrt(0.5 * (1.0 - cos_theta))
        return math.sqrt(self.accel * JUNCTION_DEVIATION_MM * sin_half / (1.0 - sin_half))

    def _plan_exit(self, end_speed: float = 0.0) -> float:
        """Exit speed of the head block: the most the queued blocks allow while still able to stop.

        ``end_speed`` is the speed allowed at the end of the last queued block: 0 (Grbl must be
        able to stop there), or infinity to ask what the path alone would allow.
        """
        a = self.accel
        v_next = end_speed
        blocks = list(self._planner)
        for blk in reversed(blocks[1:]):
            v_next = min(self._nominal(blk), blk.junction_v, math.sqrt(v_next * v_next + 2 * a * blk.length))
        return min(v_next, self._nominal(blocks[0])) if len(blocks) > 1 else 0.0

    def _finish_piece(self, ex: _Exec, s_end: float, t_end: float) -> None:
        """Burn and log the part of ``ex`` from what was already burned up to ``s_end``."""
        block = ex.block
        s0, t0 = ex.s_burned, ex.t_burned
        if s_end <= s0 + 1e-12 and t_end <= t0:
            return
        u = block.unit()
        p0 = [a + ui * s0 for a, ui in zip(block.start, u, strict=True)]
        p1 = [a + ui * s_end for a, ui in zip(block.start, u, strict=True)]
        ex.s_burned, ex.t_burned = s_end, t_end
        q0, q1 = self._phys(p0), self._phys(p1)
        self.travel_log.append((q0[0], q0[1], q1[0], q1[1], block.kind))
        frac_unit = self._power_fraction(block, self._nominal(block))
        if frac_unit <= 0:
            return
        dist = s_end - s0
        if block.spindle == "M4" and self.settings.get(32, 0):
            energy = self.power_w * frac_unit * dist / max(self._nominal(block), 1e-9)
        else:
            energy = self.power_w * frac_unit * max(0.0, t_end - t0)
        self._burn(p0, p1, energy, ex.t0 + t0, ex.t0 + t_end, block.line)

    def _phys(self, p: list[float]) -> list[float]:
        return [a + o for a, o in zip(p, self._offset, strict=True)]

    def _burn(self, p0: list[float], p1: list[float], energy: float, t0: float, t1: float, line: int) -> None:
        if energy <= 0:
            return
        p0, p1 = self._phys(p0), self._phys(p1)  # the workpiece is burned where the head really is
        length = max(math.dist(p0[:2], p1[:2]), self.spot_mm)
        density = energy / length
        depth = DEPTH_MM_PER_J_PER_MM * density
        shade = min(1.0, density / SHADE_FULL_J_PER_MM)
        # A spot finer than the map still marks the pixels it crosses: width at least one pixel.
        width = max(self.spot_mm, 1.01 / self.workpiece.px_per_mm)
        self.workpiece.burn_segment(p0[0], p0[1], p1[0], p1[1], width_mm=width, depth_mm=depth, shade=shade)
        self.burn_log.append(BurnRecord(t0, t1, p0[0], p0[1], p1[0], p1[1], density, line))

    def _cut_motion(self) -> float:
        """Stop tracking the executing block where it is now; returns the speed it had."""
        ex = self._exec
        if ex is None:
            return 0.0
        t = self.clock.now() - ex.t0
        s, v = ex.at(t)
        self._finish_piece(ex, s, t)
        u = ex.block.unit()
        self._pos = [a + ui * s for a, ui in zip(ex.block.start, u, strict=True)]
        remaining = ex.block.length - s
        if self._planner and self._planner[0] is ex.block:
            if remaining <= 1e-9:
                self._planner.popleft()
            else:
                head = self._planner[0]
                self._planner[0] = _Motion(
                    head.kind,
                    _p3(self._pos),
                    head.end,
                    head.feed_mm_min,
                    head.spindle,
                    head.s,
                    head.line,
                )
        self._exec = None
        self._interrupt()
        return max(0.0, v)

    def _interrupt(self) -> None:
        fut = self._motion_wake
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _sleep_interruptible(self, seconds: float) -> bool:
        """Sleep on the simulation clock; True if something cut the motion short."""
        loop = asyncio.get_running_loop()
        wake: asyncio.Future[None] = loop.create_future()
        self._motion_wake = wake
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait({sleeper, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sleeper.done():
                sleeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sleeper
        return wake.done()

    async def _motion_loop(self) -> None:
        was_running = False
        while True:
            if not self._planner or self.state not in _MOVING:
                if was_running and self.state in ("Run", "Jog") and not self._planner:
                    self.state, self.substate = "Idle", None
                    self._last_exit_v = 0.0
                    self._kick_main()
                was_running = False
                await self._wait_motion()
                continue
            was_running = True
            block = self._planner[0]
            v0 = self._last_exit_v
            v_exit = self._plan_exit()
            if (
                len(self._planner) > 1
                and v_exit < min(self._plan_exit(math.inf), self._nominal(block)) - 1e-6
            ):
                # Too few blocks queued: the head slows so it could stop at the end of the queue.
                # It counts once more motion follows (the end of a job is no starvation).
                self._starved_pending += 1
            segs, v_exit = _profile(block.length, v0, self._nominal(block), v_exit, self.accel)
            ex = _Exec(block, self.clock.now(), segs, v_exit, alone=len(self._planner) == 1)
            self._exec = ex
            interrupted = await self._sleep_interruptible(ex.duration)
            if interrupted or self._exec is not ex:
                continue
            self._finish_piece(ex, block.length, ex.duration)
            self._pos = list(block.end)
            self._exec = None
            self._last_exit_v = v_exit
            if self._planner and self._planner[0] is block:
                self._planner.popleft()
            if not self._planner and self.state == "Run":
                self._starved_at = self.clock.now()  # an underrun if more motion follows
            self._kick_main()

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

    # --- realtime actions --------------------------------------------------------------------

    def _feed_hold(self) -> None:
        if self.state == "Jog":
            self._jog_cancel()
        elif self.state == "Run":
            self._start_decel("Hold")
        elif self.state == "Idle":
            self.state, self.substate = "Hold", 0

    def _jog_cancel(self) -> None:
        jogging = [b for b in self._planner if b.kind == "jog"]
        if not jogging:
            return

        async def cancel() -> None:
            await self._decelerate("Jog", self._cut_motion())
            self._planner = deque(b for b in self._planner if b.kind != "jog")
            self.state, self.substate = "Idle", None
            self._kick_main()

        asyncio.get_running_loop().create_task(cancel())

    def _start_decel(self, kind: str) -> None:
        """Hold or door: the laser goes off in the same instant the byte or the pin is seen."""
        v = self._cut_motion()  # burn up to here, then the state change turns the laser off
        if kind == "Hold":
            self.state, self.substate = "Hold", 1
        else:
            self.state, self.substate = "Door", 2
        task = asyncio.get_running_loop().create_task(self._decelerate(kind, v))
        self._tasks.append(task)

    async def _decelerate(self, kind: str, v: float) -> None:
        """Feed hold / door / jog cancel: slow to a stop from ``v`` with the laser off (§1.3)."""
        a = self.accel
        if v > 0 and self._planner:
            head = self._planner[0]
            stop = min(head.length, v * v / (2 * a))
            u = head.unit()
            target = [p + ui * stop for p, ui in zip(self._pos, u, strict=True)]
            decel = _Motion("rapid", _p3(self._pos), _p3(target), v * 60, "M5", 0.0, head.line)
            ex = _Exec(decel, self.clock.now(), [(v / a if stop < head.length else 2 * stop / v, v, -a)], 0.0)
            self._exec = ex
            await self._sleep_interruptible(ex.duration)
            if self._exec is not ex:
                return  # a reset or an alarm took over
            self._exec = None
            q0, q1 = self._phys(self._pos), self._phys(target)
            self.travel_log.append((q0[0], q0[1], q1[0], q1[1], "decel"))
            self._pos = target
            rest = head.length - stop
            if self._planner and self._planner[0] is head:
                if rest <= 1e-9:
                    self._planner.popleft()
                else:
                    self._planner[0] = _Motion(
                        head.kind,
                        _p3(target),
                        head.end,
                        head.feed_mm_min,
                        head.spindle,
                        head.s,
                        head.line,
                    )
        self._last_exit_v = 0.0
        if kind == "Hold" and self.state == "Hold":
            self.substate = 0
            if self._hold_pending_resume:
                self._hold_pending_resume = False
                self._cycle_start()
        elif kind == "Door" and self.state == "Door":
            self.substate = 1 if self._door_open else 0
        self._kick_main()

    def _cycle_start(self) -> None:
        if self.state == "Hold":
            if self.substate == 1:
                self._hold_pending_resume = True
                return
            self.state, self.substate = ("Run", None) if self._planner else ("Idle", None)
            self._kick_motion()
        elif self.state == "Door" and self.substate == 0 and not self._door_open:
            self.state, self.substate = ("Run", None) if self._planner else ("Idle", None)
            self._kick_motion()
        self._kick_main()

    def _door_event(self) -> None:
        if self.state in ("Alarm", "Sleep", "Check"):
            return
        if self.state in ("Run", "Jog", "Hold"):
            self._start_decel("Door")
        elif self.state != "Door":
            self.state, self.substate = "Door", 1 if self._door_open else 0

    def _raise_alarm(self, code: int) -> None:
        self._cut_motion()
        self._planner.clear()
        self._last_exit_v = 0.0
        self.alarms.append(code)
        self.state, self.substate = "Alarm", None
        self.spindle = "M5"
        self._line_out(f"ALARM:{code}")
        if code in (1, 2):
            # Critical: only a reset is served (protocol.c); the host must send ^X (§1.5).
            self._critical = True
            self._ring.clear()
            self._line_out("[MSG:Reset to continue]")
        # mc_reset(): the line being executed is abandoned without a response.
        self._restart_protocol_loop()

    def _soft_reset(self, *, power_cycle: bool = False) -> None:
        self.resets += 1
        moving = (
            self._exec is not None or self.state in _MOVING or (self.state == "Hold" and self.substate == 1)
        )
        homing = self.state == "Home"
        self._cut_motion()
        prior = self.state
        alarm: int | None = None
        if power_cycle:
            # A power cycle forgets the position: Grbl starts at 0,0,0 wherever the head is.
            self._offset = self._phys(self._pos)
            self._pos = [0.0, 0.0, 0.0]
        if moving and not power_cycle and prior not in ("Alarm", "Sleep"):
            alarm = 6 if homing else 3
        keep_settings = self.settings
        self._boot()
        self.settings = keep_settings
        self._eeprom_busy_until = -1.0
        if alarm is not None:
            self.alarms.append(alarm)
            self._line_out(f"ALARM:{alarm}")
        if not power_cycle and (prior in ("Alarm", "Sleep") or alarm is not None):
            self.state = "Alarm"
        elif power_cycle:
            self.state = "Alarm" if self.settings.get(22, 0) else "Idle"
        else:
            self.state = "Idle"  # a soft reset does not re-lock for homing: only power-up does
        self._banner()
        if self.state == "Alarm":
            self._line_out("[MSG:'$H'|'$X' to unlock]")
        else:
            if self._door_open:
                self.state, self.substate = "Door", 1
            for line in self.startup_lines:
                if line:
                    self._line_out(f">{line}:ok")
        self._restart_protocol_loop()
        self._kick_motion()

    # --- the protocol loop: lines out of the ring --------------------------------------------

    def _restart_protocol_loop(self) -> None:
        """(Re)start line processing; a reset or an alarm abandons the line in progress."""
        if self._main_task is not None:
            self._main_task.cancel()
            self._main_task = None
        self._main_wake = None
        if self._started:
            self._main_task = asyncio.get_running_loop().create_task(self._protocol_loop())

    async def _protocol_loop(self) -> None:
        line = bytearray()
        overflow = False
        while True:
            if self._critical or self.state == "Sleep" or not self._ring:
                self._ring_kick.clear()
                await self._ring_kick.wait()
                continue
            byte = self._ring.pop(0)
            if byte not in (0x0A, 0x0D):
                if len(line) >= self.proto.line_buffer_chars - 1:
                    overflow = True
                else:
                    line.append(byte)
                continue
            self._ring_lines_taken += 1
            ordinal = self._ring_lines_taken
            raw, line = bytes(line), bytearray()
            was_overflow, overflow = overflow, False
            self.lines_received += 1
            number = self.lines_received
            if ordinal in self._corrupt_ordinals:
                self._corrupt_ordinals.discard(ordinal)
                self.corrupted_lines.append(number)
            if self._line_fault(number):
                continue
            if was_overflow:
                self._respond(number, "error:11")
                continue
            await self._execute(number, preprocess(raw))

    def _line_fault(self, number: int) -> bool:
        for fault in self.faults:
            if fault.trigger != "line" or int(fault.at) != number:
                continue
            if fault.kind == "disconnect":
                self.fault_times["disconnect"] = self.clock.now()
                hang_up = self._hang_up
                self.detach()
                self._ring.clear()
                if hang_up is not None:
                    hang_up(f"simulated disconnect at line {number}")
                return True
            if fault.kind == "silence":
                self.fault_times.setdefault("silence", self.clock.now())
                self._silenced.add(number)
        return False

    def _respond(self, number: int, text: str) -> None:
        if number in self._silenced:
            self._silenced.discard(number)
            return
        self.responses_sent += 1
        self._line_out(text)

    async def _execute(self, number: int, text: str) -> None:
        if not text:
            self._respond(number, "ok")  # empty or comment-only line: "ok" for syncing (protocol.c)
            return
        if text.startswith("$"):
            code = await self._system(number, text)
        elif self.state in ("Alarm", "Jog"):
            code = 9
        else:
            try:
                code = await self._gcode(number, text)
            except _SoftLimitError:
                return  # the ALARM:2 is the answer; the line is dropped with the planner
            except GCodeError as exc:
                code = exc.code
        self._respond(number, "ok" if code == 0 else f"error:{code}")

    # --- $ commands ----------------------------------------------------------------------

    def _idle_like(self) -> bool:
        return self.state in ("Idle", "Alarm") and not self._check

    async def _system(self, number: int, text: str) -> int:
        body = text[1:]
        if body == "":
            self._line_out(_HELP)
            return 0
        if body.startswith("J="):
            return await self._jog(number, body[2:])
        if body == "$":
            if self.state in ("Run", "Hold"):
                return 8
            for key in sorted(self.settings):
                self._line_out(f"${key}={_fmt_setting(self.settings[key])}")
            return 0
        if body == "#":
            for i, offs in enumerate(self._wcs):
                self._line_out(f"[G{54 + i}:" + ",".join(f"{v:.3f}" for v in offs) + "]")
            self._line_out("[G28:" + ",".join(f"{v:.3f}" for v in self._g28) + "]")
            self._line_out("[G30:" + ",".join(f"{v:.3f}" for v in self._g30) + "]")
            self._line_out("[G92:" + ",".join(f"{v:.3f}" for v in self._g92) + "]")
            self._line_out("[TLO:0.000]")
            self._line_out("[PRB:0.000,0.000,0.000:0]")
            return 0
        if body == "G":
            self._line_out(self._gc_line())
            return 0
        if body == "I":
            for line in self._build_lines():
                self._line_out(line)
            return 0
        if body == "N":
            for i, line in enumerate(self.startup_lines):
                self._line_out(f"$N{i}={line}")
            return 0
        if body == "C":
            if self._check:
                self._line_out("[MSG:Disabled]")
                self._respond(number, "ok")
                self._silenced.add(number)  # the ok is out; the reset comes after it (report.c)
                asyncio.get_running_loop().call_soon(self._soft_reset)
                return 0
            if self.state != "Idle":
                return 8
            self._check = True
            self.state = "Check"
            self._line_out("[MSG:Enabled]")
            return 0
        if body == "X":
            if self.state == "Alarm":
                self.state = "Idle"
                self._line_out("[MSG:Caution: Unlocked]")
            return 0
        if body == "H":
            if not self.settings.get(22, 0):
                return 5
            if not self._idle_like():
                return 8
            await self._home(number)
            return 0
        if body == "SLP":
            self._cut_motion()
            self._planner.clear()
            self.spindle = "M5"
            self.state, self.substate = "Sleep", None
            self._line_out("[MSG:Sleeping]")
            return 0
        if body.startswith("RST="):
            what = body[4:]
            if what not in ("$", "#", "*"):
                return 3
            if not self._idle_like():
                return 8
            if what in ("$", "*"):
                self.settings = {k: float(v) for k, v in self.proto.settings.items()}
                self.settings.setdefault(10, 1.0)
                self._line_out("[MSG:Restoring defaults]")
            if what in ("#", "*"):
                self._wcs = [[0.0, 0.0, 0.0] for _ in range(6)]
            await self._eeprom_write()
            return 0
        if body.startswith("I="):
            self.build_info = body[2:]
            await self._eeprom_write()
            return 0
        if body.startswith("N") and "=" in body:
            index = body[1 : body.index("=")]
            if index not in ("0", "1"):
                return 3
            if not self._idle_like():
                return 8
            self.startup_lines[int(index)] = body[body.index("=") + 1 :]
            await self._eeprom_write()
            return 0
        if "=" in body:
            name, _, value = body.partition("=")
            if not name.isdigit():
                return 3
            try:
                number_value = float(value)
            except ValueError:
                return 2
            if not math.isfinite(number_value):
                return 2
            if int(name) not in self.settings and int(name) not in _KNOWN_SETTINGS:
                return 3
            if not self._idle_like():
                return 8
            if number_value < 0:
                return 4
            self.settings[int(name)] = number_value
            await self._eeprom_write()
            return 0
        return 3

    async def _eeprom_write(self) -> None:
        """AVR Grbl writes EEPROM with the RX interrupt off, before it answers (§1.2)."""
        if self.dialect == "grbl":
            self._eeprom_busy_until = self.clock.now() + EEPROM_WRITE_S
            await self.clock.sleep(EEPROM_WRITE_S)

    def _build_lines(self) -> list[str]:
        blocks, rx = self.proto.planner_blocks, self.proto.rx_buffer_bytes
        if self.dialect == "grblhal":
            return [
                f"[VER:{self.proto.version}.20260817:{self.build_info}]",
                f"[OPT:VNMSL,{blocks},{rx},3,0]",
                "[NEWOPT:ENUMS,RT+,SED]",
                "[FIRMWARE:grblHAL]",
            ]
        if self.dialect == "fluidnc":
            return [
                f"[VER:{self.proto.banner.split()[1]} FluidNC {self.proto.version}:{self.build_info}]",
                "[OPT:PHS]",
            ]
        return [f"[VER:{self.proto.version}.20190830:{self.build_info}]", f"[OPT:V,{blocks},{rx}]"]

    def _gc_line(self) -> str:
        words = [
            f"G{int(self.motion_mode)}",
            f"G{54 + self.wcs_index}",
            f"G{int(self.plane)}",
            f"G{int(self.units)}",
            f"G{int(self.distance)}",
            f"G{int(self.feed_mode)}",
            self.spindle,
            self.coolant,
            f"T{self.tool}",
            f"F{_fmt_setting(self.feed)}",
            f"S{_fmt_setting(self.s)}",
        ]
        return "[GC:" + " ".join(words) + "]"

    async def _home(self, number: int) -> None:
        self.state = "Home"
        # The switches sit at the physical origin; after homing Grbl's position is true again.
        target = _p3([-o for o in self._offset])
        block = _Motion("home", _p3(self._pos), target, self.settings.get(25, 500.0), "M5", 0.0, number)
        self._planner.append(block)
        self._kick_motion()
        while self._planner and self.state == "Home":
            await self._wait_main()
        if self.state == "Home":
            self._pos = [0.0, 0.0, 0.0]
            self._offset = [0.0, 0.0, 0.0]
            self.state = "Idle"

    async def _jog(self, number: int, body: str) -> int:
        if self.state not in ("Idle", "Jog"):
            return 8 if self.state != "Alarm" else 9
        try:
            blk = parse_jog(body)
        except GCodeError as exc:
            return exc.code
        scale = 25.4 if blk.g.get("units", self.units) == 20 else 1.0
        incremental = blk.g.get("distance", self.distance) == 91
        machine = blk.g.get("non-modal") == 53
        start = self._planned_end()
        wco = [0.0, 0.0, 0.0] if machine else self._wco()
        target = list(start)
        for i, axis in enumerate("XYZ"):
            if axis in blk.values:
                value = blk.values[axis] * scale
                target[i] = start[i] + value if incremental else value + wco[i]
        if self.settings.get(20, 0) and not self._within_travel(target):
            return 15
        self._enqueue_now(
            _Motion("jog", _p3(start), _p3(target), blk.values["F"] * scale, self.spindle, self.s, number)
        )
        self.state = "Jog"
        self._kick_motion()
        return 0

    def _within_travel(self, target: list[float]) -> bool:
        return all(-1e-6 <= target[i] <= self.settings.get(130 + i, 1e9) + 1e-6 for i in range(2))

    # --- G-code execution --------------------------------------------------------------------

    def _planned_end(self) -> list[float]:
        if self._check and self._check_pos is not None:
            return list(self._check_pos)  # check mode moves the parser, not the machine
        if self._planner:
            return list(self._planner[-1].end)
        return self._position_now() if self._exec is not None else list(self._pos)

    async def _sync(self) -> None:
        """protocol_buffer_synchronize(): wait until the planner is empty and the head stopped."""
        while self._planner or self._exec is not None or self.state in ("Hold", "Door"):
            await self._wait_main()
        self._starved_at = None  # an intended stop, not an underrun
        self._starved_pending = 0

    async def _gcode(self, number: int, text: str) -> int:
        blk = parse_block(text)
        check_block(blk, motion=self.motion_mode, feed=self.feed, feed_mode=self.feed_mode)
        values = blk.values
        scale = 25.4 if blk.g.get("units", self.units) == 20 else 1.0
        # 1. feed mode, feed, spindle speed, tool (gcode.c execution order)
        if "feed-mode" in blk.g:
            self.feed_mode = blk.g["feed-mode"]
        if "F" in values:
            self.feed = values["F"] * (scale if self.feed_mode == 94 else 1.0)
        if "S" in values:
            self.s = values["S"]
        if "T" in values:
            self.tool = int(values["T"])
        # 2. spindle / laser: a state change synchronises the planner (spindle_sync)
        if "spindle" in blk.m:
            new = f"M{blk.m['spindle']}"
            if new != self.spindle and not self._check:
                await self._sync()
            self.spindle = new
        if "coolant" in blk.m:
            new = f"M{blk.m['coolant']}"
            if new != self.coolant and not self._check:
                await self._sync()
            self.coolant = new
        non_modal = blk.g.get("non-modal")
        if non_modal == 4:
            if not self._check:
                await self._sync()
                await self._dwell(values["P"], number)
        for group, attr in (("plane", "plane"), ("units", "units"), ("distance", "distance")):
            if group in blk.g:
                setattr(self, attr, blk.g[group])
        if "wcs" in blk.g:
            self.wcs_index = int(blk.g["wcs"]) - 54
            self._wco_counter = 0
        axes = blk.axes
        incremental = self.distance == 91
        if non_modal == 10:
            index = int(values["P"]) - 1 if int(values["P"]) > 0 else self.wcs_index
            current = self._planned_end()
            for i, axis in enumerate("XYZ"):
                if axis in axes:
                    value = axes[axis] * scale
                    if int(values["L"]) == 2:
                        self._wcs[index][i] = value
                    else:
                        self._wcs[index][i] = current[i] - self._g92[i] - value
            self._wco_counter = 0
            await self._eeprom_write()
        elif non_modal == 92:
            current = self._planned_end()
            wcs = self._wcs[self.wcs_index]
            for i, axis in enumerate("XYZ"):
                if axis in axes:
                    self._g92[i] = current[i] - wcs[i] - axes[axis] * scale
            self._wco_counter = 0
        elif non_modal == 92.1:
            self._g92 = [0.0, 0.0, 0.0]
            self._wco_counter = 0
        elif non_modal in (28.1, 30.1):
            store = self._g28 if non_modal == 28.1 else self._g30
            store[:] = self._planned_end()
            await self._eeprom_write()
        elif non_modal in (28, 30):
            if axes:
                target = self._target(axes, scale, incremental, machine=False)
                await self._queue_motion(number, "rapid", target)
            home = self._g28 if non_modal == 28 else self._g30
            await self._queue_motion(number, "rapid", list(home))
        if "motion" in blk.g:
            self.motion_mode = blk.g["motion"]
        if axes and non_modal not in (10, 28, 30, 92):
            target = self._target(axes, scale, incremental, machine=non_modal == 53)
            if self.settings.get(20, 0) and not self._within_travel(target) and not self._check:
                self._raise_alarm(2)
                raise _SoftLimitError()
            mode = self.motion_mode
            if mode in (0, 1):
                await self._queue_motion(number, "rapid" if mode == 0 else "line", target)
            elif mode in (2, 3):
                start = self._planned_end()
                ij = None
                if "I" in values or "J" in values:
                    ij = (values.get("I", 0.0) * scale, values.get("J", 0.0) * scale)
                radius = values["R"] * scale if "R" in values else None
                pts = arc_points(
                    (start[0], start[1]), (target[0], target[1]), clockwise=mode == 2, ij=ij, radius=radius
                )
                for x, y in pts:
                    await self._queue_motion(number, "line", [x, y, target[2]])
        if "stop" in blk.m:
            code = blk.m["stop"]
            if not self._check:
                await self._sync()
            if code in (0, 1):
                if not self._check:
                    self.state, self.substate = "Hold", 0
            else:
                # Program end (M2/M30): Grbl restores these modal defaults (gcode.c).
                self.motion_mode, self.distance, self.feed_mode, self.plane = 1.0, 90.0, 94.0, 17.0
                self.spindle, self.coolant, self.wcs_index = "M5", "M9", 0
                self._g92 = [0.0, 0.0, 0.0]
                self._line_out("[MSG:Pgm End]")
        return 0

    def _target(
        self, axes: dict[str, float], scale: float, incremental: bool, *, machine: bool
    ) -> list[float]:
        start = self._planned_end()
        wco = self._wco()
        target = list(start)
        for i, axis in enumerate("XYZ"):
            if axis in axes:
                value = axes[axis] * scale
                if incremental:
                    target[i] = start[i] + value
                else:
                    target[i] = value + (0.0 if machine else wco[i])
        return target

    async def _queue_motion(self, number: int, kind: str, target: list[float]) -> None:
        start = self._planned_end()
        if self._check:
            self._check_pos = list(target)
            return
        if self.feed_mode == 93 and kind == "line":
            length = math.dist(start, target)
            feed = length * self.feed if self.feed > 0 else 0.0
        else:
            feed = self.feed
        vmax = min(self.settings.get(110, 6000.0), self.settings.get(111, 6000.0))
        block = _Motion(
            kind, _p3(start), _p3(target), vmax if kind == "rapid" else feed, self.spindle, self.s, number
        )
        if block.length == 0:
            return
        # Grbl blocks here (plan_check_full_buffer) until a slot frees: the ok waits with it.
        while len(self._planner) >= self.proto.planner_blocks:
            await self._wait_main()
        self._enqueue_now(block)
        if self.state == "Idle":
            self.state = "Run"
            if self._motion_origin is None:
                self._motion_origin = self.clock.now()
                self._motion_started.set()
        self._kick_motion()

    def _enqueue_now(self, block: _Motion) -> None:
        prev = self._planner[-1].unit() if self._planner else None
        if self._starved_at is not None and not self._planner and self._exec is None:
            self.planner_underruns += 1  # the head stopped for lack of blocks and now goes on
        self._starved_at = None
        ex = self._exec
        if ex is not None and ex.alone and len(self._planner) == 1:
            # The block being run was planned to stop at its end, and more motion arrived after all.
            self._starved_pending += 1
            ex.alone = False
        self.lookahead_starved_blocks += self._starved_pending
        self._starved_pending = 0
        block.junction_v = self._junction_speed(prev, block)
        self._planner.append(block)

    async def _dwell(self, seconds: float, number: int) -> None:
        self._dwelling = True
        t0 = self.clock.now()
        try:
            await self.clock.sleep(seconds)
        finally:
            self._dwelling = False
        frac = self._power_fraction(None, 0.0)
        if frac > 0:
            p = list(self._pos)
            self._burn(p, p, self.power_w * frac * seconds, t0, self.clock.now(), number)

    # --- faults in time ----------------------------------------------------------------------

    async def _timed_fault(self, fault: Fault) -> None:
        if fault.at > 0:
            await self._motion_started.wait()
            origin = self._motion_origin or 0.0
            await self.clock.sleep(max(0.0, origin + fault.at - self.clock.now()))
        self.fault_times.setdefault(fault.kind, self.clock.now())
        if fault.kind == "alarm":
            if self.state != "Alarm":
                self._raise_alarm(fault.arg_int(1))
        elif fault.kind == "door":
            self._door_open = True
            self._door_event()
            if fault.arg is not None:
                await self.clock.sleep(fault.arg_float(0.0))
                self._door_open = False
                if self.state == "Door" and self.substate == 1:
                    self.substate = 0
        elif fault.kind == "slow":
            self._slow_extra = fault.arg_float(0.25)


class _SoftLimitError(GCodeError):
    """A soft-limit alarm: the line gets no response of its own (the alarm is the answer)."""

    def __init__(self) -> None:
        super().__init__(0)


_KNOWN_SETTINGS = frozenset(
    {0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 20, 21, 22, 23, 24, 25, 26, 27, 30, 31, 32}
    | set(range(100, 103))
    | set(range(110, 113))
    | set(range(120, 123))
    | set(range(130, 133))
)


def _fmt_setting(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.3f}"
