"""The Telesis driver's exact bytes, retries and link-down rule, against a scripted marker."""

from __future__ import annotations

import asyncio

import pytest

from markctl.drivers.base import Outcome, SafeStateReached, State
from markctl.drivers.telesis import TelesisDriver, TelesisOptions
from markctl.drivers.telesis.codec import Framing, encode_frame
from markctl.errors import DeviceError, MachineTimeoutError
from markctl.layouts.program import MotionProgram, PatternField, PatternProgram, ProcessParams
from markctl.profiles import FirmwareProfile, load_profile
from markctl.testing import ScriptedTransport

ACK, NAK = b"\x06", b"\x15"
F = Framing()
I_ = b"\x01I\x02\x03H\r"  # read status
O_ = b"\x01O\x02\x03N\r"  # reset/online
G_ = b"\x01G\x02\x03F\r"  # go


def status(outputs: int, fault: int = 0, chars: int = 0) -> bytes:
    return encode_frame(F, "I", None, f"{outputs:02X};00;{fault:02X};{chars:04X}".encode())


READY, BUSY, DONE, FAULT = 0x02, 0x08, 0x03, 0x10
CLOSE = [(O_, ACK), (I_, status(READY))]  # close(): reset/online, confirmed not busy


def telesis_profile(**protocol: object) -> FirmwareProfile:
    """telesis-tmp, with O sent at every safe state (these scripts check its bytes) unless told."""
    data = load_profile("telesis-tmp").model_dump()
    data["protocol"].update({"abort_when_idle": True, **protocol})
    return FirmwareProfile.model_validate(data)


def driver_for(
    steps: list[tuple[bytes, bytes]], **protocol: object
) -> tuple[TelesisDriver, ScriptedTransport]:
    transport = ScriptedTransport(steps)
    profile = telesis_profile(**protocol)
    # 50 Hz polls keep the scripted exchanges quick; the profile caps it at 4 Hz anyway.
    return TelesisDriver(transport, profile, TelesisOptions(poll_hz=50)), transport


async def test_a_job_is_load_fill_check_go_poll_then_reset_to_confirm() -> None:
    program = PatternProgram("SERIAL", (PatternField("AB1", 3.0, 0, 0), PatternField("Z9", 3.0, 0, 5)))
    driver, t = driver_for(
        [
            (I_, status(READY)),  # handshake (under a second old at the job start: not asked again)
            (b"\x01P\x02SERIAL\x03Q\r", ACK),
            (encode_frame(F, "V", 1, b"AB1"), ACK),
            (encode_frame(F, "V", 2, b"Z9"), ACK),
            (I_, status(READY)),  # no fault before Go
            (G_, ACK),
            (I_, status(BUSY, chars=2)),
            (I_, status(DONE, chars=5)),
            (O_, ACK),  # safe state: reset/online ...
            (I_, status(READY)),  # ... confirmed not busy
            *CLOSE,
        ]
    )
    await driver.connect()
    assert driver.poll_hz == 4.0  # the option asked for 50 Hz; the profile's maximum wins
    result = await driver.run(program)
    assert result.outcome is Outcome.DONE and (result.done, result.total) == (5, 5)
    assert result.safe_state_confirmed
    await driver.close()
    t.assert_done()


async def test_nak_is_retransmitted_then_accepted() -> None:
    driver, t = driver_for([(I_, NAK), (I_, NAK), (I_, status(READY)), *CLOSE])
    info = await driver.connect()
    assert info.details["status_at_connect"] == "ready"
    tx = [e for e in driver.history if getattr(e, "direction", "") == "tx"]
    assert len(tx) == 3  # the same frame three times
    await driver.close()
    t.assert_done()


async def test_three_naks_are_a_device_error() -> None:
    driver, t = driver_for([(I_, NAK), (I_, NAK), (I_, NAK)])
    with pytest.raises(DeviceError) as info:
        await driver.connect()
    assert info.value.device_code == "NAK" and "3 times" in str(info.value)
    t.assert_done()


async def test_silence_three_times_is_link_down() -> None:
    # reply_timeout_s and retries come from the profile (3 s x 3 by default; short here)
    driver, t = driver_for([(I_, b""), (I_, b""), (I_, b"")], reply_timeout_s=0.05)
    with pytest.raises(MachineTimeoutError, match="link down: no valid answer to I .* after 3 tries"):
        await driver.connect()
    t.assert_done()
    assert driver.state is State.DISCONNECTED


async def test_corrupt_reply_is_retransmitted() -> None:
    bad = bytearray(status(READY))
    bad[-2] ^= 0x40  # corrupt the BCC
    driver, t = driver_for([(I_, bytes(bad)), (I_, status(READY)), *CLOSE], reply_timeout_s=0.5)
    await driver.connect()
    await driver.close()
    t.assert_done()


async def test_retries_setting_is_honoured() -> None:
    driver, t = driver_for(
        [(I_, b""), (I_, b""), (I_, b""), (I_, b""), (I_, b"")], reply_timeout_s=0.02, retries=5
    )
    with pytest.raises(MachineTimeoutError, match="after 5 tries"):
        await driver.connect()
    t.assert_done()


async def test_echo_reply_framing_confirms_safe_state_by_echo() -> None:
    driver, t = driver_for([(I_, status(READY)), (O_, O_), (I_, status(READY))], reply_framing="echo")
    await driver.connect()
    await driver.close()
    t.assert_done()
    assert "O (reset/online) acknowledged" in driver.events_of(SafeStateReached)[-1].method  # type: ignore[attr-defined]


async def test_echo_mode_accepts_only_the_echo() -> None:
    # In echo mode a lone ACK is not an acceptance: the driver retransmits until it sees the echo.
    program = PatternProgram("P1", (PatternField("A", 3.0, 0, 0),))
    load = b"\x01P\x02P1\x03" + bytes([0x50 ^ 0x02 ^ 0x50 ^ 0x31 ^ 0x03]) + b"\r"
    driver, t = driver_for(
        [(I_, status(READY)), (load, ACK), (load, load)],
        reply_framing="echo",
        reply_timeout_s=0.05,
    )
    await driver.connect()
    handle = driver.run(program)
    # after the echo the script ends: the driver's next frame (V01) gets no answer -> link down
    result = await handle
    assert t.written.count(load) == 2
    assert result.outcome is Outcome.TIMEOUT and "V01" in result.message
    assert not result.safe_state_confirmed  # the O of the safe state got no answer either
    assert driver.state is State.NEEDS_RECOVERY
    await driver.close()  # the safe state is attempted again and stays unconfirmed
    assert driver.state is State.NEEDS_RECOVERY


async def test_programs_it_cannot_mark_are_refused_before_any_byte() -> None:
    driver, t = driver_for([(I_, status(READY)), *CLOSE])
    await driver.connect()
    motion = MotionProgram(strokes=(), params=(ProcessParams(speed_mm_min=100, force_pct=50),))
    with pytest.raises(ValueError, match="pattern programs"):
        driver.run(motion)
    with pytest.raises(ValueError, match="printable ASCII"):
        driver.run(PatternProgram("SERIAL", (PatternField("AB\u00e9", 3.0, 0, 0),)))
    with pytest.raises(ValueError, match="allows 64"):
        driver.run(PatternProgram("SERIAL", (PatternField("A" * 65, 3.0, 0, 0),)))
    with pytest.raises(ValueError, match="allows 8 text fields"):
        driver.run(PatternProgram("S", tuple(PatternField("A", 3.0, 0, i) for i in range(9))))
    await driver.close()
    t.assert_done()


class LateMarker:
    """A transport whose marker answers each frame after a delay chosen per frame type."""

    options_model = ScriptedTransport.options_model

    def __init__(self, answers: dict[bytes, tuple[float, bytes]]) -> None:
        self.answers = answers
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.is_open = False
        self.description = "late"

    async def open(self) -> None:
        self.is_open = True

    async def close(self) -> None:
        self.is_open = False

    async def write(self, data: bytes) -> None:
        delay, reply = self.answers[data[:2]]
        asyncio.get_running_loop().call_later(delay, self.inbox.put_nowait, reply)

    async def read(self, timeout: float | None = None) -> bytes:
        try:
            return await asyncio.wait_for(self.inbox.get(), timeout)
        except TimeoutError:
            return b""


async def test_a_late_answer_to_an_interrupted_frame_is_not_taken_for_the_next() -> None:
    # P is answered ACK after 30 ms, but the job is cancelled after 10 ms; O is refused (NAK, 40 ms).
    # Without the grace time the late ACK of P would be read as the ACK of O.
    transport = LateMarker({b"\x01P": (0.03, ACK), b"\x01O": (0.04, NAK), b"\x01I": (0.0, status(READY))})
    driver = TelesisDriver(transport, telesis_profile(reply_timeout_s=0.2))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(driver._command(encode_frame(F, "P", None, b"X"), "P"), 0.01)
    with pytest.raises(DeviceError, match="refused O .* 3 times"):
        await driver._command(O_, "O")


async def test_by_default_an_idle_machine_gets_no_o_only_a_status_read() -> None:
    program = PatternProgram("SERIAL", (PatternField("AB1", 3.0, 0, 0),))
    driver, t = driver_for(
        [
            (I_, status(READY)),
            (b"\x01P\x02SERIAL\x03Q\r", ACK),
            (encode_frame(F, "V", 1, b"AB1"), ACK),
            (I_, status(READY)),
            (G_, ACK),
            (I_, status(DONE, chars=3)),
            (I_, status(DONE, chars=3)),  # safe state: seen not busy, no O (abort_when_idle = false)
            (I_, status(READY)),  # close(): the same
        ],
        abort_when_idle=False,
    )
    await driver.connect()
    result = await driver.run(program)
    await driver.close()
    assert result.outcome is Outcome.DONE and result.safe_state_confirmed
    t.assert_done()
    assert O_ not in t.written
