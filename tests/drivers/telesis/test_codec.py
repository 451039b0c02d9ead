"""The Telesis framed codec, byte for byte, for every BCC variant the profile can select.

Expected BCCs are worked out by hand in the comments (frame ``SOH P STX "AB" ETX`` =
01 50 02 41 42 03), not computed by the code under test.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markctl.drivers.telesis import codec
from markctl.drivers.telesis.codec import Ack, Frame, FrameDecoder, Framing, Nak
from markctl.errors import ProtocolError

BODY = b"\x01P\x02AB\x03"

# (bcc, encoding, span) -> BCC bytes
#   type-to-etx: 50 02 41 42 03  xor = 52, sum = 216 = D8
#   soh-to-etx:  01 + the above  xor = 53, sum = 217 = D9
#   stx-to-etx:  02 41 42 03     xor = 02, sum = 136 = 88
VARIANTS = {
    ("xor", "binary", "type-to-etx"): b"\x52",
    ("xor", "binary", "soh-to-etx"): b"\x53",
    ("xor", "binary", "stx-to-etx"): b"\x02",  # equals STX: the BCC is found by position, not by value
    ("xor", "hex", "type-to-etx"): b"52",
    ("xor", "hex", "soh-to-etx"): b"53",
    ("xor", "hex", "stx-to-etx"): b"02",
    ("sum", "binary", "type-to-etx"): b"\xd8",
    ("sum", "binary", "soh-to-etx"): b"\xd9",
    ("sum", "binary", "stx-to-etx"): b"\x88",
    ("sum", "hex", "type-to-etx"): b"D8",
    ("sum", "hex", "soh-to-etx"): b"D9",
    ("sum", "hex", "stx-to-etx"): b"88",
}
FRAMINGS = [Framing(b, e, s) for (b, e, s) in VARIANTS]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("variant", "bcc"), list(VARIANTS.items()), ids=lambda v: "/".join(v) if isinstance(v, tuple) else None
)
def test_bcc_every_variant_byte_for_byte(variant: tuple[str, str, str], bcc: bytes) -> None:
    framing = Framing(*variant)  # type: ignore[arg-type]
    frame = codec.encode_frame(framing, "P", None, b"AB")
    assert frame == BODY + bcc + b"\r"
    decoder = FrameDecoder(framing)
    decoder.feed(frame)
    assert decoder.next_event() == Frame("P", None, b"AB", frame)
    assert decoder.next_event() is None


@pytest.mark.parametrize(("variant", "bcc"), list(VARIANTS.items()))
def test_bcc_mismatch_raises_protocol_error_naming_the_byte(
    variant: tuple[str, str, str], bcc: bytes
) -> None:
    framing = Framing(*variant)  # type: ignore[arg-type]
    wrong = bytes([bcc[0] ^ 0x01]) + bcc[1:]
    decoder = FrameDecoder(framing)
    decoder.feed(BODY + wrong + b"\r" + codec.go(framing))
    with pytest.raises(ProtocolError) as info:
        decoder.next_event()
    assert "BCC mismatch" in str(info.value) and info.value.offset == len(BODY)
    assert decoder.next_event() == Frame("G", None, b"", codec.go(framing))  # resynchronised


def test_commands_with_the_default_framing() -> None:
    f = Framing()  # xor / binary / type-to-etx, as telesis-tmp ships
    # V01 "X": 56 30 31 02 58 03 -> 56^30=66, ^31=57, ^02=55, ^58=0D, ^03=0E
    assert codec.set_field(f, 1, "X") == b"\x01V01\x02X\x03\x0e\r"
    assert (
        codec.set_field(f, 1, "X", type_="1")
        == b"\x01101\x02X\x03" + bytes([0x31 ^ 0x30 ^ 0x31 ^ 0x02 ^ 0x58 ^ 0x03]) + b"\r"
    )
    assert codec.go(f) == b"\x01G\x02\x03F\r"  # 47^02^03 = 46 'F'
    assert codec.reset_online(f) == b"\x01O\x02\x03N\r"  # 4F^02^03 = 4E 'N'
    assert codec.read_status(f) == b"\x01I\x02\x03H\r"  # 49^02^03 = 48 'H'
    assert codec.load_pattern(f, "SERIAL") == b"\x01P\x02SERIAL\x03Q\r"


def test_encoder_refuses_what_cannot_be_framed() -> None:
    f = Framing()
    with pytest.raises(ValueError):
        codec.encode_frame(f, "PP")
    with pytest.raises(ValueError):
        codec.encode_frame(f, "V", 100)
    with pytest.raises(ValueError):
        codec.encode_frame(f, "V", 1, b"A\x03B")
    with pytest.raises(ValueError):
        codec.set_field(f, 0, "A")


def test_decoder_handles_controls_noise_and_chunking() -> None:
    f = Framing()
    status = codec.encode_frame(f, "I", None, b"0A;00;00;0003")
    stream = b"\x00garbage" + b"\x06" + b"\x15" + status
    decoder = FrameDecoder(f)
    events = []
    for byte in stream:  # one byte at a time
        decoder.feed(bytes([byte]))
        while (event := decoder.next_event()) is not None:
            events.append(event)
    assert events == [Ack(), Nak(), Frame("I", None, b"0A;00;00;0003", status)]
    assert decoder.skipped == len(b"\x00garbage")


def test_marker_side_decoder_ignores_ack_bytes() -> None:
    decoder = FrameDecoder(Framing(), controls=False)
    decoder.feed(b"\x06" + codec.go(Framing()))
    assert decoder.next_event() == Frame("G", None, b"", codec.go(Framing()))


@pytest.mark.parametrize(
    ("junk", "why"),
    [
        (b"\x01\x02\x03x\r", "without a message type"),
        (b"\x01P1\x02\x03x\r", "two digits"),
        (b"\x01Pab\x02", "bad frame header"),
        (b"\x01P\x02A\x07B\x03x\r", "control byte"),
        (b"\x01P\x02AB\x03R!", "does not end with CR"),
    ],
)
def test_malformed_frames_raise_and_are_dropped(junk: bytes, why: str) -> None:
    f = Framing()
    decoder = FrameDecoder(f)
    decoder.feed(junk + codec.go(f))
    with pytest.raises(ProtocolError, match=why):
        while decoder.next_event() is None:
            pass
    events = []
    for _ in range(10):
        try:
            event = decoder.next_event()
        except ProtocolError:
            continue
        if event is None:
            break
        events.append(event)
    assert events[-1] == Frame("G", None, b"", codec.go(f))


def test_status_parsing_per_format() -> None:
    bits = {"done": 0, "ready": 1, "pause": 2, "busy": 3, "fault": 4}
    st = codec.parse_status(b"12;80;02;000B", bits, "io-fault-count")  # 0x12 = ready + fault
    assert (st.ready, st.fault, st.busy, st.done, st.pause) == (True, True, False, False, False)
    assert (st.inputs, st.fault_code, st.chars_done) == (0x80, 2, 11)
    plain = codec.parse_status(b"08;00", bits, "io")
    assert plain.busy and plain.fault_code is None and plain.chars_done is None
    with pytest.raises(ProtocolError):
        codec.parse_status(b"08;00", bits, "io-fault")
    with pytest.raises(ProtocolError) as info:
        codec.parse_status(b"0G;00", bits, "io")
    assert info.value.offset == 0


# --- properties -------------------------------------------------------------------------------

printable = st.binary(max_size=80).map(lambda b: bytes(0x20 + x % 95 for x in b))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), framing=st.sampled_from(FRAMINGS), controls=st.booleans())
def test_decoder_raises_only_protocol_error_on_arbitrary_bytes(
    data: bytes, framing: Framing, controls: bool
) -> None:
    decoder = FrameDecoder(framing, controls=controls)
    decoder.feed(data)
    for _ in range(len(data) + 2):
        try:
            if decoder.next_event() is None:
                break
        except ProtocolError:
            continue
    else:
        pytest.fail("decoder did not come to rest")


@settings(max_examples=300, deadline=None)
@given(
    framing=st.sampled_from(FRAMINGS),
    type_=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
    number=st.none() | st.integers(0, 99),
    data=printable,
    noise=st.binary(max_size=20).map(lambda b: bytes(x for x in b if x not in (0x01, 0x06, 0x15))),
    cut=st.integers(0, 200),
)
def test_encode_decode_round_trip(
    framing: Framing, type_: str, number: int | None, data: bytes, noise: bytes, cut: int
) -> None:
    frame = codec.encode_frame(framing, type_, number, data)
    stream = noise + frame
    decoder = FrameDecoder(framing)
    decoder.feed(stream[:cut])
    first = decoder.next_event()
    decoder.feed(stream[cut:])
    event = first or decoder.next_event()
    assert event == Frame(type_, number, data, frame)
    assert decoder.next_event() is None
