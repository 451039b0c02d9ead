"""The error tree: one root, stdlib mix-ins, bytes and offsets kept."""

from __future__ import annotations

import pytest

from markctl import errors as e


@pytest.mark.parametrize(
    ("cls", "stdlib"),
    [
        (e.ConfigError, ValueError),
        (e.AddressError, ValueError),
        (e.ProfileError, ValueError),
        (e.DriverNotFoundError, LookupError),
        (e.LayoutError, ValueError),
        (e.ComplianceError, ValueError),
        (e.MachineConnectionError, ConnectionError),
        (e.MachineTimeoutError, TimeoutError),
    ],
)
def test_stdlib_mixins(cls: type[Exception], stdlib: type[Exception]) -> None:
    assert issubclass(cls, e.MarkctlError) and issubclass(cls, stdlib)


def test_machine_errors_share_a_branch() -> None:
    for cls in (
        e.MachineConnectionError,
        e.MachineTimeoutError,
        e.ProtocolError,
        e.DeviceError,
        e.AlarmError,
        e.SafetyError,
    ):
        assert issubclass(cls, e.MachineError)


def test_timeout_caught_as_stdlib() -> None:
    with pytest.raises(TimeoutError):
        raise e.MachineTimeoutError("no ok within 3 s", address="sim://grbl-1.1")


def test_protocol_error_names_the_byte() -> None:
    err = e.ProtocolError("unexpected byte in status report", raw=b"<Idle|MPos:0\xff>", offset=12)
    assert err.raw == b"<Idle|MPos:0\xff>" and err.offset == 12
    assert "byte 12: 0xFF" in str(err)


def test_protocol_error_without_offset() -> None:
    assert "in b'abc'" in str(e.ProtocolError("truncated", raw=b"abc"))


def test_compliance_error_names_rule_and_field() -> None:
    err = e.ComplianceError("height 1.2 mm < 1.6 mm", rule="EU-FONT", field="serial")
    assert err.rule == "EU-FONT" and err.field == "serial"
    assert str(err) == "serial: [EU-FONT] height 1.2 mm < 1.6 mm"


def test_hint_is_shown() -> None:
    err = e.MarkctlError("port busy", hint="close the other sender")
    assert str(err) == "port busy (close the other sender)" and err.hint == "close the other sender"
