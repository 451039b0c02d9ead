"""The GRBL simulator against the firmware facts of PROTOCOLS.md §1, §2 and §9.4, byte for byte.

A raw host (no driver) sends bytes and reads lines, so these tests pin the simulator itself:
if the driver and the simulator shared a misunderstanding, these would still catch it.
"""

from __future__ import annotations

import math
import re

import pytest

from markctl.profiles import load_profile
from markctl.simulator.base import ByteDevice
from markctl.simulator.clock import make_clock
from markctl.simulator.faults import FaultSpecError
from markctl.simulator.grbl import GrblSimulator

BANNERS = {
    "grbl-1.1": b"\r\nGrbl 1.1h ['$' for help]\r\n",
    "grblhal": b"\r\nGrblHAL 1.1f ['$' or '$HELP' for help]\r\n",
    "fluidnc": b"\r\nGrbl 3.9 [FluidNC v3.9.5 (esp32-wifi) '$' for help]\r\n",
}


@pytest.mark.parametrize("profile_id", sorted(BANNERS))
async def test_banner_bytes_exact_at_power_on_and_after_reset(make_host, profile_id: str) -> None:
    host = await make_host(profile_id)
    assert bytes(host.rx) == BANNERS[profile_id]
    host.send(b"\x18")
    await host.until(lambda: bytes(host.rx).count(BANNERS[profile_id]) == 2)
    assert bytes(host.rx) == BANNERS[profile_id] * 2


async def test_idle_status_report_fields(make_host) -> None:
    host = await make_host()
    report = await host.status()
    # $10=1: MPos; first report carries WCO (counter starts at 0), Ov comes one report later.
    assert report == "<Idle|MPos:0.000,0.000,0.000|FS:0,0|WCO:0.000,0.000,0.000>"
    second = await host.status()
    assert second == "<Idle|MPos:0.000,0.000,0.000|FS:0,0|Ov:100,100,100>"
    for _ in range(8):
        third = await host.status()
        assert "WCO" not in third and "Ov" not in third
    assert "WCO:" in await host.status()  # every 10 reports when idle


async def test_wpos_and_buffer_state_per_dollar_10(make_host) -> None:
    host = await make_host()
    assert await host.command("$10=2") == ["ok"]
    report = await host.status()
    assert report.startswith("<Idle|WPos:0.000,0.000,0.000|Bf:15,128|FS:0,0")


@pytest.mark.parametrize(
    ("profile_id", "expected"),
    [
        ("grbl-1.1", ["[VER:1.1h.20190830:]", "[OPT:V,15,128]", "ok"]),
        (
            "grblhal",
            [
                "[VER:1.1f.20260817:]",
                "[OPT:VNMSL,35,1024,3,0]",
                "[NEWOPT:ENUMS,RT+,SED]",
                "[FIRMWARE:grblHAL]",
                "ok",
            ],
        ),
        ("fluidnc", ["[VER:3.9 FluidNC v3.9.5:]", "[OPT:PHS]", "ok"]),
    ],
)
async def test_build_info_per_dialect(make_host, profile_id: str, expected: list[str]) -> None:
    host = await make_host(profile_id)
    assert await host.command("$I") == expected


async def test_settings_dump_and_parser_state(make_host) -> None:
    host = await make_host()
    lines = await host.command("$$")
    assert "$30=1000" in lines and "$32=1" in lines and lines[-1] == "ok"
    assert await host.command("$G") == ["[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]", "ok"]
    assert (await host.command("$"))[0].startswith("[HLP:$$ $# $G $I")


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("G1 X10", 22),  # feed rate undefined
        ("X1 X2", 25),  # repeated word
        ("G0 G1 X1", 24),  # two axis commands: checked before the modal group (row04 transcript)
        ("G90 G91", 21),  # modal group violation
        ("G1 G92 X1 F100", 24),  # two axis commands
        ("G2 X10 Y0 R0.1 F100", 33),  # arc target out of reach
        ("G2 X10 F100", 35),  # arc without I/J/R
        ("G4", 28),  # dwell without P
        ("G92", 26),  # no axis words
        ("G1 X1 F100 P5", 36),  # unused value word
        ("G123", 20),  # unsupported command
        ("M3.5", 23),  # integer required
        ("G1 X1.2.3", 1),  # "1.2" is a number, then ".3" is not a letter (x_gcode_errors transcript)
        ("1X", 1),  # letter expected
        ("G1 F-5 X1", 4),  # negative value
        ("T300", 38),  # tool number
        ("$Z", 2),  # unknown $ letter: read as a setting number, which fails (row02 transcript)
        ("$H", 5),  # homing disabled ($22=0)
    ],
)
async def test_error_codes(make_host, line: str, code: int) -> None:
    host = await make_host()
    assert await host.command(line) == [f"error:{code}"]


async def test_line_longer_than_the_line_buffer_gives_error_11(make_host) -> None:
    host = await make_host()
    assert await host.command("G0X1" + "0" * 80) == ["error:11"]
    assert await host.command("G0X1") == ["ok"]  # the next line is unaffected


async def test_long_lines_are_fine_on_a_256_char_dialect(make_host) -> None:
    host = await make_host("fluidnc")
    assert await host.command("G0X1" + " " * 2 + "Y" + "0" * 100 + "1") == ["ok"]


async def test_empty_line_gets_ok_and_comments_are_stripped(make_host) -> None:
    host = await make_host()
    assert await host.command("") == ["ok"]
    assert await host.command("(just a comment) ; and more") == ["ok"]
    assert await host.command("g0 x1 (lower case works) y2") == ["ok"]
    await host.idle()
    assert host.sim.position[:2] == pytest.approx((1.0, 2.0))


async def test_alarm_lock_unlock_and_soft_reset_while_moving(make_host) -> None:
    # A scaled clock keeps the 9 s move going while the host looks (the instant clock would
    # finish it before the '?' arrives); nothing here depends on how long it takes.
    host = await make_host(clock=make_clock("scaled:20"))
    host.send("G1X90F600\n")
    await host.responses(1)
    assert (await host.status()).startswith("<Run")
    host.send(b"\x18")  # reset while moving: position lost -> ALARM:3, stays locked
    await host.until(lambda: "[MSG:'$H'|'$X' to unlock]" in host.lines)
    assert host.new_lines() == ["ALARM:3", "Grbl 1.1h ['$' for help]", "[MSG:'$H'|'$X' to unlock]"]
    assert (await host.status()).startswith("<Alarm")
    assert await host.command("G0X0") == ["error:9"]
    assert await host.command("$X") == ["[MSG:Caution: Unlocked]", "ok"]
    assert (await host.status()).startswith("<Idle")
    assert not host.sim.beam_on


async def test_feed_hold_decelerates_then_holds_and_resumes(make_host) -> None:
    host = await make_host(clock=make_clock("scaled:20"))
    host.send("G1X80F3000S500M4\n")
    await host.responses(1)
    await host.until(lambda: host.sim.position[0] > 5)
    host.send(b"!")
    states = set()
    for _ in range(200):
        report = await host.status()
        states.add(report.split("|")[0])
        if report.startswith("<Hold:0"):
            break
    assert "<Hold:0" in states
    assert not host.sim.beam_on  # laser off during hold
    held_at = host.sim.position[0]
    assert 5 < held_at < 80
    host.send(b"~")
    await host.idle()
    assert host.sim.position[0] == pytest.approx(80.0)


async def test_realtime_bytes_are_picked_out_mid_line(make_host) -> None:
    host = await make_host()
    host.send(b"G0X")
    host.send(b"?")
    host.send(b"\x91\x9a5Y6\n")
    assert await host.responses(1) == ["ok"]
    assert any(line.startswith("<Idle") for line in host.lines)  # the '?' inside the line
    await host.idle()
    assert host.sim.position[:2] == pytest.approx((5.0, 6.0))
    assert host.sim.feed_ovr == 110 and host.sim.spindle_ovr == 110


async def test_overrides_clamp_to_10_and_200_percent(make_host) -> None:
    host = await make_host()
    host.send(bytes([0x91] * 15 + [0x9B] * 15))
    await host.status()
    assert (host.sim.feed_ovr, host.sim.spindle_ovr) == (200, 10)
    assert "Ov:200,100,10" in await host.status()  # an override change shows on the next report


async def test_jog_and_jog_cancel(make_host) -> None:
    host = await make_host(clock=make_clock("scaled:20"))
    assert await host.command("$J=G91X50F600") == ["ok"]
    assert (await host.status()).startswith("<Jog")
    assert await host.command("G0X0") == ["error:9"]  # G-code is locked out while jogging
    host.send(b"\x85")
    report = await host.idle()
    assert 0 < host.sim.position[0] < 50, report
    assert await host.command("$J=G91X5") == ["error:22"]
    assert await host.command("$J=M3 F100") == ["error:16"]  # F is checked first (row15 transcript)


async def test_check_mode_parses_without_moving_and_resets_on_exit(make_host) -> None:
    host = await make_host()
    assert await host.command("$C") == ["[MSG:Enabled]", "ok"]
    assert (await host.status()).startswith("<Check")
    assert await host.command("G1X50F600S800M4") == ["ok"]
    assert await host.command("G1X1") == ["ok"]
    assert await host.command("X1 X2") == ["error:25"]
    assert host.sim.position == (0.0, 0.0, 0.0) and not host.sim.burn_log
    host.send("$C\n")
    await host.until(lambda: "Grbl 1.1h ['$' for help]" in host.new_lines())
    assert (await host.status()).startswith("<Idle")


async def test_sleep_needs_a_reset(make_host) -> None:
    host = await make_host()
    assert await host.command("$SLP") == ["ok"]  # the ok first, then the sleep (row06 transcript)
    await host.until(lambda: "[MSG:Sleeping]" in host.lines)
    assert (await host.status()).startswith("<Sleep")
    host.send("G0X1\n")  # ignored while asleep
    host.send(b"\x18")
    await host.until(lambda: "[MSG:'$H'|'$X' to unlock]" in host.lines)
    assert (await host.status()).startswith("<Alarm")


async def test_homing_when_enabled(make_host) -> None:
    host = await make_host()
    assert await host.command("G0X20Y5") == ["ok"]
    assert await host.command("$22=1") == ["ok"]
    assert await host.command("$H") == ["ok"]
    assert (await host.status()).startswith("<Idle|MPos:0.000,0.000,0.000")


async def test_m4_power_follows_speed_in_status_reports(make_host) -> None:
    # PROTOCOLS.md §1.7: with $32=1, G1 X5 F600 S500 M4 reported FS:30,25 in grbl-sim during
    # acceleration, i.e. spindle = S * speed / programmed speed at every instant.
    host = await make_host(clock=make_clock("scaled:20"))
    host.send("G1X20F600S500M4\n")
    await host.responses(1)
    seen = []
    while True:
        report = await host.status()
        if report.startswith("<Idle"):
            break
        match = re.search(r"FS:(\d+),(\d+)", report)
        assert match
        feed, spindle = int(match[1]), int(match[2])
        if report.startswith("<Run") and feed > 0:
            seen.append((feed, spindle))
            assert spindle == pytest.approx(500 * feed / 600, abs=1)
    assert seen
    assert re.search(r"FS:0,0", await host.status())  # M4: off when standing still


async def test_g0_never_fires_and_g1_burns_where_programmed(make_host) -> None:
    host = await make_host()
    for line in ("M4S1000", "G0X10Y10", "G1X30Y10F1200", "G0X30Y40", "G1X30Y60", "M5S0"):
        host.send(line + "\n")
    await host.responses(6)
    await host.idle()
    wp = host.sim.workpiece
    bbox = wp.marked_bbox_mm()
    assert bbox is not None
    spot = host.sim.spot_mm
    # Two marks: y=10 from x=10..30 and x=30 from y=40..60; nothing on the G0 paths.
    assert bbox[0] == pytest.approx(10 - spot / 2, abs=0.15) and bbox[2] == pytest.approx(
        30 + spot / 2, abs=0.15
    )
    col, row = (round(v) for v in wp.to_px(30, 25))  # on the G0 from (30,10) to (30,40)
    assert not wp.marked()[row - 2 : row + 3, col - 2 : col + 3].any()
    col, row = (round(v) for v in wp.to_px(5, 5))  # on the first G0 from the origin
    assert not wp.marked()[row - 2 : row + 3, col - 2 : col + 3].any()
    assert {b.line for b in host.sim.burn_log} == {3, 5}


async def test_laser_mode_off_fires_on_g0_too(make_host) -> None:
    host = await make_host()
    assert await host.command("$32=0") == ["ok"]
    for line in ("M3S1000", "G0X20Y20", "M5"):
        host.send(line + "\n")
    await host.responses(3)
    await host.idle()
    assert host.sim.burn_log, "a spindle output (laser mode off) fires during G0"


async def test_m3_dwell_burns_a_dot_m4_dwell_does_not(make_host) -> None:
    # In G0 mode an M3 is synced *off* (gcode.c laser-disable, transcript row07); G1 mode fires it.
    host = await make_host()
    for line in ("G0X10Y10", "M4S1000", "G4P0.5", "M3S1000", "G4P0.5", "G1", "G4P0.5", "M5"):
        host.send(line + "\n")
    await host.responses(8)
    assert len(host.sim.burn_log) == 1
    dot = host.sim.burn_log[0]
    assert (dot.x0, dot.y0, dot.x1, dot.y1) == (10.0, 10.0, 10.0, 10.0)


async def test_planner_delays_ok_until_a_block_is_free(make_host) -> None:
    host = await make_host()
    host.send("G1F600\n")
    await host.responses(1)
    for i in range(20):
        host.send(f"X{i + 1}Y{(i % 2) * 2}\n")
    # 15 blocks fit; the 16th line's ok waits for the first block to finish.
    await host.responses(15)
    assert host.sim.planner_depth == 15
    await host.responses(5)
    await host.idle()


async def test_naive_streamer_overflows_the_rx_buffer_and_the_simulator_reports_it(make_host) -> None:
    host = await make_host()
    lines = ["G1F3000S200M4"] + [f"X{10 + (i % 50) * 0.5:.3f}Y{10 + (i // 50) * 0.5:.3f}" for i in range(300)]
    host.send("".join(line + "\n" for line in lines))  # no counting at all
    # Every line would get one response if nothing were lost; wait until nothing more comes.
    await host.until(lambda: host.sim.rx_overflow_bytes > 0)
    await host.idle()
    responses = [line for line in host.lines if line == "ok" or line.startswith("error:")]
    assert host.sim.rx_overflow_bytes > 0
    assert host.sim.corrupted_lines
    assert len(responses) < len(lines), "merged lines lost their own responses"


async def test_settings_write_drops_bytes_streamed_behind_it_on_avr_grbl(make_host) -> None:
    host = await make_host()
    host.send("$110=5000\nG0X5\nG0X6\n")  # streamed behind an EEPROM write
    await host.until(lambda: host.sim.rx_eeprom_lost_bytes > 0)
    assert host.sim.rx_eeprom_lost_bytes == len("G0X5\nG0X6\n")
    assert host.new_lines() == ["ok"]


async def test_line_rate_is_modelled_on_the_clock(make_host) -> None:
    host = await make_host(baud=9600)
    t0 = host.sim.clock.now()
    assert await host.command("G4P0") == ["ok"]
    # 5 bytes in, 4 bytes out at 10 bits per byte: sim time, not wall time.
    assert host.sim.clock.now() - t0 == pytest.approx(9 * 10 / 9600, rel=0.05)


async def test_disconnect_fault_hangs_up_at_the_line(make_host) -> None:
    host = await make_host(faults="disconnect@line:3")
    host.send("G0X1\nG0X2\nG0X3\nG0X4\n")
    await host.until(lambda: host.hung_up is not None)
    assert "line 3" in (host.hung_up or "")
    assert host.sim.lines_received == 3  # line 4 never reached the machine
    await host.until(lambda: not host.sim.planner_depth and host.sim.state == "Idle")
    assert host.sim.position[0] == 2.0  # it kept running what it had: lines 1 and 2


async def test_silence_fault_swallows_one_response(make_host) -> None:
    host = await make_host(faults="silence@line:2")
    host.send("G0X1\nG0X2\nG0X3\n")
    await host.responses(2)
    await host.idle()
    assert host.lines.count("ok") == 2 and host.sim.lines_received == 3


async def test_garble_fault_flips_a_sent_byte(make_host) -> None:
    banner = len(BANNERS["grbl-1.1"])
    host = await make_host(faults=f"garble@byte:{banner + 1}=0x20")
    host.send("G4P0\n")
    await host.until(lambda: len(host.rx) >= banner + 4)
    assert bytes(host.rx[banner : banner + 4]) == b"Ok\r\n"


async def test_alarm_fault_is_critical_until_reset(make_host) -> None:
    host = await make_host(faults="alarm@t:0.2=1")
    host.send("G1X80F600S500M4\n")
    await host.until(lambda: "[MSG:Reset to continue]" in host.lines)
    assert "ALARM:1" in host.lines and not host.sim.beam_on
    stop_x = host.sim.position[0]
    assert 0 < stop_x < 80
    assert not host.sim.burned_after(host.sim.fault_times["alarm"])
    host.send(b"?")  # ignored after a hard-limit alarm (PROTOCOLS.md §1.3)
    host.send("G4P0\n")
    await host.until(lambda: host.sim.clock.now() > 1.0 or True)
    assert not any(line.startswith("<") for line in host.new_lines())
    host.send(b"\x18")
    await host.until(lambda: "[MSG:'$H'|'$X' to unlock]" in host.lines)
    assert (await host.status()).startswith("<Alarm")


async def test_door_fault_stops_the_beam_and_reports_the_pin(make_host) -> None:
    host = await make_host(faults="door@t:0.2")
    host.send("G1X80F600S500M4\n")
    await host.responses(1)
    for _ in range(200):
        report = await host.status()
        if report.startswith("<Door:1"):
            break
    assert report.startswith("<Door:1") and "Pn:D" in report
    assert not host.sim.beam_on
    assert not host.sim.burned_after(host.sim.fault_times["door"])


def test_unknown_fault_kinds_are_refused() -> None:
    with pytest.raises(FaultSpecError, match="unknown kind"):
        GrblSimulator(load_profile("grbl-1.1"), clock=make_clock("instant"), faults="estop@t:1")


def test_non_grbl_profiles_are_refused() -> None:
    with pytest.raises(ValueError, match="not a GRBL-family profile"):
        GrblSimulator(load_profile("telesis-tmp"), clock=make_clock("instant"))


async def test_host_latency_is_added_each_way(make_host) -> None:
    host = await make_host(baud=0, host_latency_s=0.004)
    t0 = host.sim.clock.now()
    assert await host.command("G4P0") == ["ok"]
    assert host.sim.clock.now() - t0 == pytest.approx(0.008)


async def test_is_a_byte_device_and_coalesces_duplicate_status_requests(make_host) -> None:
    host = await make_host()
    assert isinstance(host.sim, ByteDevice)
    host.send(b"???")  # three requests before the first report goes out: one report (§1.3)
    await host.responses(0)
    await host.command("G4P0")  # a round trip later every report that was coming has come
    assert sum(1 for line in host.lines if line.startswith("<")) == 1
    assert host.sim.status_reports == 1


async def test_work_offsets_g10_g92_and_wpos(make_host) -> None:
    host = await make_host()
    assert await host.command("G0X30Y20") == ["ok"]
    await host.idle()
    assert await host.command("G10L20P1X10Y5") == ["ok"]  # here is X10 Y5 in G54
    lines = await host.command("$#")
    assert lines[0] == "[G54:20.000,15.000,0.000]" and lines[-1] == "ok"
    assert await host.command("G92X0Y0") == ["ok"]  # and now X0 Y0, on top of G54
    assert "[G92:10.000,5.000,0.000]" in await host.command("$#")
    assert await host.command("$10=0") == ["ok"]
    report = await host.status()
    assert report.startswith("<Idle|WPos:0.000,0.000,0.000|")
    assert "WCO:30.000,20.000,0.000" in report  # an offset change shows WCO at once
    assert await host.command("G0X1Y1") == ["ok"]
    await host.idle()
    assert host.sim.position[:2] == pytest.approx((31.0, 21.0))
    assert await host.command("G53G0X0Y0") == ["ok"]  # machine coordinates for one block
    await host.idle()
    assert host.sim.position[:2] == pytest.approx((0.0, 0.0))


async def test_arc_is_cut_into_chords_on_the_circle(make_host) -> None:
    host = await make_host()
    for line in ("G0X20Y20", "M4S800", "G2X30Y20I5J0F1200", "M5"):
        host.send(line + "\n")
    await host.responses(4)
    pieces = host.sim.burn_log
    assert len(pieces) > 10
    for b in pieces:  # every chord end lies on the circle around (25, 20), radius 5
        assert math.hypot(b.x1 - 25, b.y1 - 20) == pytest.approx(5.0, abs=1e-6)
    assert max(b.y1 for b in pieces) == pytest.approx(25.0, abs=0.01)  # clockwise from the left: over the top
    assert (pieces[-1].x1, pieces[-1].y1) == pytest.approx((30.0, 20.0))


async def test_inches_and_program_end(make_host) -> None:
    host = await make_host()
    assert await host.command("G20G0X1Y0.5") == ["ok"]
    await host.idle()
    assert host.sim.position[:2] == pytest.approx((25.4, 12.7))
    assert await host.command("M2") == ["[MSG:Pgm End]", "ok"]
    assert await host.command("$G") == ["[GC:G1 G54 G17 G20 G90 G94 M5 M9 T0 F0 S0]", "ok"]
