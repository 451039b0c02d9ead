"""The simulated Modbus marker refuses what a controller refuses, seen through a real client, not our driver.

Requests go through pymodbus's client (a third-party implementation of the specification) to the
simulator's Modbus TCP server on loopback, and as raw bytes where a client library would not send
the malformed request at all. Exception codes per the Modbus Application Protocol V1.1b3 §7.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient

from markctl.profiles import load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.peen_modbus import ModbusMarkerSimulator
from markctl.simulator.peen_modbus_wire import crc16

# peen-modbus: holding 0-5 control/status, 10-41 text, 50-53 parameters, 60-75 origins;
# coils 0-1 (start, abort); discrete inputs 0-3 (ready, busy, done, fault).
CMD_START, CMD_ABORT, CMD_RESET, CMD_LOAD = 1, 2, 3, 4
IDLE, BUSY = 0, 1


def words(text: str, registers: int = 32) -> list[int]:
    data = text.encode().ljust(2 * registers, b"\0")
    return [data[i] << 8 | data[i + 1] for i in range(0, len(data), 2)]


@pytest.fixture
async def sim() -> AsyncIterator[tuple[ModbusMarkerSimulator, AsyncModbusTcpClient, int]]:
    machine = ModbusMarkerSimulator(load_profile("peen-modbus"), clock=make_clock("instant"))
    port = await machine.serve_tcp("127.0.0.1", 0)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    assert await client.connect()
    try:
        yield machine, client, port
    finally:
        client.close()
        await machine.stop()


# (call, exception code or None = a normal answer)
TABLE: list[tuple[str, str, dict[str, Any], int | None]] = [
    ("status block", "read_holding_registers", {"address": 2, "count": 4}, None),
    ("register 6 is not in the map", "read_holding_registers", {"address": 6, "count": 1}, 2),
    ("a read that runs past the status block", "read_holding_registers", {"address": 0, "count": 7}, 2),
    ("the map has no input registers", "read_input_registers", {"address": 0, "count": 1}, 2),
    ("start and abort coils", "read_coils", {"address": 0, "count": 2}, None),
    ("coil 2 is not in the map", "read_coils", {"address": 2, "count": 1}, 2),
    ("coil 15 is not in the map", "write_coil", {"address": 15, "value": True}, 2),
    ("ready/busy/done/fault inputs", "read_discrete_inputs", {"address": 0, "count": 4}, None),
    ("input 4 is not in the map", "read_discrete_inputs", {"address": 4, "count": 1}, 2),
    ("status is read-only", "write_register", {"address": 2, "value": 1}, 2),
    ("job counter is read-only", "write_registers", {"address": 4, "values": [0, 0]}, 2),
    ("unknown command value", "write_register", {"address": 0, "value": 99}, 3),
    ("force 500 %", "write_register", {"address": 52, "value": 500}, 3),
    ("force 0 = the machine's default", "write_register", {"address": 52, "value": 0}, None),
    ("speed 0 %", "write_register", {"address": 53, "value": 0}, 3),
    ("speed 101 %", "write_register", {"address": 53, "value": 101}, 3),
    ("character height 655 mm (profile: 1-20)", "write_register", {"address": 50, "value": 65500}, 3),
    ("character height 0.5 mm", "write_register", {"address": 50, "value": 50}, 3),
    ("character height 20 mm", "write_register", {"address": 50, "value": 2000}, None),
    ("origin x 121 mm in a 120 mm window", "write_register", {"address": 60, "value": 12100}, 3),
    ("origin y 61 mm in a 60 mm window", "write_register", {"address": 61, "value": 6100}, 3),
    ("a text byte that is not printable ASCII", "write_register", {"address": 10, "value": 0x41FF}, 3),
    ("a write that runs from the text into a hole", "write_registers", {"address": 40, "values": [0] * 3}, 2),
    ("FC22 mask write of reset_fault on the command", "mask_write_register",
     {"address": 0, "and_mask": 0, "or_mask": CMD_RESET}, None),
    ("FC22 mask write giving an unknown command", "mask_write_register",
     {"address": 0, "and_mask": 0, "or_mask": 0x55}, 3),
    ("FC23 write reset_fault, read the status", "readwrite_registers",
     {"write_address": 0, "values": [CMD_RESET], "read_address": 2, "read_count": 4}, None),
    ("FC23 write of an unknown command", "readwrite_registers",
     {"write_address": 0, "values": [77], "read_address": 2, "read_count": 1}, 3),
]  # fmt: skip


@pytest.mark.parametrize(("call", "kwargs", "code"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
async def test_request_gets_the_exception_a_controller_gives(sim, call: str, kwargs: dict[str, Any], code: int | None) -> None:  # fmt: skip
    machine, client, _ = sim
    answer = await getattr(client, call)(**kwargs, device_id=1)
    if code is None:
        assert not answer.isError(), answer
    else:
        assert answer.isError() and answer.exception_code == code, answer
        assert machine.marker.job_counter == 0


async def test_a_refused_write_changes_nothing(sim) -> None:
    machine, client, _ = sim
    assert not (await client.write_registers(50, [300, 0, 50, 100], device_id=1)).isError()
    # one bad value (force 500 %) in a block: nothing of the block is stored
    assert (await client.write_registers(50, [800, 0, 500, 50], device_id=1)).exception_code == 3
    assert (await client.read_holding_registers(50, count=4, device_id=1)).registers == [300, 0, 50, 100]


async def load(client: AsyncModbusTcpClient, text: str, height_mm: float = 3.0) -> None:
    for address, values in ((1, [1]), (0, [CMD_LOAD]), (10, words(text)), (50, [round(height_mm * 100)])):
        answer = await client.write_registers(address, values, device_id=1)
        assert not answer.isError(), (address, answer)


@pytest.mark.parametrize("text", ["", "     ", "\r\r"])
async def test_start_with_no_character_is_refused_and_counts_nothing(sim, text: str) -> None:
    machine, client, _ = sim
    await load(client, text)
    answer = await client.write_register(0, CMD_START, device_id=1)
    assert answer.isError() and answer.exception_code == 3
    status = (await client.read_holding_registers(2, count=4, device_id=1)).registers
    assert status == [IDLE, 0, 0, 0] and machine.marker.cycles == []


async def test_a_line_longer_than_the_window_is_refused(sim) -> None:
    machine, client, _ = sim
    # 32 characters of 10 mm 5x7 text make a line of about 320 mm; the window is 120 mm wide
    await load(client, "A" * 32, height_mm=10.0)
    answer = await client.write_register(0, CMD_START, device_id=1)
    assert answer.isError() and answer.exception_code == 3
    assert machine.marker.cycles == [] and machine.marker.strikes == []


async def test_while_busy_load_start_and_job_data_are_device_busy_abort_is_not(sim) -> None:
    machine, client, _ = sim
    await load(client, "ABC123")
    assert not (await client.write_coil(0, True, device_id=1)).isError()  # start by coil
    assert machine.marker.busy
    for address, value in ((0, CMD_LOAD), (0, CMD_START), (1, 2), (10, 0x4142), (52, 50)):
        answer = await client.write_register(address, value, device_id=1)
        assert answer.isError() and answer.exception_code == 6, (address, value)
    assert (await client.write_coil(0, True, device_id=1)).exception_code == 6
    assert (await client.read_discrete_inputs(0, count=4, device_id=1)).bits[:4] == [
        False,
        True,
        False,
        False,
    ]
    assert not (await client.write_register(0, CMD_ABORT, device_id=1)).isError()
    assert not machine.marker.busy and machine.marker.cycles[-1].outcome == "aborted"
    assert machine.marker.job_counter == 0


async def test_mask_write_on_the_command_register_starts_a_cycle(sim) -> None:
    machine, client, _ = sim
    await load(client, "A1")
    assert not (
        await client.mask_write_register(address=0, and_mask=0, or_mask=CMD_START, device_id=1)
    ).isError()
    while machine.marker.busy:
        await asyncio.sleep(0)
    assert machine.marker.job_counter == 1
    assert (await client.read_holding_registers(0, count=1, device_id=1)).registers == [0]  # taken


async def test_other_unit_over_tcp_hears_gateway_target_failed(sim) -> None:
    _, client, _ = sim
    answer = await client.read_holding_registers(2, count=1, device_id=7)
    assert answer.isError() and answer.exception_code == 11


# --- raw bytes: what a client library would not send --------------------------------------


def mbap(pdu: bytes, unit: int = 1, tid: int = 0x1234) -> bytes:
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


async def exchange(port: int, frame: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(frame)
        await writer.drain()
        header = await asyncio.wait_for(reader.readexactly(7), 2)
        return header + await reader.readexactly(struct.unpack(">H", header[4:6])[0] - 1)
    finally:
        writer.close()


RAW: list[tuple[str, bytes, bytes]] = [
    ("read 0 registers", b"\x03\x00\x02\x00\x00", b"\x83\x03"),
    ("read 126 registers", b"\x03\x00\x00\x00\x7e", b"\x83\x03"),
    ("read 2001 coils", b"\x01\x00\x00\x07\xd1", b"\x81\x03"),
    ("read 0 discrete inputs", b"\x02\x00\x00\x00\x00", b"\x82\x03"),
    ("write 124 registers", b"\x10\x00\x0a\x00\x7c\x02\x00\x00", b"\x90\x03"),
    ("byte count disagrees with the quantity", b"\x10\x00\x32\x00\x02\x02\x00\x64", b"\x90\x03"),
    ("write 0 coils", b"\x0f\x00\x00\x00\x00\x00", b"\x8f\x03"),
    ("coil value 0x1234", b"\x05\x00\x00\x12\x34", b"\x85\x03"),
    ("coil value 0xFF00 on an unmapped coil", b"\x05\x00\x05\xff\x00", b"\x85\x02"),
    ("unsupported function 0x2B", b"\x2b\x0e\x01\x00", b"\xab\x01"),
    ("FC23 writing 122 registers", b"\x17\x00\x02\x00\x01\x00\x0a\x00\x7a\x02\x00\x00", b"\x97\x03"),
    ("FC23 reading 0 registers", b"\x17\x00\x02\x00\x00\x00\x35\x00\x01\x02\x00\x32", b"\x97\x03"),
]  # fmt: skip


@pytest.mark.parametrize(("pdu", "reply"), [r[1:] for r in RAW], ids=[r[0] for r in RAW])
async def test_malformed_request_gets_03_with_the_requests_function_code(sim, pdu: bytes, reply: bytes) -> None:  # fmt: skip
    machine, _, port = sim
    answer = await exchange(port, mbap(pdu))
    assert answer == mbap(reply)
    assert machine.marker.cycles == []


# --- RTU: a device on a shared bus answers its own address only -----------------------------


def rtu(unit: int, pdu: bytes) -> bytes:
    frame = bytes([unit]) + pdu
    return frame + crc16(frame)


async def test_rtu_other_units_get_silence_broadcast_is_executed_silently(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    machine = ModbusMarkerSimulator(load_profile("peen-modbus"), clock=make_clock("instant"))
    port = await machine.serve_rtu_tcp("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def ask(frame: bytes, expect: int) -> bytes:
        writer.write(frame)
        await writer.drain()
        if expect == 0:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.3)
            return b""
        return await asyncio.wait_for(reader.readexactly(expect), 2)

    try:
        read_status = b"\x03\x00\x02\x00\x01"
        assert await ask(rtu(2, read_status), 0) == b""  # another device's request
        assert await ask(rtu(247, b"\x05\x00\x05\xff\x00"), 0) == b""  # even a malformed one
        bad_crc = bytearray(rtu(1, read_status))
        bad_crc[-1] ^= 0xFF
        assert await ask(bytes(bad_crc), 0) == b""  # a damaged frame is discarded
        assert await ask(rtu(0, b"\x06\x00\x35\x00\x32"), 0) == b""  # broadcast: speed 50 %
        assert await ask(rtu(1, read_status), 7) == rtu(1, b"\x03\x02\x00\x00")
        assert await ask(rtu(1, b"\x03\x00\x35\x00\x01"), 7) == rtu(1, b"\x03\x02\x00\x32")
        assert await ask(rtu(1, b"\x03\x00\x35\x00\x00"), 5) == rtu(1, b"\x83\x03")
    finally:
        writer.close()
        await machine.stop()
    assert "Traceback" not in caplog.text and "KeyError" not in caplog.text


async def test_rtu_pty_answers_a_real_client(tmp_path) -> None:
    from pymodbus import FramerType
    from pymodbus.client import AsyncModbusSerialClient

    machine = ModbusMarkerSimulator(load_profile("peen-modbus"), clock=make_clock("instant"))
    path = await machine.serve_rtu_pty()
    client = AsyncModbusSerialClient(path, framer=FramerType.RTU, baudrate=19200, timeout=0.5, retries=0)
    try:
        assert await client.connect()
        assert (await client.read_holding_registers(2, count=4, device_id=1)).registers == [0, 0, 0, 0]
        assert (await client.read_coils(2, count=1, device_id=1)).exception_code == 2
    finally:
        client.close()
        await machine.stop()
