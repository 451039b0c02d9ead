"""A second host is refused by the simulated marker, and markctl says why in one line."""

from __future__ import annotations

import pytest

from markctl.drivers.telesis import TelesisDriver
from markctl.drivers.transports import TCPTransport
from markctl.errors import MachineConnectionError
from markctl.profiles import load_profile
from markctl.simulator.clock import make_clock
from markctl.simulator.serve import serve_tcp
from markctl.simulator.telesis import TelesisSimulator


# pyserial's socket:// close() does shutdown() and close() in one try: on a socket the peer has
# already closed, shutdown() raises ENOTCONN and the socket is left to the garbage collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
async def test_second_host_is_told_the_marker_closed_the_connection() -> None:
    profile = load_profile("telesis-tmp")
    sim = TelesisSimulator(profile, clock=make_clock("instant"))
    await sim.start()
    server, port = await serve_tcp(sim, "127.0.0.1", 0)
    first = TelesisDriver(TCPTransport(f"127.0.0.1:{port}"), profile)
    second = TelesisDriver(TCPTransport(f"127.0.0.1:{port}"), profile)
    try:
        await first.connect()
        with pytest.raises(MachineConnectionError) as info:
            await second.connect()
        message = str(info.value)
        assert "closed the connection before answering" in message and "another host" in message
        assert "\n" not in message
        assert (await first.read_status()).ready  # the first host's session goes on
    finally:
        await first.close()
        await second.close()
        server.close()
        await server.wait_closed()
        await sim.stop()
