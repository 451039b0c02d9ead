"""Issue 12, the driver on real boards: machine space with soft limits, stalls, the handshake.

Through the simulator (which answers like Grbl 1.1h, transcript row 17: with ``$20=1`` machine
space is ``-$13x..0`` on every axis) and through ScriptedTransport for the exact bytes.
"""

from __future__ import annotations

import pytest

from markctl.drivers.base import Outcome, SafeStateReached
from markctl.errors import MachineTimeoutError
from markctl.testing import ScriptedTransport

from .conftest import long_program  # noqa: TID252
from .test_driver_scripted import BANNER, CLOSE_IDLE, IDLE, driver_for  # noqa: TID252

SETTINGS_AS_GRBL_PRINTS = (
    b"$0=10\r\n$11=0.010\r\n$20=0\r\n$22=0\r\n$27=1.000\r\n$30=1000\r\n$32=1\r\n"
    b"$100=80.000\r\n$110=6000.000\r\n$130=400.000\r\n$131=400.000\r\n$132=200.000\r\nok\r\n"
)
VERSION = b"[VER:1.1h.20190830:]\r\n[OPT:V,15,128]\r\nok\r\n"


async def test_soft_limits_refuse_a_job_in_positive_machine_space(rig) -> None:
    # Homed, soft limits on, no work offset: work X5..53 is machine X+5..+53, which Grbl would
    # stop with ALARM:2 at the first move. The driver refuses before a byte goes out.
    r = await rig("grbl-1.1")
    await r.driver.set_setting(22, 1)
    await r.driver.set_setting(20, 1)
    await r.driver.home()
    await r.driver.query_status()
    before = r.sim.lines_received
    with pytest.raises(ValueError) as info:
        r.driver.run(long_program(120))
    message = str(info.value)
    assert "\n" not in message
    assert "machine X+53.000, 53.000 mm past the limit at X0" in message
    assert "machine space is X-400..0" in message and "G10 L2 P1 X-53" in message
    assert r.sim.lines_received == before and not r.sim.burn_log


async def test_soft_limits_refuse_the_far_side_too(rig) -> None:
    r = await rig("grbl-1.1+soft-limits")
    await r.driver.command("G10L2P1X-420")  # work X5 is now machine X-415, past -400
    await r.driver.query_status()
    with pytest.raises(ValueError, match=r"machine X-415\.000, 15\.000 mm past the limit at X-400"):
        r.driver.run(long_program(120))


async def test_soft_limits_with_a_work_offset_mark_where_programmed(rig) -> None:
    r = await rig("grbl-1.1+soft-limits")
    program = long_program(120)
    result = await r.driver.run(program)
    assert result.ok and not r.sim.alarms
    xs = program.strokes[0].points[:, 0]
    burned = [b.x1 for b in r.sim.burn_log]
    assert min(burned) > xs[0] - 0.01 and max(burned) == pytest.approx(xs[-1], abs=1e-3)


async def test_a_stalled_machine_ends_in_a_safe_state_with_the_reason(rig) -> None:
    # The stall fault: Grbl keeps reporting Run where the head stopped and takes no more lines.
    # The silence watchdog (10 s) never fires: status reports keep coming.
    r = await rig("grbl-1.1", faults="stall@t:0.5", stall_s=0.4)
    result = await r.driver.run(long_program(150))
    assert result.outcome is Outcome.TIMEOUT and result.code == "stall"
    assert "stalled: the machine reports Run but has neither moved nor acknowledged" in result.message
    assert result.safe_state_confirmed and not r.sim.beam_on
    assert not r.sim.burned_after(r.sim.fault_times["stall"])
    assert r.driver.events_of(SafeStateReached)


async def test_settings_are_parsed_as_grbl_prints_them_and_all_cached() -> None:
    t = ScriptedTransport(
        [(b"?", IDLE), (b"$I\n", VERSION), (b"$$\n", SETTINGS_AS_GRBL_PRINTS), *CLOSE_IDLE], greeting=BANNER
    )
    driver = driver_for(t)
    await driver.connect()
    assert driver.settings[100] == 80.0 and driver.settings[11] == pytest.approx(0.01)
    assert driver.settings[27] == 1.0 and driver.settings[132] == 200.0  # not in the profile: kept
    await driver.close()
    t.assert_done()


async def test_handshake_keeps_a_lazy_bridge_alive_with_status_polls() -> None:
    # A bridge that hands the $I answer over only when more bytes follow: the driver's '?'
    # keep-alive pushes it out; the status report that comes with it is harmless.
    t = ScriptedTransport(
        [
            (b"?", IDLE),
            (b"$I\n", b""),
            (b"?", VERSION + IDLE),
            (b"$$\n", SETTINGS_AS_GRBL_PRINTS),
            *CLOSE_IDLE,
        ],
        greeting=BANNER,
    )
    driver = driver_for(t, keepalive_s=0.05)
    info = await driver.connect()
    assert info.version == "1.1h.20190830"
    await driver.close()
    t.assert_done()


async def test_handshake_timeout_names_the_step() -> None:
    t = ScriptedTransport([(b"?", IDLE), (b"$I\n", b"")], greeting=BANNER)
    driver = driver_for(t, keepalive_s=0.05, response_timeout_s=0.3)
    with pytest.raises(MachineTimeoutError) as info:
        await driver.connect()
    assert "no answer to handshake step 'build info' ('$I') within 0.3 s" in str(info.value)
    assert t.written.startswith(b"?$I\n?")  # it kept the link alive meanwhile


async def test_a_lost_reset_after_a_soft_limit_alarm_is_sent_again() -> None:
    # Grbl clears the reset flag as it enters its wait after ALARM:2; a ^X that lands before
    # [MSG:Reset to continue] does nothing (seen on grbl-sim). The safe state sends a second one.
    alarm = b"ALARM:2\r\n"
    job = [
        (b"G0X5\n", b"ok\r\n"),
        (b"?", alarm),  # the wait for Idle; after a limit alarm Grbl answers no '?'
        (b"!", b""),
        (b"?", b""),
        (b"\x18", b"[MSG:Reset to continue]\r\n"),  # lost: arrived before the wait began
        (b"\x18", b"ok\r\n" + BANNER + b"[MSG:'$H'|'$X' to unlock]\r\n"),
        (b"?", b"<Alarm|MPos:-1.000,0.000,0.000|FS:0,0>\r\n"),
        (b"?", b"<Alarm|MPos:-1.000,0.000,0.000|FS:0,0>\r\n"),  # close
    ]
    t = ScriptedTransport(
        [(b"?", IDLE), (b"$I\n", VERSION), (b"$$\n", SETTINGS_AS_GRBL_PRINTS), *job], greeting=BANNER
    )
    driver = driver_for(t, reset_timeout_s=0.3)
    await driver.connect()
    result = await driver.run_gcode(["G0X5"])
    assert result.outcome is Outcome.ALARM and result.code == "ALARM:2"
    assert result.safe_state_confirmed
    await driver.close()  # in Alarm the beam is off: one status report confirms it
    t.assert_done()
