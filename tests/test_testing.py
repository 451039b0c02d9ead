"""ScriptedTransport catches a driver that writes the wrong bytes."""

from __future__ import annotations

import pytest

from markctl.testing import ScriptedTransport


async def test_script_passes_when_bytes_match_in_any_chunking() -> None:
    t = ScriptedTransport([(b"?", b"<Idle>\r\n"), (b"$I\n", b"ok\r\n")], greeting=b"Grbl\r\n")
    await t.open()
    assert await t.read(1) == b"Grbl\r\n"
    await t.write(b"?$")
    await t.write(b"I\n")
    assert await t.read(1) == b"<Idle>\r\n"
    assert await t.read(1) == b"ok\r\n"
    t.assert_done()


async def test_divergence_names_the_byte() -> None:
    t = ScriptedTransport([(b"G1 X10\n", b"ok\r\n")])
    await t.open()
    await t.write(b"G1 X11\n")
    with pytest.raises(AssertionError, match="first difference at byte 5"):
        t.assert_done()


async def test_missing_and_extra_bytes_fail() -> None:
    t = ScriptedTransport([(b"a", b""), (b"b", b"")])
    await t.open()
    await t.write(b"a")
    with pytest.raises(AssertionError, match="stopped at step 1"):
        t.assert_done()
    await t.write(b"bc")
    with pytest.raises(AssertionError, match="unexpected bytes"):
        t.assert_done()
