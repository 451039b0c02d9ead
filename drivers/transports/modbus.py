"""A thin, typed Modbus link over pymodbus 3.x async clients (PROTOCOLS.md §6).

``ModbusTCPLink("host:port", options)`` rides on ``AsyncModbusTcpClient``; ``ModbusRTULink``
on ``AsyncModbusSerialClient`` with the RTU framer, for a device path (``/dev/ttyUSB1``) or any
pyserial URL (``socket://host:port`` for RTU over TCP, §6.3). Verified against pymodbus 3.16.1
(§6.1, §6.4): keyword-only arguments after ``address``/``values``, ``device_id=`` (``slave=`` is a
TypeError since 3.10), ``connect()`` returns a bool.

This is the boundary where pymodbus stops (STYLE.md §5): every call names the register it is about
(``"status (holding 2)"``), and

* an exception response (``isError()``) becomes :class:`DeviceError` with
  ``device_code="modbus-exception:N"`` and the exception's name;
* no answer within the timeout (pymodbus ``ModbusIOException`` on a live connection) becomes
  :class:`MachineTimeoutError` naming the unit id (on RTU a wrong unit id is silence);
* a lost or refused connection (``ConnectionException``, OS errors, and ``ModbusIOException``
  once the socket is closed, which is how pymodbus 3.16 reports a request it could not send)
  becomes :class:`MachineConnectionError`; gateway exceptions 10/11 (nothing answers that unit
  id) become a :class:`DeviceError` naming the unit; any other pymodbus error becomes
  :class:`ProtocolError`.

No pymodbus object or exception leaves this module.

Options left at ``None`` (unit, timeout, retries, serial settings) are filled from the machine's
profile by the driver through :meth:`ModbusLink.use_profile_defaults`, so one profile configures
both the driver and the simulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal

from pydantic import Field
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from markctl.drivers.transports.base import TransportOptions
from markctl.errors import DeviceError, MachineConnectionError, MachineTimeoutError, ProtocolError

__all__ = ["ModbusLink", "ModbusRTULink", "ModbusRTUOptions", "ModbusTCPLink", "ModbusTCPOptions"]

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusTCPOptions(TransportOptions):
    """``peen+modbus-tcp://host:port?unit=1&timeout=1``; None = the profile's value."""

    unit: int | None = Field(default=None, ge=0, le=247, description="Device id (slave address).")
    timeout: float | None = Field(default=None, gt=0, le=60, description="Seconds per request.")
    retries: int | None = Field(default=None, ge=0, le=10)


class ModbusRTUOptions(ModbusTCPOptions):
    """``peen+modbus-rtu:///dev/ttyUSB1?baud=19200&parity=E``; None = the profile's value."""

    baud: int | None = Field(default=None, gt=0, le=4_000_000)
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None
    bytesize: Literal[7, 8] = 8


class ModbusLink:
    """Open/close plus register and bit access that raise markctl errors naming the register."""

    options_model: ClassVar[type[TransportOptions]] = ModbusTCPOptions

    def __init__(self, location: str, options: TransportOptions | None = None) -> None:
        self.location = location
        self.options = options if options is not None else self.options_model()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._defaults: dict[str, Any] = {"unit": 1, "timeout": 1.0, "retries": 3}
        self.requests = 0  # answered or not; for benchmarks and tests
        self.busy_s = 0.0  # wall time spent inside requests
        self.bytes_out = 0  # ADUs as framed on the wire (pymodbus trace_packet hook)
        self.bytes_in = 0

    # --- configuration ---------------------------------------------------------------------

    def use_profile_defaults(self, **defaults: Any) -> None:
        """Values for the options the address left out (unit, timeout, retries, baud, ...)."""
        self._defaults.update({k: v for k, v in defaults.items() if v is not None})

    def setting(self, key: str) -> Any:
        value = getattr(self.options, key, None)
        return self._defaults.get(key) if value is None else value

    @property
    def unit(self) -> int:
        return int(self.setting("unit"))

    @property
    def description(self) -> str:
        return self.location

    @property
    def is_open(self) -> bool:
        return self._client is not None and self._client.connected

    # --- lifecycle -------------------------------------------------------------------------

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        raise NotImplementedError

    def _trace(self, sending: bool, packet: bytes) -> bytes:
        if sending:
            self.bytes_out += len(packet)
        else:
            self.bytes_in += len(packet)
        return packet

    async def open(self) -> None:
        if self._client is not None:
            return
        client = self._make_client()
        try:
            connected = await client.connect()
        except (ModbusException, OSError, ValueError) as exc:
            client.close()
            raise MachineConnectionError(
                f"cannot open {self.location}: {exc}", address=self.location
            ) from exc
        if not connected:
            client.close()
            raise MachineConnectionError(
                f"cannot connect to {self.location}: nothing accepted the connection",
                address=self.location,
                hint="check that the machine is on and that the address and port are its own",
            )
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- requests --------------------------------------------------------------------------

    def _live(self, what: str) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is None:
            raise MachineConnectionError(f"{self.location}: not open ({what})", address=self.location)
        return self._client

    async def _call(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Make and await a pymodbus request, translating every failure; ``what`` names the register.

        ``call`` is a thunk because pymodbus raises ConnectionException from the *call* itself (not
        only from the await) once the link is down.
        """
        self.requests += 1
        started = time.monotonic()
        try:
            response = await self._uncancelled(call)
        except ModbusIOException as exc:
            if self._client is None or not self._client.connected:
                # pymodbus reports a request it could not send on a closed socket as "no
                # response": the cause is the lost link, not a slow machine.
                raise MachineConnectionError(
                    f"{self.location}: connection lost during {what} (the machine or a gateway closed it)",
                    address=self.location,
                    hint="check the machine and the network, then recover the machine",
                ) from exc
            raise MachineTimeoutError(
                f"{self.location}: no answer for {what} within {self.setting('timeout'):g} s "
                f"(after {self.setting('retries')} retries) from unit {self.unit}",
                address=self.location,
                code="modbus-timeout",
                hint=f"check that the machine is on, answers unit id {self.unit} and the line settings match",
            ) from exc
        except ConnectionException as exc:
            raise MachineConnectionError(
                f"{self.location}: connection lost during {what}",
                address=self.location,
                hint="check the machine and the network, then recover the machine",
            ) from exc
        except ModbusException as exc:
            raise ProtocolError(
                f"{self.location}: bad answer for {what}: {exc}", raw=b"", address=self.location
            ) from exc
        except OSError as exc:
            raise MachineConnectionError(f"{self.location}: {what}: {exc}", address=self.location) from exc
        finally:
            self.busy_s += time.monotonic() - started
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            if code in (10, 11):
                # Gateway exceptions (Application Protocol §7): nothing answers this unit id there.
                raise DeviceError(
                    f"{self.location}: no device with unit id {self.unit} answers there "
                    f"(Modbus exception {code}, {name}, for {what}); check the unit id "
                    "(?unit= in the address, or protocol.unit in the profile)",
                    device_code=f"modbus-exception:{code}",
                    address=self.location,
                )
            raise DeviceError(
                f"{self.location}: device {self.unit} answered {what} with Modbus exception {code} ({name})",
                device_code=f"modbus-exception:{code}",
                address=self.location,
            )
        return response

    async def _uncancelled(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Await one request to its end even when our caller is cancelled meanwhile.

        pymodbus keeps one transaction in flight per link. A request cancelled mid-flight leaves it
        waiting for an answer that, when it comes, matches nothing ("received pdu without a
        corresponding request"), and the next request -- typically the safe-state abort -- loses a
        whole timeout before its retry. So the request runs in its own task and ends (bounded by its own
        timeout and retries) before the cancellation goes on.
        """

        async def request() -> Any:
            return await call()

        task = asyncio.ensure_future(request())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            bound = float(self.setting("timeout")) * (int(self.setting("retries")) + 1)
            await asyncio.wait({task}, timeout=bound)
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the caller is gone, the cancellation is what matters
            else:
                task.cancel()
            raise

    async def read_registers(self, address: int, count: int, *, what: str) -> list[int]:
        client = self._live(what)
        rr = await self._call(
            what, lambda: client.read_holding_registers(address, count=count, device_id=self.unit)
        )
        values = [int(v) for v in rr.registers]
        if len(values) != count:
            raise ProtocolError(
                f"{what}: asked for {count} registers, got {len(values)}", raw=b"", address=self.location
            )
        return values

    async def read_input_registers(self, address: int, count: int, *, what: str) -> list[int]:
        client = self._live(what)
        rr = await self._call(
            what, lambda: client.read_input_registers(address, count=count, device_id=self.unit)
        )
        values = [int(v) for v in rr.registers]
        if len(values) != count:
            raise ProtocolError(
                f"{what}: asked for {count} registers, got {len(values)}", raw=b"", address=self.location
            )
        return values

    async def write_register(self, address: int, value: int, *, what: str) -> None:
        client = self._live(what)
        await self._call(what, lambda: client.write_register(address, value & 0xFFFF, device_id=self.unit))

    async def write_registers(self, address: int, values: list[int], *, what: str) -> None:
        client = self._live(what)
        await self._call(
            what, lambda: client.write_registers(address, [v & 0xFFFF for v in values], device_id=self.unit)
        )

    async def write_coil(self, address: int, value: bool, *, what: str) -> None:
        client = self._live(what)
        await self._call(what, lambda: client.write_coil(address, value, device_id=self.unit))

    async def read_discrete_inputs(self, address: int, count: int, *, what: str) -> list[bool]:
        client = self._live(what)
        rr = await self._call(
            what, lambda: client.read_discrete_inputs(address, count=count, device_id=self.unit)
        )
        return [bool(b) for b in rr.bits[:count]]

    async def read_coils(self, address: int, count: int, *, what: str) -> list[bool]:
        client = self._live(what)
        rr = await self._call(what, lambda: client.read_coils(address, count=count, device_id=self.unit))
        return [bool(b) for b in rr.bits[:count]]


class ModbusTCPLink(ModbusLink):
    """Modbus TCP (``host:port``, default port 502)."""

    options_model: ClassVar[type[TransportOptions]] = ModbusTCPOptions

    def _make_client(self) -> AsyncModbusTcpClient:
        host, _, port = self.location.rpartition(":")
        if not host:
            host, port = self.location, "502"
        try:
            port_number = int(port)
        except ValueError:
            raise ValueError(f"modbus-tcp location must be host:port, got {self.location!r}") from None
        return AsyncModbusTcpClient(
            host.strip("[]"),
            port=port_number,
            framer=FramerType.SOCKET,
            timeout=float(self.setting("timeout")),
            retries=int(self.setting("retries")),
            # A lost link is reported, never silently re-established under a running job (§9.3).
            reconnect_delay=0,
            trace_packet=self._trace,
        )


class ModbusRTULink(ModbusLink):
    """Modbus RTU on a serial device or a pyserial URL (``socket://host:port``)."""

    options_model: ClassVar[type[TransportOptions]] = ModbusRTUOptions

    def _make_client(self) -> AsyncModbusSerialClient:
        return AsyncModbusSerialClient(
            self.location,
            framer=FramerType.RTU,
            baudrate=int(self.setting("baud") or 19200),
            bytesize=int(self.setting("bytesize") or 8),
            parity=str(self.setting("parity") or "N"),
            stopbits=int(self.setting("stopbits") or 1),
            timeout=float(self.setting("timeout")),
            retries=int(self.setting("retries")),
            reconnect_delay=0,
            trace_packet=self._trace,
        )
