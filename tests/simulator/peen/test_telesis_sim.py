"""The simulated Telesis marker's own reading of the frame, checked with hand-made bytes (no driver)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markctl.profiles import FirmwareProfile, load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.faults import FaultSpecError
from markctl.simulator.telesis import TelesisSimulator

ACK, NAK = b"\x06", b"\x15"
GO = b"\x01G\x02\x03F\r"  # BCC = 47 ^ 02 ^ 03 = 46 ('F'), xor over TYPE..ETX, binary
STATUS = b"\x01I\x02\x03H\r"


def sim_with(**protocol: object) -> tuple[TelesisSimulator, list[bytes]]:
    data = load_profile("telesis-tmp").model_dump()
    data["protocol"].update(protocol)
    sim = TelesisSimulator(FirmwareProfile.model_validate(data), clock=make_clock("instant"))
    out: list[bytes] = []
    sim.attach(out.append, lambda reason: out.append(b"HANGUP:" + reason.encode()))
    return sim, out


async def test_ack_nak_and_noise_before_soh() -> None:
    sim, out = sim_with()
    sim.receive(b"noise\x01P\x02AB\x03R\r")  # load pattern "AB"; R = 50^02^41^42^03
    sim.receive(b"\x01P\x02AB\x03S\r")  # wrong BCC
    sim.receive(b"\x01Z\x02\x03[\r")  # unknown type (5A^02^03 = 5B '[')
    assert out == [ACK, NAK, NAK]
    assert sim.marker.pattern_name == "AB"


async def test_status_reply_is_a_frame_with_outputs_inputs_fault_and_count() -> None:
    sim, out = sim_with()
    sim.receive(STATUS)
    # ready = bit 1 -> 02; inputs 00; fault 00; 0 characters. BCC over "I" STX data ETX.
    data = b"02;00;00;0000"
    bcc = 0
    for byte in b"I\x02" + data + b"\x03":
        bcc ^= byte
    assert out == [b"\x01I\x02" + data + b"\x03" + bytes([bcc]) + b"\r"]


async def test_hex_sum_bcc_over_soh_to_etx() -> None:
    sim, out = sim_with(bcc="sum", bcc_encoding="hex", bcc_span="soh-to-etx")
    # I: 01 + 49 + 02 + 03 = 4F
    sim.receive(b"\x01I\x02\x034F\r")
    sim.receive(b"\x01I\x02\x034f\r")  # lower-case hex is the same value
    sim.receive(b"\x01I\x02\x034E\r")  # wrong
    assert [o[:2] for o in out] == [b"\x01I", b"\x01I", NAK]
    reply = out[0]
    total = sum(reply[: reply.index(b"\x03") + 1]) & 0xFF
    assert reply.endswith(b"%02X\r" % total)


async def test_echo_framing_echoes_accepted_frames() -> None:
    sim, out = sim_with(reply_framing="echo")
    reset = b"\x01O\x02\x03N\r"
    sim.receive(reset)
    assert out == [reset]


async def test_a_go_runs_a_cycle_and_the_count_advances() -> None:
    sim, out = sim_with()
    await sim.start()
    sim.receive(b"\x01P\x02AB\x03R\r")
    sim.receive(b"\x01V01\x02X\x03\x0e\r")  # 56^30^31^02^58^03 = 0E
    sim.receive(GO)
    assert out == [ACK, ACK, ACK] and sim.marker.busy
    while sim.marker.busy:
        await asyncio.sleep(0)
    sim.receive(STATUS)
    assert out[-1][3:16] == b"03;00;00;0001"  # ready + done, one character marked
    await sim.stop()


async def test_drop_at_a_frame_hangs_up() -> None:
    data = load_profile("telesis-tmp")
    sim = TelesisSimulator(data, clock=make_clock("instant"), faults="drop@msg:2")
    out: list[bytes] = []
    sim.attach(out.append, lambda reason: out.append(reason.encode()))
    sim.receive(STATUS)
    sim.receive(STATUS)
    assert len(out) == 2 and out[1].startswith(b"injected drop at frame 2")
    sim.receive(STATUS)  # detached: nothing more is sent
    assert len(out) == 2


def test_unknown_fault_kinds_are_refused() -> None:
    with pytest.raises(FaultSpecError, match="unknown kind 'garble'"):
        TelesisSimulator(load_profile("telesis-tmp"), clock=make_clock("instant"), faults="garble@byte:3")
    with pytest.raises(ValueError, match="telesis protocol"):
        TelesisSimulator(load_profile("peen-modbus"), clock=make_clock("instant"))


VALID = [b"\x01P\x02AB\x03R\r", b"\x01V01\x02X\x03\x0e\r", GO, STATUS, b"\x01O\x02\x03N\r"]


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(VALID)), max_size=16))
def test_arbitrary_bytes_never_break_the_simulated_marker(chunks: list[bytes]) -> None:
    # Valid frames mixed with garbage, in any order: the marker answers every frame it can delimit
    # with one control byte or one frame, and never raises.
    loop = asyncio.new_event_loop()
    try:

        async def feed() -> None:
            sim, out = sim_with()
            await sim.start()
            for chunk in chunks:
                sim.receive(chunk)
            assert all(o in (ACK, NAK) or (o[:1] == b"\x01" and o.endswith(b"\r")) for o in out)
            if any(c == STATUS for c in chunks) and all(len(c) > 0 and c in VALID for c in chunks):
                assert any(o.startswith(b"\x01I") for o in out)
            await sim.stop()

        loop.run_until_complete(feed())
    finally:
        loop.close()
