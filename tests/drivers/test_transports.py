"""Byte transports over pyserial URLs: loopback, TCP, and a lost link."""

from __future__ import annotations

import asyncio
import socket

import pytest

from markctl.drivers.transports import PipeTransport, SerialTransport, TCPTransport
from markctl.errors import MachineConnectionError


async def _read_exactly(transport: SerialTransport, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await transport.read(timeout=2.0)
        assert chunk, "timed out"
        data += chunk
    return data


async def test_loop_url_is_binary_safe() -> None:
    transport = SerialTransport("loop://")
    await transport.open()
    try:
        payload = bytes(range(256))
        await transport.write(payload)
        assert await _read_exactly(transport, 256) == payload
    finally:
        await transport.close()
    assert not transport.is_open


async def test_read_times_out_with_empty_bytes() -> None:
    transport = SerialTransport("loop://")
    await transport.open()
    try:
        assert await transport.read(timeout=0.05) == b""
    finally:
        await transport.close()


async def test_open_failure_is_connection_error() -> None:
    with pytest.raises(MachineConnectionError, match="cannot open /dev/does-not-exist"):
        await SerialTransport("/dev/does-not-exist").open()


async def test_tcp_round_trip_and_peer_close() -> None:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = TCPTransport(f"127.0.0.1:{port}")
    await transport.open()
    try:
        reader, writer = await asyncio.wait_for(accepted.get(), 5)
        await transport.write(b"?\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"?\n"
        writer.write(b"ok\r\n")
        await writer.drain()
        assert await _read_exactly(transport, 4) == b"ok\r\n"
        writer.close()
        await writer.wait_closed()
        with pytest.raises(MachineConnectionError, match="link lost"):
            for _ in range(100):
                await transport.read(timeout=0.1)
        with pytest.raises(MachineConnectionError):
            await transport.write(b"?")
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


async def test_tcp_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MachineConnectionError):
        await TCPTransport(f"127.0.0.1:{port}").open()


async def test_tcp_reopens_after_a_lost_link() -> None:
    # An echo server (pyserial's socket:// open discards input already waiting, so no greeting).
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)
        while data := await reader.read(100):
            writer.write(data)
            await writer.drain()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    transport = TCPTransport(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        await transport.open()
        await transport.write(b"one\n")
        assert await _read_exactly(transport, 4) == b"one\n"
        first = await asyncio.wait_for(accepted.get(), 5)
        first.close()
        with pytest.raises(MachineConnectionError):
            for _ in range(100):
                await transport.read(timeout=0.1)
        await transport.close()
        await transport.open()  # the cable is back: a fresh link, not the old loss
        await transport.write(b"two\n")
        assert await _read_exactly(transport, 4) == b"two\n"
        second = await asyncio.wait_for(accepted.get(), 5)
        await transport.close()
        second.close()
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


async def test_pipe_reopens_and_calls_on_open() -> None:
    opened: list[int] = []
    pipe = PipeTransport("sim://x", lambda data: None, on_open=lambda: opened.append(1))
    await pipe.open()
    pipe.hang_up("unplugged")
    with pytest.raises(MachineConnectionError, match="unplugged"):
        await pipe.read(timeout=1)
    await pipe.close()
    await pipe.open()
    pipe.feed(b"Grbl\r\n")
    assert await pipe.read(timeout=1) == b"Grbl\r\n" and opened == [1, 1]


async def test_pipe_feeds_and_hangs_up() -> None:
    sent: list[bytes] = []
    pipe = PipeTransport("sim://test", sent.append)
    await pipe.open()
    await pipe.write(b"$I\n")
    assert sent == [b"$I\n"]
    pipe.feed(b"[VER:1.1h]\r\n")
    pipe.feed(b"ok\r\n")
    assert await pipe.read(timeout=1) == b"[VER:1.1h]\r\nok\r\n"
    pipe.hang_up("cable pulled")
    with pytest.raises(MachineConnectionError, match="cable pulled"):
        await pipe.read(timeout=1)
    with pytest.raises(MachineConnectionError):
        await pipe.write(b"?")


async def test_a_cancelled_read_stays_cancelled_when_bytes_arrive_in_the_same_turn() -> None:
    # asyncio.wait_for on Python 3.11 returns the inner result and swallows the cancellation when both
    # happen in one loop turn; a job aborted just as the machine answered then ran on to its end.
    from markctl.drivers.transports._queue import Inbound

    inbound = Inbound("test")
    reader = asyncio.create_task(inbound.read(5.0))
    await asyncio.sleep(0)  # the reader is waiting
    inbound.feed(b"ok\r\n")
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert await inbound.read(0.1) == b"ok\r\n"  # nothing was lost to the cancelled reader


async def test_tcp_hands_a_burst_to_the_loop_in_one_piece_not_byte_by_byte() -> None:
    # pyserial's socket:// reports 1 byte waiting whatever is buffered; each byte used to be its
    # own callback on the event loop (a status report: ~60 of them). Now the loop reads the socket.
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    transport = TCPTransport(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    await transport.open()
    feeds: list[bytes] = []
    inbound = transport._inbound
    feed = inbound.feed

    def counted(data: bytes) -> None:
        feeds.append(data)
        feed(data)

    inbound.feed = counted  # type: ignore[method-assign]
    try:
        writer = await asyncio.wait_for(accepted.get(), 5)
        report = b"<Idle|MPos:0.000,0.000,0.000|FS:0,0|WCO:0.000,0.000,0.000>\r\n"
        writer.write(report * 4)
        await writer.drain()
        assert await _read_exactly(transport, len(report) * 4) == report * 4
        assert len(feeds) <= 2  # what had arrived, in one or two reads (never byte by byte)
        writer.close()
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()


async def test_tcp_writes_go_straight_to_the_socket_and_keep_their_order_when_it_is_full() -> None:
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    transport = TCPTransport(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    await transport.open()
    threaded: list[int] = []
    in_thread = transport._write_in_thread

    async def spy(data: bytes) -> None:
        threaded.append(len(data))
        await in_thread(data)

    transport._write_in_thread = spy  # type: ignore[method-assign]
    try:
        reader, writer = await asyncio.wait_for(accepted.get(), 5)
        await transport.write(b"G1 X1 Y1\n")
        assert threaded == []  # a line: no thread hand-off
        assert await asyncio.wait_for(reader.readexactly(9), 5) == b"G1 X1 Y1\n"
        big = bytes(range(256)) * 40_000  # ~10 MB: more than the socket buffers while nobody reads
        first = asyncio.ensure_future(transport.write(big))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(transport.write(b"END\n"))
        await asyncio.sleep(0)
        assert threaded and not first.done()  # the rest went to a thread; "END" waits behind it
        received = await asyncio.wait_for(reader.readexactly(len(big) + 4), 30)
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert received == big + b"END\n"
        writer.close()
    finally:
        await transport.close()
        server.close()
        await server.wait_closed()
