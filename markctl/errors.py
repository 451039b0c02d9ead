"""The one exception tree of markctl.

Every error markctl raises on purpose derives from :class:`MarkctlError`. Where a stdlib
exception means the same thing, it is mixed in, so ``except TimeoutError`` or
``except ValueError`` keeps working for callers who do not know markctl's names.

Rules (STYLE.md §5): wrap foreign exceptions at the boundary with ``raise ... from exc``;
never return errors as values; never log-and-continue.
"""

from __future__ import annotations

__all__ = [
    "AddressError",
    "AlarmError",
    "ComplianceError",
    "ConfigError",
    "DeviceError",
    "DriverNotFoundError",
    "DuplicateMarkError",
    "ItemStateError",
    "LayoutError",
    "MachineConnectionError",
    "MachineError",
    "MachineTimeoutError",
    "MarkctlError",
    "ProfileError",
    "ProtocolError",
    "RecordError",
    "SafetyError",
]


class MarkctlError(Exception):
    """Root of every markctl error.

    Attributes:
        code: a short machine-readable code (e.g. ``"error:9"``, ``"AUTH"``) or ``None``.
        hint: one sentence telling the user what to do next, or ``None``.
    """

    code: str | None
    hint: str | None

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message} ({self.hint})"


# --- configuration -------------------------------------------------------------------------


class ConfigError(MarkctlError, ValueError):
    """A configuration value (file, environment, flag) is unusable."""


class AddressError(ConfigError):
    """A machine address URL is malformed; ``part`` names the offending part."""

    def __init__(self, message: str, *, address: str, part: str, hint: str | None = None) -> None:
        super().__init__(f"machine address {address!r}: {part}: {message}", hint=hint, code="address")
        self.address = address
        self.part = part
        self.reason = message

    def as_typed(self, address: str) -> AddressError:
        """The same error naming the address as the person wrote it (not its expanded form)."""
        return AddressError(self.reason, address=address, part=self.part, hint=self.hint)


class ProfileError(ConfigError):
    """A firmware or rule profile is refused; names the file, the key path and the reason."""

    def __init__(self, message: str, *, path: str, loc: str = "", hint: str | None = None) -> None:
        where = f"{path}: {loc}" if loc else path
        super().__init__(f"{where}: {message}", hint=hint, code="profile")
        self.path = path
        self.loc = loc
        self.reason = message


class DriverNotFoundError(MarkctlError, LookupError):
    """No driver or transport is registered under the requested name."""


# --- layouts -------------------------------------------------------------------------------


class LayoutError(MarkctlError, ValueError):
    """A mark request cannot be turned into a layout; ``field`` names the culprit."""

    def __init__(self, message: str, *, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message, hint=hint, code="layout")
        self.field = field


class ComplianceError(LayoutError):
    """A layout failed its compliance check and no override was given."""

    def __init__(self, message: str, *, rule: str, field: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"[{rule}] {message}", field=field, hint=hint)
        self.rule = rule


# --- machines ------------------------------------------------------------------------------


class MachineError(MarkctlError):
    """Something went wrong talking to, or on, a machine."""

    def __init__(
        self,
        message: str,
        *,
        address: str | None = None,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, code=code, hint=hint)
        self.address = address


class MachineConnectionError(MachineError, ConnectionError):
    """The link to the machine could not be opened or was lost."""


class MachineTimeoutError(MachineError, TimeoutError):
    """The machine did not answer in time."""


class ProtocolError(MachineError):
    """The machine sent bytes that do not parse.

    Attributes:
        raw: the bytes being parsed.
        offset: index into ``raw`` of the first offending byte (``None`` if not one byte).
    """

    def __init__(
        self,
        message: str,
        *,
        raw: bytes,
        offset: int | None = None,
        address: str | None = None,
    ) -> None:
        if offset is not None and 0 <= offset < len(raw):
            message = f"{message} (byte {offset}: 0x{raw[offset]:02X} in {raw[:64]!r})"
        else:
            message = f"{message} (in {raw[:64]!r})"
        super().__init__(message, address=address, code="protocol")
        self.raw = raw
        self.offset = offset


class DeviceError(MachineError):
    """The machine refused a command (``error:N``, a Modbus exception, a NAK...)."""

    def __init__(self, message: str, *, device_code: str, address: str | None = None) -> None:
        super().__init__(message, address=address, code=device_code)
        self.device_code = device_code


class AlarmError(MachineError):
    """The machine is in an alarm (interlock, limit, e-stop) and needs a reset."""

    def __init__(self, message: str, *, alarm_code: str, address: str | None = None) -> None:
        super().__init__(message, address=address, code=alarm_code)
        self.alarm_code = alarm_code


class SafetyError(MachineError):
    """The safe state (beam off, stylus retracted) could not be confirmed."""


# --- records -------------------------------------------------------------------------------


class RecordError(MarkctlError):
    """The mark records cannot be read, written or verified."""


class ItemStateError(RecordError):
    """An item is not in a state that allows the requested step (e.g. finishing one never started)."""

    def __init__(self, message: str, *, item_key: str, state: str | None, hint: str | None = None) -> None:
        super().__init__(f"{item_key}: {message}", code="item-state", hint=hint)
        self.item_key = item_key
        self.state = state


class DuplicateMarkError(ItemStateError):
    """The item already carries this mark; marking again needs a supervisor's recorded override."""
