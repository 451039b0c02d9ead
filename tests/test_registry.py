"""The driver/transport registry: lazy, extensible through entry points, helpful when a name is wrong."""

from __future__ import annotations

import importlib.metadata

import pytest

from markctl import registry
from markctl.drivers.transports.serial import SerialTransport
from markctl.errors import DriverNotFoundError


def test_builtin_transport_resolves() -> None:
    assert registry.resolve_transport("serial") is SerialTransport
    assert {"serial", "tcp", "rfc2217"} <= set(registry.transport_names())


def test_unknown_name_lists_known_and_suggests() -> None:
    with pytest.raises(DriverNotFoundError) as info:
        registry.resolve_transport("serail")
    message = str(info.value)
    assert "no transport named 'serail'" in message
    assert "known: " in message and "serial" in message and "did you mean serial" in message
    assert isinstance(info.value, LookupError)


def test_entry_points_extend_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = importlib.metadata.EntryPoint(
        name="echo", value="markctl.drivers.transports.pipe:PipeTransport", group=registry.TRANSPORT_GROUP
    )

    def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        return [fake] if group == registry.TRANSPORT_GROUP else []

    monkeypatch.setattr(registry, "entry_points", entry_points)
    from markctl.drivers.transports.pipe import PipeTransport

    assert "echo" in registry.transport_names()
    assert registry.resolve_transport("echo") is PipeTransport


def test_resolution_is_lazy() -> None:
    # Every built-in target is "module:attribute" and nothing is imported when the table is read.
    for target in {**registry.BUILTIN_TRANSPORTS, **registry.BUILTIN_DRIVERS}.values():
        module, _, attribute = target.partition(":")
        assert module.startswith("markctl.") and attribute
