"""Driver for Telesis-style dot-peen pattern markers over the Extended framed protocol (PROTOCOLS.md §5.1).

A pattern machine owns its fonts and motion, so a :class:`~markctl.layouts.program.PatternProgram`
becomes: ``P`` load pattern, ``V``/``1`` fill text fields 1..n, ``I`` check the status, ``G`` go,
then ``I`` polls (never faster than the profile's ``status_poll_hz_max``) until Done or Fault.

Host is master (§5.1): every frame waits ``reply_timeout_s`` (3 s) for its answer and is sent again
on silence, on NAK or on a corrupt reply; after ``retries`` (3) tries the link is declared down
(:class:`MachineTimeoutError`; after all-NAK answers, :class:`DeviceError` with code ``NAK``).
Framing details no public source confirms (BCC, reply framing, status extensions) come from the
profile; see :mod:`markctl.drivers.telesis.codec`.

Safe state (assumed, see the profile's provenance): ``O`` (reset and put online) stops a running
cycle and retracts the stylus; it is confirmed by an ``I`` status that shows the machine not Busy.
``O`` is sent whenever a cycle may be running (a Go was sent and its end not seen, or the status
says Busy); when none can be, the profile's ``abort_when_idle`` (default false) decides, since a
controller may log an ``O`` and it clears a fault the operator has not seen. The protocol has no pause, so pause/resume are refused.

Progress is in characters. With ``status_format = "io-fault-count"`` the machine reports how many
characters it has marked; with the plain ``io`` format the driver can only estimate from elapsed
time and the profile's ``chars_per_s``, and says so in the progress detail and the result.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import ClassVar

from markctl.drivers.base import DeviceInfo, Driver, DriverOptions, JobHandle, JobResult, Outcome, State
from markctl.drivers.pattern import PatternOptions, expected_marking_s, poll_delay
from markctl.drivers.telesis import codec
from markctl.errors import (
    DeviceError,
    MachineConnectionError,
    MachineTimeoutError,
    ProtocolError,
    SafetyError,
)
from markctl.layouts.program import PatternProgram, Program
from markctl.profiles import FirmwareProfile, TelesisProtocol

__all__ = ["TelesisDriver", "TelesisOptions"]


class TelesisOptions(PatternOptions):
    """Address options of a Telesis machine (``telesis+serial:///dev/ttyS0?poll_hz=2``)."""


class TelesisDriver(Driver):
    """A Telesis-style marker on a byte transport (serial, TCP, or the simulator's pipe)."""

    family: ClassVar[str] = "telesis"
    transports: ClassVar[frozenset[str]] = frozenset({"serial", "tcp", "sim"})
    options_model: ClassVar[type[DriverOptions]] = TelesisOptions
    # O + I confirmation must survive one lost reply at the 3 s reply timeout.
    safe_state_timeout_s: ClassVar[float] = 12.0

    def __init__(
        self,
        transport: object,
        profile: FirmwareProfile,
        options: DriverOptions | None = None,
        *,
        name: str = "",
    ) -> None:
        if not isinstance(profile.protocol, TelesisProtocol):
            raise ValueError(f"profile {profile.id} is not a telesis profile (protocol {profile.family})")
        super().__init__(transport, profile, options, name=name)
        self.proto: TelesisProtocol = profile.protocol
        self.framing = codec.Framing.from_profile(self.proto)
        self._decoder = codec.FrameDecoder(self.framing)
        self._lock = asyncio.Lock()
        opts = self.options
        wanted = opts.poll_hz if isinstance(opts, TelesisOptions) and opts.poll_hz else None
        self.poll_hz = min(wanted or self.proto.status_poll_hz_max, self.proto.status_poll_hz_max)
        self.exchanges = 0  # frames answered (tests and benchmarks)
        self.exchange_s = 0.0  # wall time spent waiting for answers
        self.status_polls = 0
        self.last_status: codec.IOStatus | None = None
        self._next_poll = 0.0  # loop time before which no status request may leave
        self._last_status_at = -1e9
        self._interrupted = False  # an exchange was cancelled while waiting for its answer
        self._cycle_open = False  # a Go was sent and the cycle's end not yet seen

    # --- requests --------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Forget stale input before a new exchange.

        After an exchange was interrupted (a job aborted while waiting for an answer), the answer
        may still be on its way; it is given a short grace time and dropped, so an ACK for the
        interrupted frame is not taken as the ACK of the next one (the safe state's ``O``).
        """
        if self._interrupted:
            self._interrupted = False
            loop = asyncio.get_running_loop()
            deadline = loop.time() + min(0.05, self.proto.reply_timeout_s)
            while (remaining := deadline - loop.time()) > 0:
                data = await self.transport.read(timeout=remaining)
                if data:
                    self.log("rx", data)
                    self._decoder.feed(data)
        while True:
            try:
                if self._decoder.next_event() is None:
                    return
            except ProtocolError:
                continue

    async def _request(self, frame: bytes, what: str, *, status: bool = False) -> codec.IOStatus | None:
        """Send ``frame`` until it is answered; the I/O status for ``status`` requests."""
        proto = self.proto
        async with self._lock:
            await self._drain()
            failures: list[str] = []
            naks = 0
            for attempt in range(1, proto.retries + 1):
                self.log("tx", frame)
                await self.transport.write(frame)
                started = time.monotonic()
                try:
                    answer = await self._answer(frame, status)
                except asyncio.CancelledError:
                    self._interrupted = True
                    raise
                finally:
                    self.exchange_s += time.monotonic() - started
                if isinstance(answer, codec.IOStatus) or answer == "ok":
                    self.exchanges += 1
                    return answer if isinstance(answer, codec.IOStatus) else None
                naks += answer == "NAK"
                failures.append(f"try {attempt}: {answer}")
            detail = "; ".join(failures)
            if naks == proto.retries:
                raise DeviceError(
                    f"{self.name}: the marker refused {what} (NAK) {naks} times",
                    device_code="NAK",
                    address=self.name,
                )
            raise MachineTimeoutError(
                f"{self.name}: link down: no valid answer to {what} after {proto.retries} tries "
                f"of {proto.reply_timeout_s:g} s ({detail})",
                address=self.name,
                code="link-down",
            )

    async def _answer(self, sent: bytes, status: bool) -> codec.IOStatus | str:
        """Wait up to reply_timeout_s for the answer to ``sent``: an IOStatus, "ok", or why not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.proto.reply_timeout_s
        echo = self.proto.reply_framing == "echo"
        while True:
            try:
                event = self._decoder.next_event()
            except ProtocolError as exc:
                return f"corrupt answer: {exc}"
            if event is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return f"no answer within {self.proto.reply_timeout_s:g} s"
                data = await self.transport.read(timeout=remaining)
                if data:
                    self.log("rx", data)
                    self._decoder.feed(data)
                continue
            if isinstance(event, codec.Nak):
                return "NAK"
            if status:
                if isinstance(event, codec.Frame) and event.type == "I" and event.data:
                    try:
                        return codec.parse_status(
                            event.data, dict(self.proto.output_bits), self.proto.status_format
                        )
                    except ProtocolError as exc:
                        return f"corrupt status: {exc}"
                continue  # an ACK or an echo before the status frame: keep waiting
            if (isinstance(event, codec.Ack) and not echo) or (
                isinstance(event, codec.Frame) and echo and event.raw == sent
            ):
                return "ok"
            # anything else (an unsolicited frame, an ACK in echo mode) is not our answer

    async def _last_resort(self) -> str:
        # "O" resets the marker and stops a running cycle (an assumption the profile states);
        # sent once, without waiting for its ACK.
        frame = codec.reset_online(self.framing)
        await self.transport.write(frame)
        self.log("tx", frame)
        return "reset/online (O) sent without confirmation"

    async def _command(self, frame: bytes, what: str) -> None:
        await self._request(frame, what)

    async def read_status(self) -> codec.IOStatus:
        """One ``I`` exchange, never sooner than 1/poll_hz after the previous status answer."""
        loop = asyncio.get_running_loop()
        wait = self._next_poll - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            st = await self._request(codec.read_status(self.framing), "I (read status)", status=True)
        finally:
            self._next_poll = loop.time() + 1.0 / self.poll_hz
        assert st is not None
        self.status_polls += 1
        self.last_status = st
        self._last_status_at = loop.time()
        return st

    def _fresh_status(self) -> codec.IOStatus | None:
        """The last status if it is under a second old and shows a ready, idle machine (saves a poll
        period at the start of a job; a fault since then still shows in the check before Go)."""
        st = self.last_status
        age = asyncio.get_running_loop().time() - self._last_status_at
        if st is None or age > 1.0 or st.fault or st.busy or not st.ready:
            return None
        return st

    def fault_text(self, code: int | None) -> str:
        if code is None:
            return "fault (this status format carries no code)"
        return self.proto.fault_codes.get(code, f"fault code {code} (not in the profile's table)")

    # --- Driver ----------------------------------------------------------------------------

    async def _handshake(self) -> DeviceInfo:
        self._decoder = codec.FrameDecoder(self.framing)
        try:
            first = await self.read_status()
        except MachineConnectionError as exc:
            # A controller (or its serial bridge) serves one host at a time and closes a second
            # connection at once: the first status request is where that shows.
            raise MachineConnectionError(
                f"{self.name}: the marker closed the connection before answering ({exc})",
                address=self.name,
                hint="is another host connected to it? a marker serves one host at a time",
            ) from exc
        st = first
        if st.fault or not st.ready:
            await self._command(codec.reset_online(self.framing), "O (reset/online)")
            st = await self.read_status()
        self.set_state(State.FAULT if st.fault else State.IDLE, raw=st.describe())
        return DeviceInfo(
            family=self.family,
            dialect=f"extended/{self.proto.reply_framing}",
            version="unknown (the protocol has no version query)",
            details={
                "status_at_connect": first.describe(),
                "fault_code_at_connect": first.fault_code,
                "bcc": f"{self.proto.bcc}/{self.proto.bcc_encoding}/{self.proto.bcc_span}",
            },
        )

    def _check_program(self, program: Program) -> None:
        if not isinstance(program, PatternProgram):
            raise ValueError(
                f"{self.name}: a Telesis marker runs pattern programs, not {program.kind} programs"
            )
        if len(program.fields) > self.proto.text_fields:
            raise ValueError(
                f"{len(program.fields)} fields, but the profile allows {self.proto.text_fields} text fields"
            )
        for text, what in [(program.pattern, "pattern name")] + [
            (f.text, f"field {i}") for i, f in enumerate(program.fields, 1)
        ]:
            if len(text) > self.proto.field_chars_max:
                raise ValueError(
                    f"{what}: {len(text)} characters, the profile allows {self.proto.field_chars_max}"
                )
            if not all(0x20 <= ord(c) <= 0x7E for c in text):
                raise ValueError(f"{what}: {text!r} is not printable ASCII")
        fonts = self.profile.dot_peen.fonts if self.profile.dot_peen else ()
        for i, f in enumerate(program.fields, 1):
            if fonts and f.font not in fonts:
                raise ValueError(f"field {i}: font {f.font!r} is not one of this machine's fonts {fonts}")

    def _expected_s(self, program: PatternProgram) -> float:
        return expected_marking_s(self.profile, program)

    async def _execute(self, program: Program, job: JobHandle) -> JobResult:
        assert isinstance(program, PatternProgram)
        total = program.char_count
        job.report(0, total, "checking the marker")
        st = self._fresh_status() or await self.read_status()
        if st.fault or not st.ready:
            await self._command(codec.reset_online(self.framing), "O (reset/online)")
            st = await self.read_status()
            if st.fault or not st.ready:
                raise DeviceError(
                    f"{self.name}: marker not ready after reset: {st.describe()}, {self.fault_text(st.fault_code)}",
                    device_code=f"fault:{st.fault_code}",
                    address=self.name,
                )
        await self._command(
            codec.load_pattern(self.framing, program.pattern), f"P (load pattern {program.pattern!r})"
        )
        job.report(0, total, f"pattern {program.pattern} loaded")
        for i, f in enumerate(program.fields, 1):
            frame = codec.set_field(self.framing, i, f.text, type_=self.proto.set_field_type)
            await self._command(frame, f"{self.proto.set_field_type}{i:02d} (text field {i})")
        job.report(0, total, f"{len(program.fields)} field(s) filled")
        before = await self.read_status()
        if before.fault:
            raise DeviceError(
                f"{self.name}: marker faulted before Go: {self.fault_text(before.fault_code)}",
                device_code=f"fault:{before.fault_code}",
                address=self.name,
            )
        job.begin_cycle()  # Go starts the stylus
        self._cycle_open = True  # until its end is seen, the safe state sends O
        await self._command(codec.go(self.framing), "G (go)")
        self.set_state(State.RUN, raw="busy")
        return await self._watch_cycle(program, job, total, done_before=before.done)

    async def _watch_cycle(
        self, program: PatternProgram, job: JobHandle, total: int, *, done_before: bool
    ) -> JobResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        expected = self._expected_s(program)
        limit = expected * self._margin() + 10.0
        seen_busy = False
        done = 0
        while True:
            st = await self.read_status()  # paced: a whole period after the previous answer
            elapsed = loop.time() - started
            seen_busy = seen_busy or st.busy
            if st.chars_done is not None:
                done, how = min(st.chars_done, total), "reported by the marker"
            else:
                done, how = (
                    min(total - 1, math.floor(total * elapsed / expected)) if expected else 0,
                    "estimated",
                )
            if st.fault:
                self._cycle_open = False  # the controller stopped the cycle itself
                self.set_state(State.FAULT, raw=st.describe())
                code = st.fault_code
                return JobResult(
                    Outcome.FAULT,
                    f"{self.name}: marker fault during the cycle: {self.fault_text(code)}; "
                    f"{done} of {total} characters marked ({how})",
                    code=None if code is None else str(code),
                    done=done,
                    total=total,
                )
            finished = st.done and not st.busy and (seen_busy or not done_before or done >= total)
            if finished:
                self._cycle_open = False
                job.report(total, total, "done")
                self.set_state(State.IDLE, raw=st.describe())
                return JobResult(Outcome.DONE, f"{total} characters marked", done=total, total=total)
            job.report(max(0, done), total, f"marking ({how})")
            opts = self.options if isinstance(self.options, TelesisOptions) else TelesisOptions()
            fraction = done / total if total and st.chars_done is not None else 0.0
            wait = poll_delay(elapsed, fraction, expected, 1.0 / self.poll_hz, opts.slow_poll_s)
            self._next_poll = max(self._next_poll, loop.time() + wait)
            if elapsed > limit:
                raise MachineTimeoutError(
                    f"{self.name}: cycle not done after {elapsed:.1f} s (expected {expected:.1f} s); "
                    f"{done} of {total} characters ({how})",
                    address=self.name,
                    code="cycle-timeout",
                )

    def _margin(self) -> float:
        opts = self.options
        return opts.cycle_margin if isinstance(opts, TelesisOptions) else 3.0

    async def _make_safe(self, reason: str) -> str:
        if not self.transport.is_open:
            raise MachineConnectionError(f"{self.name}: link is down; cannot send O", address=self.name)
        if not self.proto.abort_when_idle and not self._cycle_open:
            # No cycle of ours can be running: confirm it by the status, without an O that the
            # controller may log (and that would clear a fault the operator has not seen).
            st = await self.read_status()
            if not st.busy:
                self.set_state(State.FAULT if st.fault else State.IDLE, raw=st.describe())
                return f"no O needed: status {st.describe()} (not busy)"
        await self._command(codec.reset_online(self.framing), "O (reset/online)")
        for _ in range(max(3, math.ceil(self.poll_hz * 3))):
            st = await self.read_status()
            if not st.busy:
                self._cycle_open = False
                self.set_state(State.FAULT if st.fault else State.IDLE, raw=st.describe())
                return f"O (reset/online) acknowledged; status {st.describe()} (not busy)"
        raise SafetyError(f"{self.name}: still busy after O (reset/online)", address=self.name)
