"""Machine addresses: examples, round-trips, and garbage that only ever raises AddressError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from markctl.address import MachineAddress, parse_address
from markctl.errors import AddressError, ConfigError
from markctl.registry import validate_options


@pytest.mark.parametrize(
    ("text", "protocol", "transport", "location", "options"),
    [
        ("grbl+serial:///dev/ttyUSB0?baud=115200", "grbl", "serial", "/dev/ttyUSB0", {"baud": "115200"}),
        ("grbl+serial://COM3", "grbl", "serial", "COM3", {}),
        ("grbl+tcp://10.0.0.5:23", "grbl", "tcp", "10.0.0.5:23", {}),
        ("telesis+serial:///dev/ttyS0", "telesis", "serial", "/dev/ttyS0", {}),
        ("peen+modbus-tcp://127.0.0.1:5020?unit=1", "peen", "modbus-tcp", "127.0.0.1:5020", {"unit": "1"}),
        (
            "peen+modbus-rtu:///dev/ttyUSB1?baud=19200",
            "peen",
            "modbus-rtu",
            "/dev/ttyUSB1",
            {"baud": "19200"},
        ),
        ("sim://grbl-1.1", None, "sim", "grbl-1.1", {}),
        ("grbl+sim://grbl-1.1?clock=instant", "grbl", "sim", "grbl-1.1", {"clock": "instant"}),
        ("grbl+tcp://[::1]:23", "grbl", "tcp", "[::1]:23", {}),
    ],
)
def test_documented_examples(
    text: str, protocol: str | None, transport: str, location: str, options: dict[str, str]
) -> None:
    address = parse_address(text)
    assert (address.protocol, address.transport, address.location) == (protocol, transport, location)
    assert dict(address.option_map) == options
    assert str(address) == text


def test_host_port() -> None:
    assert parse_address("grbl+tcp://10.0.0.5:23").host_port == ("10.0.0.5", 23)
    assert parse_address("grbl+tcp://[::1]:23").host_port == ("::1", 23)
    with pytest.raises(AddressError, match="location"):
        _ = parse_address("grbl+serial://COM3").host_port


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("", "address"),
        ("/dev/ttyUSB0", "scheme"),
        ("serial:///dev/ttyUSB0", "scheme"),
        ("GRBL+serial:///dev/x", "protocol"),
        ("grbl+Serial:///dev/x", "transport"),
        ("grbl+serial://", "location"),
        ("grbl+tcp://10.0.0.5", "location"),
        ("grbl+tcp://10.0.0.5:99999", "location"),
        ("grbl+tcp://:23", "location"),
        ("sim://Grbl 1.1", "location"),
        ("grbl+serial:///dev/x?baud", "options"),
        ("grbl+serial:///dev/x?baud=1&baud=2", "option baud"),
        ("grbl+serial:///dev/x?Baud=1", "options"),
        ("grbl+serial:///dev/x#frag", "location"),
        ("grbl+serial:///dev/x?baud=%ff", "option baud"),
        ("grbl+serial://user@host", "location"),
    ],
)
def test_malformed_addresses_name_the_part(text: str, part: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text)
    assert info.value.part == part
    assert isinstance(info.value, ValueError) and isinstance(info.value, ConfigError)


def test_unknown_option_is_named_with_suggestion() -> None:
    address = parse_address("grbl+serial:///dev/ttyUSB0?baudrate=115200")
    transport_only = MachineAddress(None, address.transport, address.location, address.options)
    with pytest.raises(AddressError) as info:
        validate_options(transport_only)
    assert info.value.part == "option baudrate"
    assert info.value.hint == "did you mean baud?"


def test_bad_option_value_is_named() -> None:
    with pytest.raises(AddressError, match="option parity") as info:
        validate_options(MachineAddress(None, "serial", "/dev/x", (("parity", "Q"),)))
    assert info.value.part == "option parity"


def test_options_are_typed() -> None:
    opts = validate_options(MachineAddress(None, "serial", "/dev/x", (("baud", "9600"), ("rtscts", "true"))))
    assert opts.transport.model_dump()["baud"] == 9600
    assert opts.transport.model_dump()["rtscts"] is True


names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
values = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
options = st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), values, max_size=4)
serial_locations = st.one_of(
    st.from_regex(r"/dev/tty[A-Za-z0-9]{1,6}", fullmatch=True),
    st.from_regex(r"COM[0-9]{1,3}", fullmatch=True),
)
net_locations = st.tuples(
    st.one_of(st.ip_addresses(v=4).map(str), st.from_regex(r"[a-z][a-z0-9.-]{0,15}", fullmatch=True)),
    st.integers(0, 65535),
).map(lambda hp: f"{hp[0]}:{hp[1]}")


@given(
    st.one_of(
        st.tuples(names, st.just("serial"), serial_locations, options),
        st.tuples(names, st.sampled_from(["tcp", "modbus-tcp", "rfc2217"]), net_locations, options),
        st.tuples(
            st.none(), st.just("sim"), st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True), options
        ),
    )
)
def test_format_parse_round_trip(parts: tuple[str | None, str, str, dict[str, str]]) -> None:
    protocol, transport, location, opts = parts
    address = MachineAddress(protocol, transport, location, tuple(opts.items()))
    assert parse_address(str(address)) == address


@given(st.text(max_size=80))
def test_garbage_raises_only_address_error(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError:
        return
    assert parse_address(str(address)) == address


@given(st.from_regex(r"[a-z+-]{1,12}://[ -~]{0,40}", fullmatch=True))
def test_url_shaped_garbage_raises_only_address_error(text: str) -> None:
    try:
        parse_address(text)
    except AddressError:
        pass
