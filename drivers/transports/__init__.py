"""Byte transports: how a driver's bytes reach a machine.

``SerialTransport`` rides on pyserial's ``serial_for_url`` (device paths, ``socket://``,
``rfc2217://``, ``loop://``), ``PipeTransport`` is the near end of an in-process byte pipe whose
far end is a simulator. Drivers see only the :class:`ByteTransport` protocol.
"""

from markctl.drivers.transports.base import ByteTransport, TransportOptions
from markctl.drivers.transports.pipe import PipeTransport
from markctl.drivers.transports.serial import RFC2217Transport, SerialTransport, TCPTransport

__all__ = [
    "ByteTransport",
    "PipeTransport",
    "RFC2217Transport",
    "SerialTransport",
    "TCPTransport",
    "TransportOptions",
]
