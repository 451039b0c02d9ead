"""Machine addresses: ``<protocol>+<transport>://<location>?<options>`` and ``sim://<profile-id>``.

One URL names a machine whether it is hardware, a remote device or the simulator, so one code
path serves all three (ARCHITECTURE.md "Machine addresses")::

    grbl+serial:///dev/ttyUSB0?baud=115200     grbl+serial://COM3
    grbl+tcp://10.0.0.5:23                     telesis+serial:///dev/ttyS0
    peen+modbus-tcp://127.0.0.1:5020?unit=1    peen+modbus-rtu:///dev/ttyUSB1?baud=19200
    sim://grbl-1.1?clock=instant               grbl+sim://grbl-1.1

The text is parsed once into a frozen :class:`MachineAddress`; anything malformed raises
:class:`~markctl.errors.AddressError` naming the part (scheme, protocol, transport, location,
option). Which options a protocol and transport accept is checked later, against their option
models, by :func:`markctl.registry.validate_options`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from markctl.errors import AddressError

__all__ = ["MachineAddress", "parse_address"]

_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_OPTION_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
_PROFILE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# Transports whose location is host:port.
_NETWORK_TRANSPORTS = frozenset({"tcp", "rfc2217", "modbus-tcp"})
# Characters kept literally when formatting a location (device paths, COM names, host:port).
_LOCATION_SAFE = "/:.-_[]"


@dataclass(frozen=True, slots=True)
class MachineAddress:
    """A parsed machine address.

    Attributes:
        protocol: the driver family (``grbl``, ``telesis``, ``peen``) or ``None`` for ``sim://``,
            where the simulated machine's profile names it.
        transport: how bytes or registers travel (``serial``, ``tcp``, ``modbus-tcp`` ...).
        location: device path, ``host:port`` or, for ``sim``, a firmware profile id.
        options: ``key=value`` pairs in the order given; values are still text here.
    """

    protocol: str | None
    transport: str
    location: str
    options: tuple[tuple[str, str], ...] = field(default=())

    @property
    def option_map(self) -> Mapping[str, str]:
        """The options as a mapping (keys are unique, checked at parse time)."""
        return dict(self.options)

    @property
    def is_simulated(self) -> bool:
        """True when the address names an in-process simulator."""
        return self.transport == "sim"

    @property
    def host_port(self) -> tuple[str, int]:
        """``(host, port)`` of a network location; raises AddressError for other transports."""
        if self.transport not in _NETWORK_TRANSPORTS:
            raise AddressError("has no host:port", address=str(self), part="location")
        return _split_host_port(self.location, str(self))

    def with_options(self, **extra: str) -> MachineAddress:
        """A copy with options added or replaced (order: existing keys first)."""
        merged = dict(self.options)
        merged.update(extra)
        return MachineAddress(self.protocol, self.transport, self.location, tuple(merged.items()))

    def __str__(self) -> str:
        scheme = self.transport if self.protocol is None else f"{self.protocol}+{self.transport}"
        text = f"{scheme}://{quote(self.location, safe=_LOCATION_SAFE)}"
        if self.options:
            text += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in self.options)
        return text


def parse_address(text: str) -> MachineAddress:
    """Parse a machine address; raise AddressError naming the bad part."""
    if not isinstance(text, str):
        raise AddressError(f"expected text, got {type(text).__name__}", address=repr(text), part="address")
    if not text or text != text.strip():
        raise AddressError("empty or surrounded by white space", address=text, part="address")
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise AddressError(
            "missing '://'", address=text, part="scheme", hint="write e.g. grbl+serial:///dev/ttyUSB0"
        )
    protocol, transport = _parse_scheme(scheme, text)
    if "#" in rest:
        raise AddressError("fragments ('#') are not allowed", address=text, part="location")
    location_text, _, query = rest.partition("?")
    location = _unquote(location_text, text, "location")
    _check_location(transport, location, text)
    options = _parse_options(query, text) if query else ()
    return MachineAddress(protocol, transport, location, options)


def _parse_scheme(scheme: str, text: str) -> tuple[str | None, str]:
    if "+" in scheme:
        protocol, _, transport = scheme.partition("+")
        if not _NAME.fullmatch(protocol):
            raise AddressError(
                f"protocol {protocol!r} must be lowercase letters, digits or '-'",
                address=text,
                part="protocol",
            )
    else:
        protocol, transport = None, scheme
        if transport != "sim":
            raise AddressError(
                "a scheme needs a protocol and a transport joined by '+'",
                address=text,
                part="scheme",
                hint=f"e.g. grbl+{transport or 'serial'}://...; only sim:// may stand alone",
            )
    if not _NAME.fullmatch(transport):
        raise AddressError(
            f"transport {transport!r} must be lowercase letters, digits or '-'",
            address=text,
            part="transport",
        )
    return protocol, transport


def _check_location(transport: str, location: str, text: str) -> None:
    if not location:
        raise AddressError("is empty", address=text, part="location")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in location):
        raise AddressError("contains control characters", address=text, part="location")
    if "@" in location:
        raise AddressError("user names ('@') are not supported", address=text, part="location")
    if transport in _NETWORK_TRANSPORTS:
        _split_host_port(location, text)
    elif transport == "sim" and not _PROFILE_ID.fullmatch(location):
        raise AddressError(
            f"{location!r} is not a profile id (lowercase letters, digits, '.', '-', '_')",
            address=text,
            part="location",
        )


def _unquote(value: str, text: str, part: str) -> str:
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError as exc:
        raise AddressError(f"bad percent-escape: {exc.reason}", address=text, part=part) from exc


def _split_host_port(location: str, text: str) -> tuple[str, int]:
    host, sep, port_text = location.rpartition(":")
    if not sep or not host:
        raise AddressError(f"{location!r} needs host:port", address=text, part="location")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise AddressError(f"port {port_text!r} is not a number 0-65535", address=text, part="location")
    if not host or any(c in host for c in "/?#[] "):
        raise AddressError(f"host {host!r} is malformed", address=text, part="location")
    return host, int(port_text)


def _parse_options(query: str, text: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in query.split("&"):
        key, sep, value = item.partition("=")
        if not sep:
            raise AddressError(f"{item!r} is not key=value", address=text, part="options")
        if not _OPTION_KEY.fullmatch(key):
            raise AddressError(
                f"option name {key!r} must be lowercase letters, digits or '_'", address=text, part="options"
            )
        if key in seen:
            raise AddressError(f"option {key!r} is given twice", address=text, part=f"option {key}")
        seen.add(key)
        pairs.append((key, _unquote(value, text, f"option {key}")))
    return tuple(pairs)
