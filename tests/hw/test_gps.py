"""The GPS driver: NMEA checksums and sentences, and a receiver's stream over a pty giving the clock offset."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hark_fleet.hw.errors import ProtocolError
from hark_fleet.hw.gps import BadChecksum, Gps, GpsTime, nmea_checksum, parse_sentence, rmc_time, zda_time

from tests.harness import wait_for
from tests.hw.conftest import PtyDevice

# Published examples with their checksums (NMEA reference texts), so the checksum is not checked against itself.
RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
ZDA = "$GPZDA,201530.00,04,07,2002,00,00*60"


def sentence(body: str) -> str:
    return f"${body}*{nmea_checksum(body)}\r\n"


def rmc(at: datetime, status: str = "A") -> str:
    return sentence(f"GNRMC,{at:%H%M%S}.{at.microsecond // 10000:02d},{status},5130.000,N,00007.000,W,0.0,0.0,{at:%d%m%y},,,A")


def zda(at: datetime) -> str:
    return sentence(f"GPZDA,{at:%H%M%S}.{at.microsecond // 10000:02d},{at:%d},{at:%m},{at:%Y},00,00")


def gga(quality: int, satellites: int) -> str:
    return sentence(f"GPGGA,120000.00,5130.000,N,00007.000,W,{quality},{satellites:02d},0.9,45.0,M,47.0,M,,")


class Times:
    def __init__(self) -> None:
        self.readings: list[GpsTime] = []
        self.changed = threading.Condition()

    def __call__(self, reading: GpsTime) -> None:
        with self.changed:
            self.readings.append(reading)
            self.changed.notify_all()


@pytest.fixture
def times() -> Times:
    return Times()


@pytest.fixture
def gps(pty_device: PtyDevice, times: Times) -> Iterator[Gps]:
    receiver = Gps(pty_device.port, on_time=times, backoff_s=0.02, backoff_max_s=0.1)
    receiver.start()
    assert receiver.channel.wait_connected(2)
    yield receiver
    receiver.stop()


def test_published_sentences_pass_their_checksums_and_give_their_time() -> None:
    utc, valid = rmc_time(parse_sentence(RMC))
    assert (utc, valid) == (datetime(1994, 3, 23, 12, 35, 19, tzinfo=UTC), True)
    assert zda_time(parse_sentence(ZDA)) == datetime(2002, 7, 4, 20, 15, 30, tzinfo=UTC)
    assert parse_sentence(GGA).fields[5:7] == ("1", "08")


def test_checksums_are_required_and_lines_that_are_not_sentences_refused() -> None:
    with pytest.raises(BadChecksum):
        parse_sentence(RMC.replace("*6A", "*6B"))
    with pytest.raises(BadChecksum):
        parse_sentence(RMC.split("*")[0])
    with pytest.raises(BadChecksum):
        parse_sentence(RMC.replace("4807", "4808"))  # one digit flipped in transit
    for garbage in ("", "GPRMC,1,2*00", "$GP", "\x00\x00$", sentence("PGRME,15.0,M,45.0,M,25.0,M")):
        with pytest.raises(ProtocolError):
            parse_sentence(garbage)


def test_bad_dates_and_times_are_refused() -> None:
    with pytest.raises(ProtocolError):
        rmc_time(parse_sentence(sentence("GPRMC,253519,A,,,,,,,230394,,")))
    with pytest.raises(ProtocolError):
        rmc_time(parse_sentence(sentence("GPRMC,123519,A,,,,,,,310294,,")))  # 31 February
    with pytest.raises(ProtocolError):
        zda_time(parse_sentence(sentence("GPZDA,123519,04,07,,00,00")))


def test_a_receiver_stream_gives_valid_times_and_the_clock_offset(pty_device: PtyDevice, gps: Gps, times: Times) -> None:
    ahead_s = 2.5  # the GPS says it is 2.5 s later than this machine's clock: the clock is behind
    start = datetime.now(UTC) + timedelta(seconds=ahead_s)
    stream = [
        b"0,M,,*5C\r\n",  # the end of a sentence the driver joined halfway
        b"\x1b\x7f garbage \x00\r\n",
        gga(0, 0).encode(),
        rmc(start, status="V").encode(),  # no fix yet: a time, but not one to trust
        sentence("GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00").encode(),  # other sentences: ignored
        RMC.replace("*6A", "*00").encode() + b"\r\n",  # a bad checksum
        gga(1, 9).encode(),
    ]
    for chunk in stream:
        pty_device.write(chunk)
    now = datetime.now(UTC) + timedelta(seconds=ahead_s)
    line = rmc(now)
    pty_device.write(line[:20])  # one sentence split across two reads
    pty_device.write(line[20:] + zda(now))
    with times.changed:
        assert times.changed.wait_for(lambda: len(times.readings) == 3, 2)
    void, fixed, zda_reading = times.readings
    assert (void.sentence, void.valid, void.fix_quality) == ("RMC", False, 0)
    assert (fixed.sentence, fixed.valid, fixed.fix_quality, fixed.satellites) == ("RMC", True, 1, 9)
    assert (zda_reading.sentence, zda_reading.valid) == ("ZDA", True)
    for reading in (fixed, zda_reading):
        assert reading.offset_ms == pytest.approx(ahead_s * 1000, abs=300)
    offset = gps.clock_offset_ms(time.time())
    assert offset == pytest.approx(ahead_s * 1000, abs=300)
    assert gps.clock_offset_ms(time.time() + 60) is None  # too old to use
    assert (gps.counters.sentences, gps.counters.bad_checksum, gps.counters.garbage, gps.counters.ignored) == (5, 1, 2, 1)


def test_a_receiver_that_loses_its_fix_gives_no_offset(pty_device: PtyDevice, gps: Gps, times: Times) -> None:
    now = datetime.now(UTC)
    pty_device.write(rmc(now) + rmc(now, status="V"))
    wait_for(lambda: len(times.readings) == 2, 2, "two times")
    assert gps.clock_offset_ms(time.time()) is None


def test_a_receiver_plugged_back_is_read_again(pty_device: PtyDevice, gps: Gps, times: Times) -> None:
    pty_device.write(rmc(datetime.now(UTC)) + "$GPRMC,1235")  # unplugged halfway through a sentence
    wait_for(lambda: len(times.readings) == 1, 2, "the first time")
    pty_device.unplug()
    wait_for(lambda: not gps.connected, 2, "the receiver to be gone")
    pty_device.plug()
    assert gps.channel.wait_connected(2)
    pty_device.write(zda(datetime.now(UTC)))
    wait_for(lambda: len(times.readings) == 2, 2, "a time after the replug")
    assert times.readings[-1].sentence == "ZDA"
    assert gps.channel.counters.dropped == 1
