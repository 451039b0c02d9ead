"""The GRBL codec byte for byte (PROTOCOLS.md §1.1, §1.3-§1.6, §2), and never anything but ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from markctl.drivers.grbl.codec import (
    RT,
    AlarmMessage,
    Bracket,
    BuildOptions,
    BuildVersion,
    ErrorResponse,
    Feedback,
    LineDecoder,
    Ok,
    ParserState,
    Setting,
    StartupLine,
    StatusReport,
    Welcome,
    encode_line,
    is_response,
    needs_send_response,
    override_bytes,
    parse_line,
    parse_status,
)
from markctl.errors import ProtocolError


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"ok", Ok()),
        (b"error:9", ErrorResponse(9)),
        (b"error:79", ErrorResponse(79)),  # grblHAL codes beyond Grbl's are still responses
        (b"ALARM:3", AlarmMessage(3)),
        (b"ALARM:22", AlarmMessage(22)),
        (b"Grbl 1.1h ['$' for help]", Welcome("grbl", "1.1h", "Grbl 1.1h ['$' for help]")),
        (
            b"GrblHAL 1.1f ['$' or '$HELP' for help]",
            Welcome("grblhal", "1.1f", "GrblHAL 1.1f ['$' or '$HELP' for help]"),
        ),
        (
            b"Grbl 3.9 [FluidNC v3.9.5 (esp32-wifi) '$' for help]",
            Welcome("fluidnc", "v3.9.5", "Grbl 3.9 [FluidNC v3.9.5 (esp32-wifi) '$' for help]"),
        ),
        (b"[MSG:'$H'|'$X' to unlock]", Feedback("'$H'|'$X' to unlock")),
        (b"[MSG:INFO: Connecting to STA]", Feedback("INFO: Connecting to STA")),
        (
            b"[GC:G0 G54 G17 G21 G90 G94 M5 M9 T0 F0 S0]",
            ParserState(("G0", "G54", "G17", "G21", "G90", "G94", "M5", "M9", "T0", "F0", "S0")),
        ),
        (b"[VER:1.1h.20190830:]", BuildVersion("1.1h.20190830", "")),
        (b"[VER:1.1h.20190830:my engraver]", BuildVersion("1.1h.20190830", "my engraver")),
        (b"[OPT:V,15,128]", BuildOptions("V", 15, 128)),
        (b"[OPT:VNMSL,35,1024,3,0]", BuildOptions("VNMSL", 35, 1024, ("3", "0"))),
        (b"[OPT:PHS]", BuildOptions("PHS", None, None)),
        (b"[FIRMWARE:grblHAL]", Bracket("FIRMWARE", "grblHAL")),
        (b"[G54:0.000,0.000,0.000]", Bracket("G54", "0.000,0.000,0.000")),
        (
            b"[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x]",
            Bracket("HLP", "$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x"),
        ),
        (b"$30=1000", Setting("30", "1000")),
        (b"$N0=G54G20", Setting("N0", "G54G20")),
        (b"$Report/Interval=200", Setting("Report/Interval", "200")),
        (b">G54G20:ok", StartupLine("G54G20", None)),
        (b">G54X:error:26", StartupLine("G54X", 26)),
    ],
)
def test_lines_parse_to_messages(raw: bytes, message: object) -> None:
    assert parse_line(raw) == message


def test_only_ok_and_error_are_responses() -> None:
    assert is_response(Ok()) and is_response(ErrorResponse(1))
    assert not is_response(AlarmMessage(1)) and not is_response(StartupLine("G20", None))


def test_status_with_every_field() -> None:
    raw = b"<Hold:1|WPos:1.000,-2.500,0.000|Bf:14,120|Ln:99|FS:1200,450|Pn:XYZPDHRS|WCO:10.000,20.000,0.000|Ov:110,50,90|A:SF>"
    report = parse_status(raw)
    assert report == StatusReport(
        state="Hold",
        substate=1,
        wpos=(1.0, -2.5, 0.0),
        buffer=(14, 120),
        line_number=99,
        feed=1200.0,
        spindle=450.0,
        pins="XYZPDHRS",
        wco=(10.0, 20.0, 0.0),
        overrides=(110, 50, 90),
        accessories="SF",
    )
    assert report.raw_state == "Hold:1"
    assert report.position(None) == ((11.0, 17.5, 0.0), (1.0, -2.5, 0.0))


def test_status_minimal_and_feed_only() -> None:
    report = parse_status(b"<Idle|MPos:0.000,0.000,0.000|F:0>")
    assert report.state == "Idle" and report.feed == 0.0 and report.spindle is None
    # WPos derives from a WCO cached from an earlier report (§1.4 "cache the last WCO").
    assert report.position((1.0, 1.0, 0.0))[1] == (-1.0, -1.0, 0.0)


def test_dialect_extras_are_kept_not_fatal() -> None:
    report = parse_status(
        b"<Run|MPos:1.000,2.000,3.000,4.000|FS:500,0|WCS:G54|H:1,7|SD:42.5,/job.nc|Sc:XY|MPG:0|Heap:1000|TLR>"
    )
    assert report.mpos == (1.0, 2.0, 3.0, 4.0)
    assert report.extras == {
        "WCS": "G54",
        "H": "1,7",
        "SD": "42.5,/job.nc",
        "Sc": "XY",
        "MPG": "0",
        "Heap": "1000",
        "TLR": "",
    }
    assert parse_status(b"<Tool|MPos:0,0,0>").state == "Tool"


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        (b"<Idle|MPos:0.000,x.000,0.000>", 17),  # names the bad number
        (b"<Bored|MPos:0,0,0>", 1),
        (b"<Idle|FS:0,0>", 5),  # no position
        (b"<Idle|MPos:0,0,0", 15),  # no closing bracket
        (b"<Idle|Bf:1|MPos:0,0,0>", 9),
        (b"ok\xef", 2),  # a garbled byte is named
        (b"error:x", 6),
        (b"Hello", 0),
    ],
)
def test_protocol_errors_name_the_byte(raw: bytes, offset: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_line(raw)
    assert info.value.offset == offset


def test_decoder_splits_crlf_and_reports_bad_lines_in_order() -> None:
    decoder = LineDecoder()
    out = decoder.feed(b"\r\nGrbl 1.1h ['$' for help]\r\nok\r\ner")
    assert out == [Welcome("grbl", "1.1h", "Grbl 1.1h ['$' for help]"), Ok()]
    out = decoder.feed(b"ror:20\r\nO\x8bk\r\n<Idle|MPos:0,0,0|FS:0,0>\n")
    assert out[0] == ErrorResponse(20)
    assert isinstance(out[1], ProtocolError) and out[1].offset == 1
    assert isinstance(out[2], StatusReport)


def test_decoder_bounds_a_line_without_lf() -> None:
    decoder = LineDecoder(max_line=32)
    out = decoder.feed(b"x" * 40)
    assert len(out) == 1 and isinstance(out[0], ProtocolError)
    assert decoder.feed(b"ok\n") == [Ok()]


@pytest.mark.parametrize(
    ("line", "alone"),
    [
        ("$32=1", True),
        ("$N0=G20", True),
        ("$I=my machine", True),
        ("$RST=*", True),
        ("G10 L2 P1 X0 Y0", True),
        ("G10L20P0X5", True),
        ("g28.1", True),
        ("G30.1 (store)", True),
        ("$$", False),
        ("$J=G91X1F100", False),
        ("G1X10Y10F600", False),
        ("G10L1P1", False),
        ("G28", False),
    ],
)
def test_eeprom_writing_lines_are_sent_alone(line: str, alone: bool) -> None:
    assert needs_send_response(line) is alone


def test_encode_line() -> None:
    assert encode_line("  G1X1 ") == b"G1X1\n"
    with pytest.raises(ValueError, match="realtime"):
        encode_line("G1X1 (why?)")
    with pytest.raises(ValueError, match="one line"):
        encode_line("G1\nG2")
    with pytest.raises(ValueError, match="at most 79"):
        encode_line("G1X" + "1" * 80, max_chars=80)


def test_override_bytes() -> None:
    assert override_bytes("feed", 100) == bytes([RT.FEED_100])
    assert override_bytes("feed", 150) == bytes([0x90] + [0x91] * 5)
    assert override_bytes("power", 37) == bytes([0x99] + [0x9B] * 6 + [0x9D] * 3)
    assert override_bytes("power", 200) == bytes([0x99] + [0x9A] * 10)
    with pytest.raises(ValueError):
        override_bytes("feed", 5)
    with pytest.raises(ValueError):
        override_bytes("rapid", 50)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_parse_line_raises_only_protocol_error(raw: bytes) -> None:
    try:
        parse_line(raw)
    except ProtocolError as exc:
        assert exc.offset is None or 0 <= exc.offset < max(1, len(raw))


_STATUS_ALPHABET = st.sampled_from(list(b"<>|:,.-0123456789IdleRunHoldMPosWFSBfOvAPnCOLn\r\n\x00\xff "))


@settings(max_examples=400, deadline=None)
@given(st.lists(_STATUS_ALPHABET, max_size=80).map(bytes))
def test_parse_status_raises_only_protocol_error(raw: bytes) -> None:
    try:
        parse_status(b"<" + raw)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_parse_status_on_arbitrary_bytes_raises_only_protocol_error(raw: bytes) -> None:
    try:
        parse_status(raw)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_decoder_never_raises(chunks: list[bytes]) -> None:
    decoder = LineDecoder(max_line=64)
    for chunk in chunks:
        for item in decoder.feed(chunk):
            assert isinstance(item, ProtocolError) or item is not None
