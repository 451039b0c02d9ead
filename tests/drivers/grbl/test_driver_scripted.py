"""The GRBL driver against scripted machines: every byte it writes, in order (ScriptedTransport).

These pin the wire behaviour independently of the simulator: the handshake of PROTOCOLS.md §9.3,
character counting against the RX size from ``[OPT:]`` (§1.2), send-response, the end of a job
and the safe-state sequence.
"""

from __future__ import annotations

import pytest

from markctl.drivers.base import Outcome, SafeStateReached, SafeStateUnconfirmed
from markctl.drivers.grbl import GRBLDriver, GRBLOptions
from markctl.errors import MachineError, MachineTimeoutError, SafetyError
from markctl.profiles import load_profile
from markctl.testing import ScriptedTransport

from .conftest import fast  # noqa: TID252

BANNER = b"\r\nGrbl 1.1h ['$' for help]\r\n"
IDLE = b"<Idle|MPos:0.000,0.000,0.000|FS:0,0|WCO:0.000,0.000,0.000>\r\n"
SETTINGS = b"$10=1\r\n$30=1000\r\n$31=0\r\n$32=1\r\n$110=6000\r\n$130=400\r\n$131=400\r\nok\r\n"


def handshake(opt: bytes = b"[OPT:V,15,128]", settings: bytes = SETTINGS) -> list[tuple[bytes, bytes]]:
    return [
        (b"?", IDLE),
        (b"$I\n", b"[VER:1.1h.20190830:]\r\n" + opt + b"\r\nok\r\n"),
        (b"$$\n", settings),
    ]


# The safe state of a finished job or an idle close: no reset needed, beam off, confirmed.
CLOSE_IDLE = [(b"?", IDLE), (b"M5S0\n", b"ok\r\n"), (b"?", IDLE)]


def driver_for(transport: ScriptedTransport, profile_id: str = "grbl-1.1", **options: object) -> GRBLDriver:
    options.setdefault("poll_hz", 0)
    options.setdefault("handshake_timeout_s", 0.3)
    return GRBLDriver(transport, fast(load_profile(profile_id)), GRBLOptions(**options))  # type: ignore[arg-type]


async def test_handshake_and_idle_close_byte_exact() -> None:
    t = ScriptedTransport(handshake() + CLOSE_IDLE, greeting=BANNER)
    driver = driver_for(t)
    info = await driver.connect()
    assert (info.dialect, info.version, info.banner) == ("grbl", "1.1h.20190830", "Grbl 1.1h ['$' for help]")
    assert info.details["rx_buffer_bytes"] == 128 and info.details["planner_blocks"] == 15
    assert driver.settings[32] == 1 and driver.settings[30] == 1000
    await driver.close()
    t.assert_done()
    reached = driver.events_of(SafeStateReached)
    assert reached[-1].method == "M5 S0, status Idle FS:0,0"  # type: ignore[attr-defined]


async def test_no_banner_means_soft_reset_first() -> None:
    t = ScriptedTransport([(b"\x18", BANNER), *handshake(), *CLOSE_IDLE])
    driver = driver_for(t)
    await driver.connect()
    await driver.close()
    t.assert_done()


async def test_silent_machine_times_out_with_a_hint() -> None:
    t = ScriptedTransport([(b"\x18", b"")])
    with pytest.raises(MachineTimeoutError, match="no GRBL banner") as info:
        await driver_for(t).connect()
    assert info.value.hint and "baud" in info.value.hint
    assert not t.is_open


async def test_dialect_must_match_the_profile() -> None:
    t = ScriptedTransport([], greeting=b"\r\nGrblHAL 1.1f ['$' or '$HELP' for help]\r\n")
    with pytest.raises(MachineError, match="grblhal") as info:
        await driver_for(t).connect()
    assert info.value.code == "dialect"


async def test_rx_size_comes_from_opt_and_lines_are_counted() -> None:
    # [OPT:V,15,40]: 40 bytes of RX buffer. Each line below is 10 bytes with its LF, so four fit;
    # the fifth waits for the first ok, and so on (PROTOCOLS.md §1.2).
    lines = [f"G1X{i:02d}.5Y1" for i in range(1, 7)]
    data = [line.encode() + b"\n" for line in lines]
    assert all(len(d) == 10 for d in data)
    job_steps = [
        (data[0], b""),
        (data[1], b""),
        (data[2], b""),
        (data[3], b"ok\r\n"),  # one line acknowledged: 10 bytes free
        (data[4], b"ok\r\nok\r\n"),  # two more: 20 bytes free, one line waits to go
        (data[5], b"ok\r\nok\r\nok\r\n"),
        (b"?", IDLE),  # all acknowledged is not finished: wait for Idle
    ]
    t = ScriptedTransport(handshake(opt=b"[OPT:V,15,40]") + job_steps + CLOSE_IDLE * 2, greeting=BANNER)
    driver = driver_for(t)
    await driver.connect()
    result = await driver.run_gcode(lines)
    assert result.outcome is Outcome.DONE and result.done == 6 and result.safe_state_confirmed
    await driver.close()
    t.assert_done()


async def test_send_response_mode_sends_one_line_at_a_time() -> None:
    lines = ["G0X1", "G0X2"]
    job = [(b"G0X1\n", b"ok\r\n"), (b"G0X2\n", b"ok\r\n"), (b"?", IDLE)]
    t = ScriptedTransport(handshake() + job + CLOSE_IDLE * 2, greeting=BANNER)
    driver = driver_for(t, streaming="send-response")
    await driver.connect()
    assert (await driver.run_gcode(lines)).ok
    await driver.close()
    t.assert_done()


async def test_settings_writes_are_forced_send_response() -> None:
    # "$110=5000" is sent only when nothing is in flight, and nothing follows it until its ok.
    job = [
        (b"G0X1\n", b""),
        (b"G0X2\n", b"ok\r\n"),
        (b"", b"ok\r\n"),
        (b"$110=5000\n", b"ok\r\n"),
        (b"G0X3\n", b"ok\r\n"),
        (b"?", IDLE),
    ]
    t = ScriptedTransport(handshake() + job + CLOSE_IDLE * 2, greeting=BANNER)
    driver = driver_for(t)
    await driver.connect()
    assert (await driver.run_gcode(["G0X1", "G0X2", "$110=5000", "G0X3"])).ok
    await driver.close()
    t.assert_done()


async def test_device_error_ends_the_job_with_code_text_and_line_then_flushes() -> None:
    job = [
        (b"G0X1\n", b""),
        (b"G123\n", b""),
        (b"G0X3\n", b"ok\r\nerror:20\r\n"),
        # safe state: feed hold first (beam off at once), then flush the buffers with a reset
        (b"!", b""),
        (b"?", b"<Hold:0|MPos:0.000,0.000,0.000|FS:0,0>\r\n"),
        (b"\x18", BANNER),
        (b"?", IDLE),
        (b"M5S0\n", b"ok\r\n"),
        (b"?", IDLE),
    ]
    t = ScriptedTransport(handshake() + job + CLOSE_IDLE, greeting=BANNER)
    driver = driver_for(t)
    await driver.connect()
    result = await driver.run_gcode(["G0X1", "G123", "G0X3"])
    assert result.outcome is Outcome.ERROR
    assert (result.code, result.line) == ("error:20", 2)
    assert "Unsupported or invalid G-code command" in result.message
    assert result.safe_state_confirmed
    reached = driver.events_of(SafeStateReached)[-1]
    assert reached.method == "feed hold, Hold:0, soft reset, M5 S0, status Idle FS:0,0"  # type: ignore[attr-defined]
    await driver.close()
    t.assert_done()


async def test_moving_machine_gets_feed_hold_before_the_reset() -> None:
    run = b"<Run|MPos:1.000,0.000,0.000|FS:600,300>\r\n"
    job = [
        (b"G1X50F600S300\n", b"ok\r\n"),
        (b"BAD\n", b"error:1\r\n"),
        (b"!", b""),
        (b"?", run),  # the hold has not taken effect yet
        (b"?", b"<Hold:1|MPos:1.500,0.000,0.000|FS:300,0>\r\n"),
        (b"?", b"<Hold:0|MPos:1.600,0.000,0.000|FS:0,0>\r\n"),
        (b"\x18", BANNER),
        (b"?", IDLE),
        (b"M5S0\n", b"ok\r\n"),
        (b"?", IDLE),
    ]
    t = ScriptedTransport(handshake() + job + CLOSE_IDLE, greeting=BANNER)
    driver = driver_for(t, streaming="send-response")
    await driver.connect()
    result = await driver.run_gcode(["G1X50F600S300", "BAD"])
    assert (result.outcome, result.code, result.line) == (Outcome.ERROR, "error:1", 2)
    method = driver.events_of(SafeStateReached)[-1].method  # type: ignore[attr-defined]
    assert method == "feed hold, Hold:0, soft reset, M5 S0, status Idle FS:0,0"
    await driver.close()
    t.assert_done()


async def test_laser_mode_off_is_refused_before_anything_is_sent() -> None:
    settings = SETTINGS.replace(b"$32=1", b"$32=0")
    t = ScriptedTransport(handshake(settings=settings) + CLOSE_IDLE, greeting=BANNER)
    driver = driver_for(t)
    await driver.connect()
    with pytest.raises(SafetyError, match=r"\$32=0"):
        driver.run_gcode(["G0X1"])
    await driver.close()
    t.assert_done()


async def test_overrides_are_realtime_bytes() -> None:
    t = ScriptedTransport(
        [*handshake(), (bytes([0x90, 0x91, 0x91]), b""), (bytes([0x99, 0x9B, 0x9D]), b""), *CLOSE_IDLE],
        greeting=BANNER,
    )
    driver = driver_for(t)
    await driver.connect()
    await driver.set_override("feed", 120)
    await driver.set_override("power", 89)
    await driver.close()
    t.assert_done()


async def test_silent_machine_mid_job_is_a_lost_link_and_unconfirmed() -> None:
    # The machine stops talking (no EOF, no error): the watchdog declares the link lost, the safe
    # state tries hold, status and reset (twice: a reset can be lost), hears nothing, sends one
    # last unconfirmed reset and says so instead of guessing.
    steps = [*handshake(), (b"G0X1\n", b""), (b"!", b""), (b"?", b"")] + [(b"\x18", b"")] * 3
    t = ScriptedTransport(steps, greeting=BANNER)
    driver = driver_for(t, watchdog_s=0.3)
    driver.safe_state_timeout_s = 2.5  # type: ignore[misc]
    await driver.connect()
    result = await driver.run_gcode(["G0X1"])
    assert result.outcome is Outcome.CONNECTION_LOST and "no bytes from the machine" in result.message
    assert not result.safe_state_confirmed
    unconfirmed = driver.events_of(SafeStateUnconfirmed)
    assert unconfirmed and "soft reset (^X) sent without confirmation" in unconfirmed[-1].error  # type: ignore[attr-defined]
    t.assert_done()
    await driver.close()  # tries once more, unconfirmed again; the link is closed either way
    assert not t.is_open


async def test_grblhal_with_the_classic_banner_is_recognised_by_dollar_i() -> None:
    # grblHAL at COMPATIBILITY_LEVEL >= 1 prints "Grbl 1.1f [...]"; [FIRMWARE:grblHAL] settles it.
    opt = b"[OPT:VNMSL,35,1024,3,0]\r\n[FIRMWARE:grblHAL]"
    t = ScriptedTransport(handshake(opt=opt) + CLOSE_IDLE, greeting=b"\r\nGrbl 1.1f ['$' for help]\r\n")
    driver = driver_for(t, "grblhal")
    info = await driver.connect()
    assert info.details["rx_buffer_bytes"] == 1024 and info.details["planner_blocks"] == 35
    await driver.close()
    t.assert_done()


async def test_classic_banner_without_grblhal_firmware_is_refused_for_a_grblhal_profile() -> None:
    t = ScriptedTransport(handshake(), greeting=b"\r\nGrbl 1.1f ['$' for help]\r\n")
    with pytest.raises(MachineError, match="names no grblHAL") as info:
        await driver_for(t, "grblhal").connect()
    assert info.value.code == "dialect"


async def test_unknown_codes_get_a_text_not_a_crash() -> None:
    # grblHAL's error codes go to ~92 (PROTOCOLS.md §2.1); an unknown one is named, not fatal.
    job = [
        (b"G0X1\n", b"error:79\r\n"),
        (b"!", b""),
        (b"?", b"<Hold:0|MPos:0.000,0.000,0.000|FS:0,0>\r\n"),
        (b"\x18", BANNER),
        (b"?", IDLE),
        (b"M5S0\n", b"ok\r\n"),
        (b"?", IDLE),
    ]
    t = ScriptedTransport(handshake() + job + CLOSE_IDLE, greeting=BANNER)
    driver = driver_for(t)
    await driver.connect()
    result = await driver.run_gcode(["G0X1"])
    assert (result.code, result.line) == ("error:79", 1) and "unknown error 79" in result.message
    await driver.close()
    t.assert_done()
