"""GRBL-family laser driver: Grbl 1.1 (1.1h), grblHAL and FluidNC 3.x over any byte transport.

Protocol: PROTOCOLS.md §1 (line protocol, buffers, realtime bytes, status reports, codes, ``$``
commands, laser mode), §2 (grblHAL / FluidNC differences), §9.2 (driver design) and §9.3
(connection robustness). The codec (:mod:`.codec`) does the byte work; this module does the
talking:

* **Connect** (§9.3): wait for the banner (an Arduino resets when the port opens), else send ^X and
  wait again; the banner's dialect must match the profile's; ``?`` must parse; ``$I`` gives the
  planner and RX sizes (``[OPT:]``, else the profile: FluidNC reports none); ``$$`` is cached.
* **Streaming**: character counting against the RX buffer (§1.2): a FIFO of the byte lengths of
  unacknowledged lines, the next line goes only if it fits; send-response as a mode, and forced
  for EEPROM-writing lines. Realtime bytes (``?``, ``!``, ``~``, overrides) bypass the count.
  Status is polled on its own task at no more than the profile's ``status_poll_hz_max``.
* **Laser**: ``$32=1`` is verified before a job; G-code comes from :mod:`.gcode` (M4, S scaled to
  ``$30``, G0 between strokes). ``check_mode`` runs the whole job through ``$C`` first.
* **Ends**: a device ``error:N`` stops the stream and ends the job with the code, the profile's
  text and the program line; ``ALARM:N`` likewise; a lost link ends it with the last
  acknowledged line. The base class then calls :meth:`GRBLDriver._make_safe`: feed hold, wait for
  ``Hold:0``, soft reset to flush the RX buffer and planner, ``M5 S0`` when the machine takes
  G-code, and a status report that shows a stopped machine with the laser at 0. A lost link gets
  one attempt to reopen the transport and send ^X; otherwise the safe state is declared
  unconfirmed. Nothing ever resumes by itself; :meth:`GRBLDriver.resume_from_line` restores the
  modal state first.
* **Lost acknowledgements** (a swallowed ``ok``): when several consecutive status reports show an
  idle machine and no response came for lines still counted as pending, the job ends with a
  timeout instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast

from pydantic import Field

from markctl.drivers.base import DeviceInfo, Driver, DriverOptions, JobHandle, JobResult, Outcome, State
from markctl.drivers.grbl.codec import (
    RT,
    AlarmMessage,
    Bracket,
    BuildOptions,
    BuildVersion,
    ErrorResponse,
    Feedback,
    LineDecoder,
    Message,
    Ok,
    Setting,
    StatusReport,
    Welcome,
    encode_line,
    needs_send_response,
    override_bytes,
)
from markctl.drivers.grbl.gcode import GCodeProgram, frame_lines, num, program_lines, resume_lines
from markctl.errors import (
    AlarmError,
    DeviceError,
    MachineConnectionError,
    MachineError,
    MachineTimeoutError,
    ProtocolError,
    SafetyError,
)
from markctl.layouts.program import MotionProgram, Program
from markctl.profiles import FirmwareProfile, GrblProtocol

__all__ = ["GRBLDriver", "GRBLOptions"]

_STATE = {
    "Idle": State.IDLE,
    "Run": State.RUN,
    "Hold": State.HOLD,
    "Jog": State.JOG,
    "Alarm": State.ALARM,
    "Door": State.DOOR,
    "Check": State.CHECK,
    "Home": State.HOME,
    "Sleep": State.SLEEP,
    "Tool": State.TOOL,
}


class GRBLOptions(DriverOptions):
    """Options of a GRBL machine address (``grbl+serial:///dev/ttyUSB0?streaming=send-response``)."""

    streaming: Literal["char-count", "send-response"] = Field(
        default="char-count", description="Character counting (fast) or one line at a time (§1.2)."
    )
    poll_hz: float = Field(
        default=4.0, ge=0, le=50, description="Status polls per second during a job; 0 = off."
    )
    check_mode: bool = Field(default=False, description="Dry-run every job through $C check mode first.")
    handshake_timeout_s: float = Field(default=2.5, gt=0, le=60, description="Wait for the banner, then ^X.")
    response_timeout_s: float = Field(default=5.0, gt=0, le=120, description="Wait for a command's ok/error.")
    watchdog_s: float = Field(default=10.0, gt=0, le=600, description="Silence while running = link lost.")
    stall_s: float = Field(
        default=5.0, gt=0, le=600, description="'Run' with the position and acks frozen this long = stalled."
    )
    reset_timeout_s: float = Field(
        default=1.5, gt=0, le=2.0, description="Safe state: wait this long for the banner after ^X (twice)."
    )
    keepalive_s: float = Field(
        default=0.5, gt=0, le=60, description="Handshake: send '?' after this much silence (bridges)."
    )
    rx_buffer_bytes: int | None = Field(default=None, gt=0, le=65536, description="Override [OPT:]/profile.")
    dynamic_power: bool = Field(default=True, description="M4 (power follows speed); False = M3 constant.")


@dataclass
class _Pending:
    """A line sent and not yet answered."""

    index: int  # position in the job (0-based), or -1 for a command
    size: int
    future: asyncio.Future[Ok | ErrorResponse] | None = None
    pushes: list[Message] = field(default_factory=list)
    alone: bool = False  # sent send-response: nothing may follow until it is answered


class GRBLDriver(Driver):
    """Driver for GRBL-family laser engravers; see the module docstring."""

    family = "grbl"
    options_model: ClassVar[type[DriverOptions]] = GRBLOptions
    transports = frozenset({"serial", "tcp", "rfc2217", "sim"})

    def __init__(
        self,
        transport: Any,
        profile: FirmwareProfile,
        options: DriverOptions | None = None,
        *,
        name: str = "",
    ) -> None:
        if not isinstance(profile.protocol, GrblProtocol):
            raise ValueError(f"profile {profile.id!r} is not a GRBL-family profile")
        super().__init__(transport, profile, options, name=name)
        self.proto: GrblProtocol = profile.protocol
        self.opts = cast(GRBLOptions, self.options)
        self.settings: dict[int, float] = {}
        self.status: StatusReport | None = None
        self.wco: tuple[float, ...] | None = None
        self.messages: deque[str] = deque(maxlen=200)
        self.rx_buffer_bytes = self.proto.rx_buffer_bytes
        self.planner_blocks = self.proto.planner_blocks
        self.welcome: Welcome | None = None
        self.last_lines: tuple[str, ...] = ()
        self.last_acked = 0
        self._decoder = LineDecoder()
        self._reader: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._pending: deque[_Pending] = deque()
        self._acked: deque[tuple[_Pending, Ok | ErrorResponse]] = deque()
        self._wake = asyncio.Event()
        self._lost: MachineConnectionError | None = None
        self._alarm: int | None = None
        self._critical = False
        self._resets = 0
        self._status_seq = 0
        self._idle_streak = 0
        self._quiet_since = 0
        self._last_rx = time.monotonic()
        self._progress_at = time.monotonic()  # last ack or position change while running
        self._progress_pos: tuple[float, ...] | None = None
        self._last_poll = 0.0
        self._protocol_error: ProtocolError | None = None
        self._polling = False

    # --- reading -----------------------------------------------------------------------------

    def _start_reader(self) -> None:
        self._decoder = LineDecoder()
        self._lost = None
        self._reader = asyncio.create_task(self._read_loop(), name=f"{self.name} reader")

    async def _stop_tasks(self) -> None:
        await self._stop_poller()
        reader, self._reader = self._reader, None
        if reader is not None and not reader.done():
            reader.cancel()
            await asyncio.wait({reader}, timeout=2.0)

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.transport.read(timeout=None)
                if not data:
                    continue
                self._last_rx = time.monotonic()
                self.log("rx", data)
                for item in self._decoder.feed(data):
                    self._dispatch(item)
                self._wake.set()
        except MachineConnectionError as exc:
            self._lost = exc
            self._machine_state(State.DISCONNECTED, str(exc))
            for entry in self._pending:
                if entry.future is not None and not entry.future.done():
                    entry.future.set_exception(exc)
            self._wake.set()

    def _dispatch(self, item: Message | ProtocolError) -> None:
        if isinstance(item, ProtocolError):
            raw = item.raw.lstrip()
            if raw.startswith((b"<", b"[")) and raw.endswith((b">", b"]")):
                self.messages.append(f"ignored garbled push message: {item}")
                return  # a damaged status report or message changes nothing we count
            self._protocol_error = item
            return
        if isinstance(item, Ok | ErrorResponse):
            self._idle_streak = 0
            self._quiet_since = self._status_seq
            if not self._pending:
                self.messages.append(f"response without a pending line: {item}")
                return
            entry = self._pending.popleft()
            if entry.future is not None:
                if not entry.future.done():
                    entry.future.set_result(item)
            else:
                self._acked.append((entry, item))
            return
        if isinstance(item, StatusReport):
            self._on_status(item)
            return
        if isinstance(item, AlarmMessage):
            self._alarm = item.code
            self._machine_state(State.ALARM, f"ALARM:{item.code}")
            return
        if isinstance(item, Welcome):
            self._on_reset(item)
            return
        if isinstance(item, Feedback):
            self.messages.append(item.text)
            if item.text == "Reset to continue":
                self._critical = True
        if self._pending:
            self._pending[0].pushes.append(item)

    def _on_status(self, report: StatusReport) -> None:
        self.status = report
        if report.wco is not None:
            self.wco = report.wco
        mpos, _ = report.position(self.wco)
        if (
            report.state != "Run"
            or mpos is None
            or self._progress_pos is None
            or any(abs(a - b) > 1e-3 for a, b in zip(mpos, self._progress_pos, strict=False))
        ):
            self._progress_at = time.monotonic()  # moving, or in a state that explains standing still
        self._progress_pos = mpos
        self._status_seq += 1
        self._idle_streak = self._idle_streak + 1 if report.state in ("Idle", "Check") else 0
        if self._state is not State.CONNECTING:
            self._machine_state(_STATE.get(report.state, State.FAULT), report.raw_state)
        if report.state != "Alarm":
            self._alarm = None  # unlocked or reset since the ALARM message

    def _machine_state(self, state: State, raw: str) -> None:
        # NEEDS_RECOVERY is the base class's verdict on an unconfirmed safe state: only
        # recover() clears it, never a status report that happens to arrive.
        if self._state is not State.NEEDS_RECOVERY:
            self.set_state(state, raw=raw)

    def _on_reset(self, welcome: Welcome) -> None:
        """A banner: the machine reset; nothing sent before it will be answered."""
        self.welcome = welcome
        self._resets += 1
        self._critical = False
        for entry in self._pending:
            if entry.future is not None and not entry.future.done():
                entry.future.set_exception(MachineError(f"{self.name}: the machine reset", address=self.name))
        self._pending.clear()

    def _raise_if_lost(self) -> None:
        if self._lost is not None:
            raise self._lost

    async def _wait(self, timeout: float | None) -> bool:
        """Wait for anything to arrive; False on timeout."""
        self._wake.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    # --- writing -----------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        self._raise_if_lost()
        async with self._write_lock:
            self.log("tx", data)
            await self.transport.write(data)

    async def _last_resort(self) -> str:
        # A soft reset stops motion and turns the laser output off (§1.3); written straight to the
        # transport, past a write lock that a stuck exchange may still hold.
        await self.transport.write(bytes([RT.RESET]))
        self.log("tx", bytes([RT.RESET]))
        return "soft reset (^X) sent without confirmation"

    async def realtime(self, byte: int) -> None:
        """Send one realtime command byte (§1.3): not buffered, not counted, answered by nothing."""
        await self._write(bytes([byte]))

    def _refuse_during_job(self, what: str) -> None:
        # Operator actions between jobs only: a line slipped into a running stream would break the
        # streamer's accounting and move the head while it marks.
        if self._job is not None and not self._job.done():
            raise MachineError(f"{self.name}: cannot {what} while a job runs", address=self.name)

    async def command(
        self, line: str, timeout: float | None = None, *, keepalive_s: float | None = None, step: str = ""
    ) -> list[Message]:
        """Send one line send-response and return the push messages that came before its ``ok``.

        ``keepalive_s``: while no answer has come, send ``?`` that often. Some USB bridges and
        boards hand a line over only when more bytes follow it; a status request is harmless and
        answered by realtime code, so it pushes the answer out without changing anything.
        ``step`` names the step in the timeout message (``handshake step '$I'``).

        Raises:
            DeviceError: the machine answered ``error:N`` (text from the profile).
            MachineTimeoutError: no answer within ``timeout`` (default: the option).
        """
        data = encode_line(line, max_chars=self.proto.line_buffer_chars)
        loop = asyncio.get_running_loop()
        entry = _Pending(-1, len(data), loop.create_future())
        while self._pending:  # send-response: nothing else may be in flight
            self._raise_if_lost()
            await self._wait(0.5)
        self._pending.append(entry)
        await self._write(data)
        assert entry.future is not None
        limit = timeout or self.opts.response_timeout_s
        deadline = time.monotonic() + limit
        while True:
            left = deadline - time.monotonic()
            wait = min(left, keepalive_s) if keepalive_s else left
            try:
                async with asyncio.timeout(max(0.0, wait)):
                    reply = await asyncio.shield(entry.future)
                break
            except TimeoutError:
                if time.monotonic() < deadline:
                    await self.realtime(RT.STATUS)  # keep-alive
                    continue
                with contextlib.suppress(ValueError):
                    self._pending.remove(entry)
                what = f"{step} ({line!r})" if step else repr(line)
                raise MachineTimeoutError(
                    f"{self.name}: no answer to {what} within {limit:g} s",
                    address=self.name,
                    hint="check the baud rate and the cable; a bridge that holds lines back needs keep-alive",
                ) from None
        if isinstance(reply, ErrorResponse):
            raise DeviceError(
                f"{self.name}: {line!r} refused: {self._error_text(reply.code)}",
                device_code=f"error:{reply.code}",
            )
        return entry.pushes

    def _error_text(self, code: int) -> str:
        return self.proto.errors.get(code, f"unknown error {code}")

    def _alarm_text(self, code: int) -> str:
        return self.proto.alarms.get(code, f"unknown alarm {code}")

    async def query_status(self, timeout: float = 1.0) -> StatusReport | None:
        """Request one status report (rate-limited to ``status_poll_hz_max``); None if none came."""
        gap = 1.0 / self.proto.status_poll_hz_max
        wait = self._last_poll + gap - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        seq = self._status_seq
        self._last_poll = time.monotonic()
        await self.realtime(RT.STATUS)
        deadline = time.monotonic() + timeout
        while self._status_seq == seq:
            self._raise_if_lost()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await self._wait(left)
        return self.status

    async def _poll_loop(self) -> None:
        hz = min(self.opts.poll_hz, self.proto.status_poll_hz_max)
        # The flag, not only cancel(): Python 3.11's wait_for can swallow a cancellation that
        # races with the awaited event, and a poller that survives would poll forever.
        with contextlib.suppress(MachineConnectionError):
            while self._polling:
                await asyncio.sleep(1.0 / hz)
                if self._polling:
                    await self.query_status(timeout=1.0 / hz)

    # --- connect -----------------------------------------------------------------------------

    async def _handshake(self) -> DeviceInfo:
        await self._stop_tasks()
        self._pending.clear()
        self._resets = 0
        self._start_reader()
        try:
            return await self._handshake_steps()
        except BaseException:
            await self._stop_tasks()
            raise

    async def _await_banner(self, resets_before: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._resets == resets_before:
            self._raise_if_lost()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await self._wait(left)
        return True

    async def _handshake_steps(self) -> DeviceInfo:
        timeout = self.opts.handshake_timeout_s
        if not await self._await_banner(0, timeout):
            # No banner: the board did not reset on open (or we missed it). A soft reset prints it.
            before = self._resets
            await self.realtime(RT.RESET)
            if not await self._await_banner(before, timeout):
                raise MachineTimeoutError(
                    f"{self.name}: no GRBL banner within {timeout:g} s, even after a soft reset",
                    address=self.name,
                    hint="check the port, the baud rate and that the machine is powered",
                )
        assert self.welcome is not None
        # grblHAL at COMPATIBILITY_LEVEL >= 1 prints the classic Grbl banner (§2.1): then $I's
        # [FIRMWARE:grblHAL] has to settle it, below.
        classic_hal = self.welcome.dialect == "grbl" and self.proto.dialect == "grblhal"
        if self.welcome.dialect != self.proto.dialect and not classic_hal:
            raise self._dialect_error(f"the machine is {self.welcome.dialect} ({self.welcome.text!r})")
        if not classic_hal and not re.search(self.proto.banner_regex, self.welcome.text):
            raise self._dialect_error(
                f"the banner {self.welcome.text!r} does not match the profile's banner_regex"
            )
        report = await self.query_status(timeout=self.opts.response_timeout_s)
        if report is None:
            raise MachineTimeoutError(
                f"{self.name}: handshake step 'status' got no report to '?' within "
                f"{self.opts.response_timeout_s:g} s",
                address=self.name,
            )
        pushes = await self.command(
            "$I", keepalive_s=self.opts.keepalive_s, step="handshake step 'build info'"
        )
        version = self.welcome.version
        opt_codes = ""
        for item in pushes:
            if isinstance(item, BuildVersion):
                version = item.version or version
            elif isinstance(item, BuildOptions):
                opt_codes = item.codes
                if item.rx_buffer_bytes:
                    self.rx_buffer_bytes = item.rx_buffer_bytes
                if item.planner_blocks:
                    self.planner_blocks = item.planner_blocks
            elif isinstance(item, Bracket) and item.tag == "FIRMWARE" and item.body.lower() == "grblhal":
                if self.proto.dialect != "grblhal":
                    raise self._dialect_error("$I says [FIRMWARE:grblHAL]")
                classic_hal = False
        if classic_hal:
            raise self._dialect_error(f"the machine is grbl ({self.welcome.text!r}) and $I names no grblHAL")
        if self.opts.rx_buffer_bytes is not None:
            self.rx_buffer_bytes = self.opts.rx_buffer_bytes
        await self.refresh_settings(keepalive_s=self.opts.keepalive_s, step="handshake step 'settings'")
        self.set_state(_STATE.get(report.state, State.FAULT), raw=report.raw_state)
        return DeviceInfo(
            family="grbl",
            dialect=self.welcome.dialect,
            version=version,
            banner=self.welcome.text,
            details={
                "rx_buffer_bytes": self.rx_buffer_bytes,
                "planner_blocks": self.planner_blocks,
                "options": opt_codes,
                "laser_mode": self.settings.get(32),
                "s_max": self.settings.get(30),
            },
        )

    def _dialect_error(self, what: str) -> MachineError:
        return MachineError(
            f"{self.name}: {what}, but profile {self.profile.id!r} is for {self.proto.dialect}",
            address=self.name,
            code="dialect",
            hint="pick the profile that matches the firmware",
        )

    async def refresh_settings(self, *, keepalive_s: float | None = None, step: str = "") -> dict[int, float]:
        """``$$``, every numbered setting cached in :attr:`settings` as a float (Grbl prints
        ``$11=0.010``, ``$100=80.000``; grblHAL and FluidNC print more than the profile names)."""
        pushes = await self.command("$$", keepalive_s=keepalive_s, step=step)
        settings: dict[int, float] = {}
        for item in pushes:
            if isinstance(item, Setting) and item.number is not None:
                with contextlib.suppress(ValueError):
                    settings[item.number] = float(item.value)
        self.settings = settings
        return settings

    async def set_setting(self, number: int, value: float) -> None:
        """``$n=value``, always send-response (an EEPROM write, §1.2), then the cache is updated."""
        self._refuse_during_job("change a setting")
        text = f"{value:g}" if value == int(value) else f"{value:.3f}"
        await self.command(f"${number}={text}")
        self.settings[number] = float(value)

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await self._stop_tasks()

    # --- machine actions ---------------------------------------------------------------------

    async def reset(self) -> None:
        """Soft reset (^X) and wait for the banner."""
        before = self._resets
        await self.realtime(RT.RESET)
        if not await self._await_banner(before, self.opts.response_timeout_s):
            raise MachineTimeoutError(f"{self.name}: no banner after soft reset", address=self.name)

    async def unlock(self) -> None:
        """``$X``: leave the alarm lock (the operator must know the position is still right)."""
        self._refuse_during_job("unlock")
        await self.command("$X")
        self._alarm = None
        await self.query_status()

    async def home(self) -> None:
        """``$H`` homing cycle (needs ``$22=1``)."""
        self._refuse_during_job("home")
        await self.command("$H", timeout=120.0)
        await self.query_status()

    async def jog(self, dx_mm: float, dy_mm: float, feed_mm_min: float) -> None:
        """Relative jog (``$J=G91 ...``, §1.8); it inherits the laser state, so M5 first if unsure."""
        self._refuse_during_job("jog")
        if not feed_mm_min > 0:
            raise ValueError("jog feed must be positive")
        await self.command(f"$J=G21G91X{num(dx_mm)}Y{num(dy_mm)}F{num(feed_mm_min, 1)}")

    async def jog_cancel(self) -> None:
        """Stop a jog with 0x85 (not ``!``, which could leave Grbl suspended after the jog, §1.8)."""
        await self.realtime(RT.JOG_CANCEL)

    async def set_override(self, kind: Literal["feed", "power"], percent: int) -> None:
        """Feed or laser-power override, 10-200 %, as realtime bytes (§1.3)."""
        for byte in override_bytes(kind, percent):
            await self.realtime(byte)

    async def _pause(self) -> None:
        await self.realtime(RT.FEED_HOLD)
        deadline = time.monotonic() + self.opts.response_timeout_s
        while time.monotonic() < deadline:
            report = await self.query_status()
            if report is not None and report.raw_state in ("Hold:0", "Door:0", "Door:1", "Idle", "Alarm"):
                return
        raise MachineTimeoutError(f"{self.name}: feed hold not confirmed", address=self.name)

    async def _resume(self) -> None:
        await self.realtime(RT.CYCLE_START)
        await self.query_status()

    # --- jobs --------------------------------------------------------------------------------

    def _check_program(self, program: Program) -> None:
        job = cast(Any, program)
        if isinstance(job, GCodeProgram):
            for i, line in enumerate(job.lines):
                try:
                    encode_line(line, max_chars=self.proto.line_buffer_chars)
                except ValueError as exc:
                    raise ValueError(f"line {i + 1}: {exc}") from None
        elif isinstance(program, MotionProgram):
            vmax = min(
                self.settings.get(110, self.profile.machine.max_feed_mm_min),
                self.profile.machine.max_feed_mm_min,
            )
            w = self.settings.get(130, self.profile.machine.work_area_x_mm)
            h = self.settings.get(131, self.profile.machine.work_area_y_mm)
            for i, params in enumerate(program.params):
                if params.power_pct is None:
                    raise ValueError(f"params {i}: a laser needs power_pct")
                if params.speed_mm_min > vmax:
                    raise ValueError(
                        f"params {i}: {params.speed_mm_min:g} mm/min exceeds the machine's {vmax:g}"
                    )
            x0, y0, x1, y1 = program.bounds
            if program.strokes and (x0 < 0 or y0 < 0 or x1 > w or y1 > h):
                raise ValueError(
                    f"program bounds {program.bounds} leave the work area 0..{w:g} x 0..{h:g} mm"
                )
            if program.strokes:
                self._check_travel((x0, y0, x1, y1))
        else:
            raise ValueError(f"{self.name}: a GRBL laser marks MotionPrograms, not {type(program).__name__}")
        if self.settings.get(32) != 1:
            raise SafetyError(
                f"{self.name}: laser mode is off ($32={self.settings.get(32)!r}): G0 moves would fire the beam",
                address=self.name,
                hint="set $32=1 (driver.set_setting(32, 1))",
            )
        if self._state is State.ALARM or self._alarm is not None:
            raise AlarmError(
                f"{self.name}: the machine is in alarm; unlock ($X) or home ($H) first",
                alarm_code=f"ALARM:{self._alarm}" if self._alarm else "Alarm",
                address=self.name,
            )

    def _check_travel(self, bounds: tuple[float, float, float, float]) -> None:
        """With soft limits on ($20=1) Grbl stops the job with ALARM:2 at the first target outside
        machine space, which is ``-$13x..0`` on every axis (limits.c; homing sets the switch end to
        0, travel runs negative; ``$23`` only picks the switch end). Refuse such a job before a byte
        goes out, naming the axis and the overshoot. Machine = work + WCO, the offset the machine
        last reported (G54 + G92 + tool length; the handshake's first report carries it)."""
        if not self.settings.get(20):
            return
        wco = self.wco if self.wco is not None else (0.0, 0.0, 0.0)
        for i, axis in enumerate("XY"):
            travel = self.settings.get(130 + i)
            if travel is None or i >= len(wco):
                continue
            low, high = bounds[i] + wco[i], bounds[i + 2] + wco[i]
            if high > 1e-6:
                over, edge, reach = high, "0", high
            elif low < -travel - 1e-6:
                over, edge, reach = -travel - low, f"-{travel:g}", low
            else:
                continue
            if bounds[i + 2] - bounds[i] > travel:
                fix = f"the job is {bounds[i + 2] - bounds[i]:g} mm wide on {axis}, more than the {travel:g} mm of travel"
            else:
                fix = (
                    f"set a work offset that puts it inside, e.g. G10 L2 P1 {axis}{-bounds[i + 2]:g} "
                    f"(work {axis}0..{bounds[i + 2]:g} then lies at machine {-bounds[i + 2]:g}..0)"
                )
            raise ValueError(
                f"{self.name}: soft limits are on and the job would reach machine {axis}{reach:+.3f}, "
                f"{over:.3f} mm past the limit at {axis}{edge} (machine space is {axis}-{travel:g}..0, "
                f"work offset {axis}{wco[i]:+.3f}); {fix}"
            )

    def lines_for(self, program: MotionProgram) -> list[str]:
        """The G-code this driver would stream for ``program``."""
        spot = self.profile.laser.spot_mm if self.profile.laser is not None else 0.1
        return program_lines(
            program, s_max=self.settings.get(30, 1000.0), dynamic_power=self.opts.dynamic_power, spot_mm=spot
        )

    def run_gcode(self, lines: Sequence[str], *, name: str = "gcode") -> JobHandle:
        """Stream raw G-code lines as a job (same ends, same safe state as :meth:`run`)."""
        return self.run(cast(Program, GCodeProgram(tuple(lines), name)))

    def frame(
        self,
        bounds: tuple[float, float, float, float],
        *,
        speed_mm_min: float = 3000.0,
        power_pct: float = 0.0,
        repeat: int = 1,
    ) -> JobHandle:
        """Trace ``bounds`` with the beam off, or with an explicit visible ``power_pct`` (G1 + M3)."""
        if not 0 <= power_pct <= 5:
            raise ValueError("framing power must be 0-5 %: it is a pointer, not a mark")
        s_value = power_pct / 100.0 * self.settings.get(30, 1000.0)
        return self.run_gcode(
            frame_lines(bounds, speed_mm_min=speed_mm_min, power_s=s_value, repeat=repeat), name="frame"
        )

    def resume_point(self) -> int:
        """Index into :attr:`last_lines` from which a resume leaves no gap after a reset or power loss.

        Only acknowledged lines are known, and an acknowledged motion line may still have been
        waiting in the planner when the machine lost it (PROTOCOLS.md §8 theme 4): step back by
        what the planner holds, plus the block being executed. Some segments may be marked twice.
        """
        return max(0, self.last_acked - self.planner_blocks - 1)

    def resume_from_line(self, lines: Sequence[str], start: int) -> JobHandle:
        """Continue ``lines`` at index ``start`` after modal state is restored (beam off approach)."""
        return self.run_gcode(resume_lines(lines, start), name="resume")

    async def _execute(self, program: Program, job: JobHandle) -> JobResult:
        job_any = cast(Any, program)
        lines = (
            list(job_any.lines)
            if isinstance(job_any, GCodeProgram)
            else self.lines_for(cast(MotionProgram, program))
        )
        self.last_lines = tuple(lines)
        self.last_acked = 0
        self._alarm = None
        self._protocol_error = None
        job.report(0, len(lines), "starting")
        if self.opts.check_mode:
            result = await self._check_run(lines, job)
            if result is not None:
                return result
        if self.opts.poll_hz > 0:
            self._polling = True
            self._poller = asyncio.create_task(self._poll_loop(), name=f"{self.name} poller")
        try:
            job.begin_cycle()  # motion lines (with the laser) go out from here on
            return await self._stream(lines, job, check=False)
        except MachineConnectionError as exc:
            # What the operator needs to resume: the last line the machine confirmed.
            return JobResult(
                Outcome.CONNECTION_LOST,
                f"{exc} (last acknowledged line {self.last_acked})",
                None,
                self.last_acked or None,
                self.last_acked,
                len(lines),
            )
        finally:
            await self._stop_poller()

    async def _stop_poller(self) -> None:
        self._polling = False
        poller, self._poller = self._poller, None
        if poller is not None and not poller.done():
            poller.cancel()
            await asyncio.wait({poller}, timeout=2.0)

    async def _check_run(self, lines: list[str], job: JobHandle) -> JobResult | None:
        """``$C`` dry run: every line parsed by the firmware, nothing moves, nothing fires."""
        await self.command("$C")
        result = await self._stream(lines, job, check=True)
        before = self._resets
        await self.command("$C")  # leaving check mode resets the machine (§1.6)
        if not await self._await_banner(before, self.opts.response_timeout_s):
            raise MachineTimeoutError(f"{self.name}: no reset after leaving check mode", address=self.name)
        await self.query_status()
        if not result.ok:
            return JobResult(
                result.outcome, f"check mode: {result.message}", result.code, result.line, 0, len(lines)
            )
        job.report(0, len(lines), "check mode passed")
        return None

    async def _stream(self, lines: list[str], job: JobHandle, *, check: bool) -> JobResult:
        total = len(lines)
        encoded = [encode_line(line, max_chars=self.proto.line_buffer_chars) for line in lines]
        rx = self.rx_buffer_bytes
        send_response = self.opts.streaming == "send-response"
        in_flight: deque[_Pending] = deque()
        in_flight_bytes = 0
        sent = acked = reported = 0
        resets_before = self._resets
        self._acked.clear()
        self._progress_at = time.monotonic()
        phase = "check" if check else "mark"
        while acked < total:
            # 1. everything the reader handed over since the last turn
            while self._acked:
                entry, reply = self._acked.popleft()
                in_flight.popleft()
                in_flight_bytes -= entry.size
                acked += 1
                self._progress_at = time.monotonic()
                self.last_acked = entry.index + 1
                if isinstance(reply, ErrorResponse):
                    return JobResult(
                        Outcome.ERROR,
                        f"line {entry.index + 1} {lines[entry.index]!r}: {self._error_text(reply.code)}",
                        f"error:{reply.code}",
                        entry.index + 1,
                        acked,
                        total,
                    )
            if not check and acked != reported:
                reported = acked
                job.report(acked, total, f"sent {sent}, acknowledged {acked}", self._work_xy())
            if acked >= total:
                break
            # 2. how the job can end early
            self._raise_if_lost()
            self._raise_if_stalled()
            if self._protocol_error is not None:
                raise self._protocol_error
            if self._alarm is not None:
                code = self._alarm
                return JobResult(
                    Outcome.ALARM,
                    f"ALARM:{code}: {self._alarm_text(code)} (last acknowledged line {self.last_acked})",
                    f"ALARM:{code}",
                    self.last_acked or None,
                    acked,
                    total,
                )
            if self.status is not None and self.status.state == "Door" and not check:
                return JobResult(
                    Outcome.ALARM,
                    f"safety door opened (last acknowledged line {self.last_acked})",
                    "door",
                    self.last_acked or None,
                    acked,
                    total,
                )
            if self._resets != resets_before:
                return JobResult(
                    Outcome.FAULT, f"the machine reset itself during the {phase}", "reset", None, acked, total
                )
            if in_flight and self._idle_streak >= 3 and self._status_seq - self._quiet_since >= 3:
                raise MachineTimeoutError(
                    f"{self.name}: the machine is idle but {len(in_flight)} of {sent} lines sent were "
                    f"never acknowledged (lost ok; last acknowledged line {self.last_acked})",
                    address=self.name,
                )
            # 3. send what fits
            progressed = False
            while sent < total:
                data = encoded[sent]
                alone = send_response or needs_send_response(lines[sent])
                if alone:
                    fits = not in_flight
                else:
                    fits = in_flight_bytes + len(data) <= rx and not (in_flight and in_flight[-1].alone)
                if not fits:
                    break
                entry = _Pending(sent, len(data), alone=alone)
                self._pending.append(entry)
                in_flight.append(entry)
                in_flight_bytes += len(data)
                await self._write(data)
                self._quiet_since = self._status_seq
                self._idle_streak = 0
                sent += 1
                progressed = True
                if alone:
                    break
            if progressed or self._acked:
                continue
            if not await self._wait(self.opts.watchdog_s):
                if time.monotonic() - self._last_rx > self.opts.watchdog_s:
                    raise MachineConnectionError(
                        f"{self.name}: no bytes from the machine for {self.opts.watchdog_s:g} s "
                        f"(last acknowledged line {self.last_acked})",
                        address=self.name,
                    )
        if check:
            return JobResult(Outcome.DONE, "check passed", None, None, acked, total)
        # "All lines acked" is not "job finished": wait for the planner to drain (§1.2). Short
        # polls, so an alarm (after which Grbl ignores '?') or a lost link ends the wait at once.
        while True:
            report = await self.query_status(timeout=min(1.0, self.opts.watchdog_s))
            self._raise_if_lost()
            self._raise_if_stalled()
            if self._alarm is not None:
                code = self._alarm
                return JobResult(
                    Outcome.ALARM,
                    f"ALARM:{code}: {self._alarm_text(code)}",
                    f"ALARM:{code}",
                    None,
                    acked,
                    total,
                )
            if self._resets != resets_before:
                return JobResult(Outcome.FAULT, "the machine reset itself", "reset", None, acked, total)
            if report is None:
                if time.monotonic() - self._last_rx > self.opts.watchdog_s:
                    raise MachineConnectionError(
                        f"{self.name}: no status at the end of the job for {self.opts.watchdog_s:g} s",
                        address=self.name,
                    )
                continue
            if report.state == "Door":
                return JobResult(Outcome.ALARM, "safety door opened", "door", None, acked, total)
            if report.state == "Idle":
                break
        job.report(total, total, "done", self._work_xy())
        return JobResult(Outcome.DONE, f"{total} lines", None, None, total, total)

    def _raise_if_stalled(self) -> None:
        """A machine that keeps reporting ``Run`` while its position and its acknowledgements stay
        frozen is stalled (a jammed axis, a firmware stuck in a loop): the silence watchdog never
        fires because status reports keep coming. The planner explains a frozen position only
        for an instant (a stop between blocks); ``stall_s`` allows far more than that."""
        report = self.status
        if report is None or report.state != "Run":
            return
        frozen = time.monotonic() - self._progress_at
        if frozen > self.opts.stall_s:
            where = ",".join(f"{v:.3f}" for v in self._progress_pos or ())
            raise MachineTimeoutError(
                f"{self.name}: stalled: the machine reports Run but has neither moved nor acknowledged "
                f"a line for {frozen:.1f} s (MPos {where}; last acknowledged line {self.last_acked})",
                address=self.name,
                code="stall",
                hint="check the axes and drivers for a jam; the job was stopped and the beam turned off",
            )

    def _work_xy(self) -> tuple[float, float] | None:
        if self.status is None:
            return None
        _, wpos = self.status.position(self.wco)
        if wpos is None or len(wpos) < 2:
            return None
        return (wpos[0], wpos[1])

    # --- safe state --------------------------------------------------------------------------

    async def _reopen(self) -> None:
        """One attempt to get the link back after it dropped, then a soft reset through it."""
        await self._stop_tasks()
        with contextlib.suppress(Exception):
            await self.transport.close()
        await self.transport.open()
        self._pending.clear()
        self._start_reader()
        before = self._resets
        await self.realtime(RT.RESET)
        if not await self._await_banner(before, min(2.0, self.safe_state_timeout_s / 2)):
            raise MachineConnectionError(f"{self.name}: reopened, but no banner after ^X", address=self.name)

    async def _make_safe(self, reason: str) -> str:
        steps: list[str] = []
        if self._lost is not None or self._reader is None or self._reader.done():
            try:
                await self._reopen()
            except MachineError as exc:
                raise MachineConnectionError(
                    f"link lost ({self._lost}); reopening failed: {exc}", address=self.name
                ) from exc
            steps.append("link reopened, soft reset")
        reopened = bool(steps)
        urgent = reason not in ("job done", "close", "recover")
        if urgent and not reopened and not self._critical:
            # Feed hold first, questions later: Grbl turns the laser off the moment it holds.
            await self.realtime(RT.FEED_HOLD)
            steps.append("feed hold")
        report = None if self._critical else await self.query_status(timeout=0.5)
        settled = report is not None and report.state in ("Idle", "Alarm", "Sleep")
        if reopened or urgent or not settled:
            # A job that did not finish may have lines in the RX buffer and blocks in the planner
            # that would still run: a soft reset flushes both. From Hold:0 it keeps the position.
            if not reopened:
                if report is not None and report.state in ("Run", "Jog", "Home") and not steps:
                    await self.realtime(RT.FEED_HOLD)
                    steps.append("feed hold")
                for _ in range(20):
                    if report is None or report.state not in ("Run", "Jog", "Hold", "Home"):
                        break
                    if report.raw_state == "Hold:0":
                        steps.append("Hold:0")
                        break
                    report = await self.query_status(timeout=0.5)
                before = self._resets
                for attempt in range(2):
                    # A ^X can be lost: Grbl clears the reset flag as it enters the wait after a
                    # hard/soft-limit alarm, so one that arrives between ALARM:1/2 and
                    # [MSG:Reset to continue] does nothing (seen on grbl-sim). Send it once more.
                    await self.realtime(RT.RESET)
                    if await self._await_banner(before, self.opts.reset_timeout_s):
                        break
                    if attempt:
                        raise SafetyError(
                            f"{self.name}: no banner within {self.opts.reset_timeout_s:g} s after each of "
                            "two soft resets",
                            address=self.name,
                        )
                steps.append("soft reset")
            self._pending.clear()
            report = await self.query_status(timeout=1.0)
        if report is None:
            raise SafetyError(f"{self.name}: no status report", address=self.name)
        if report.state in ("Idle", "Check"):
            await self.command("M5S0", timeout=2.0)
            steps.append("M5 S0")
            report = await self.query_status(timeout=1.0)
            if report is None:
                raise SafetyError(f"{self.name}: no status report after M5", address=self.name)
        if report.state in ("Run", "Jog", "Home") or (report.state == "Hold" and report.substate == 1):
            raise SafetyError(f"{self.name}: still moving ({report.raw_state})", address=self.name)
        if report.spindle not in (None, 0.0):
            raise SafetyError(f"{self.name}: laser still at S{report.spindle:g}", address=self.name)
        fs = (
            f"FS:{report.feed:g},{report.spindle:g}"
            if report.feed is not None and report.spindle is not None
            else ""
        )
        steps.append(f"status {report.raw_state} {fs}".strip())
        return ", ".join(steps)
