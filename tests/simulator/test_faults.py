"""Fault specs parse, and bad ones are refused naming the item."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from markctl.simulator.faults import Fault, FaultSpecError, parse_faults

KINDS = {"disconnect", "garble", "silence", "alarm", "door", "slow"}


def test_parses_the_documented_examples() -> None:
    faults = parse_faults("disconnect@line:40, garble@byte:1200,alarm@t:2.5=1,slow@t:0=0.25", KINDS)
    assert faults == (
        Fault("disconnect", "line", 40),
        Fault("garble", "byte", 1200),
        Fault("alarm", "t", 2.5, "1"),
        Fault("slow", "t", 0, "0.25"),
    )
    assert faults[2].arg_int(0) == 1 and faults[3].arg_float(0) == 0.25
    assert [str(f) for f in faults] == [
        "disconnect@line:40",
        "garble@byte:1200",
        "alarm@t:2.5=1",
        "slow@t:0=0.25",
    ]
    assert parse_faults("", KINDS) == ()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("disconect@line:4", "unknown kind 'disconect'.*did you mean disconnect"),
        ("door@when:4", "unknown trigger 'when'"),
        ("door", "expected kind@trigger:value"),
        ("alarm@t:1=x", "must be a number"),
        ("door@t:-1", "expected kind@trigger:value"),
    ],
)
def test_bad_specs_name_the_item(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        parse_faults(spec, KINDS)


@given(st.text(max_size=40))
def test_garbage_raises_only_fault_spec_error(spec: str) -> None:
    try:
        parse_faults(spec, KINDS)
    except FaultSpecError:
        pass
