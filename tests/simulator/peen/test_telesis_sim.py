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


# --- framing strictness: resync, over-long frames, field limits, one host at a time -----------


def framed(sim: TelesisSimulator, type_: str, data: bytes = b"", number: int | None = None) -> bytes:
    return sim.frame(type_, data, number)


async def test_resync_on_a_new_soh_after_a_truncated_frame() -> None:
    sim, out = sim_with()
    truncated = framed(sim, "P", b"AB")[:4]  # SOH P STX A, then the host starts over
    sim.receive(truncated + framed(sim, "P", b"CD"))
    assert out == [NAK, ACK] and sim.marker.pattern_name == "CD"


async def test_a_frame_without_cr_is_naked_and_the_next_one_still_read() -> None:
    sim, out = sim_with()
    no_cr = framed(sim, "P", b"AB")[:-1]
    sim.receive(no_cr + framed(sim, "P", b"CD"))
    assert out == [NAK, ACK] and sim.marker.pattern_name == "CD"


@pytest.mark.parametrize("chunk", [1, 700, 20_000])
async def test_a_10_kb_frame_is_naked_once_and_the_parser_recovers(chunk: int) -> None:
    sim, out = sim_with()
    huge = framed(sim, "V", b"A" * 10_000, 1)
    stream = huge + framed(sim, "P", b"AB")
    for i in range(0, len(stream), chunk):
        sim.receive(stream[i : i + chunk])
    assert out == [NAK, ACK] and sim.marker.pattern_name == "AB"


@pytest.mark.parametrize(("length", "reply"), [(64, ACK), (65, NAK), (72, NAK), (290, NAK)])
async def test_fields_longer_than_the_profiles_limit_are_naked(length: int, reply: bytes) -> None:
    sim, out = sim_with()
    sim.receive(framed(sim, "P", b"AB"))
    sim.receive(framed(sim, "V", b"1" * length, 1))
    assert out == [ACK, reply]
    assert sim.marker.texts == ({1: "1" * length} if reply == ACK else {})


async def test_go_with_no_character_or_outside_the_window_is_naked() -> None:
    sim, out = sim_with()
    sim.receive(framed(sim, "P", b"AB"))
    sim.receive(GO)  # nothing filled
    sim.receive(framed(sim, "V", b"   ", 1))
    sim.receive(GO)  # only spaces
    sim.receive(framed(sim, "V", b"W" * 40, 1))  # 40 x 3.5 mm in a 100 mm window
    sim.receive(GO)
    assert out == [ACK, NAK, ACK, NAK, ACK, NAK]
    assert sim.marker.cycles == [] and sim.marker.job_counter == 0


async def test_a_second_tcp_client_is_refused_and_the_first_keeps_its_session(caplog) -> None:
    from markctl.simulator.serve import serve_tcp

    sim, _ = sim_with()
    sim.detach()
    server, port = await serve_tcp(sim, "127.0.0.1", 0)
    try:
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        w1.write(STATUS)
        first = await asyncio.wait_for(r1.readexactly(19), 2)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(r2.read(100), 2) == b""  # closed at once
        w2.close()
        w1.write(STATUS)
        assert await asyncio.wait_for(r1.readexactly(19), 2) == first
        w1.close()
    finally:
        server.close()
        await server.wait_closed()
    assert "another host is connected" in caplog.text
