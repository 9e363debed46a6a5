"""An NMEA 0183 GPS receiver as a time source: UTC from RMC and ZDA, fix quality from GGA.

Protocol: the receiver sends sentences `$<talker><type>,<fields>*<checksum>` ending in
`\\r\\n` (4800 or 9600 baud; 9600 by default here). The checksum (two hex digits, the XOR of
every character between `$` and `*`) is required: a sentence without one or with a wrong one
is dropped and counted in `bad_checksum`. Lines that are not sentences (noise, a line cut
short when the receiver was plugged in mid-sentence) are counted in `garbage`; sentence
types other than RMC, ZDA and GGA in `ignored`. Any talker is accepted (GP, GN, GL, GA, BD).

    $GPRMC,hhmmss.ss,A|V,lat,N,lon,E,knots,course,ddmmyy,...   time + date; A = valid fix
    $GPZDA,hhmmss.ss,dd,mm,yyyy,zh,zm                           time + four-digit year
    $GPGGA,hhmmss.ss,lat,N,lon,E,quality,satellites,...         quality 0 = no fix

Each RMC or ZDA sentence gives a `GpsTime`: the UTC time the receiver states, the system
time (`time.time()`) when the line was read, and whether the receiver has a fix (RMC status
`A`, or the last GGA with quality above 0; a ZDA takes the last known fix). Then
`offset_ms = (gps_time - received_at) * 1000` is how far the system clock is behind. The
figure includes the receiver's output delay and the serial transfer (tens to a few hundred
milliseconds without a PPS line), fine for spotting a clock that is seconds off but not a
substitute for NTP or PPS. Hand parsing rather than `pynmea2` (last release 2023, checksums
optional by default): three sentence types, every check explicit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import reduce

from hark_fleet.hw.errors import ProtocolError
from hark_fleet.hw.serial_line import LineChannel, call_safely

log = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 9600
TIME_SENTENCES = ("RMC", "ZDA")
USED_SENTENCES = (*TIME_SENTENCES, "GGA")


class BadChecksum(ProtocolError):
    """A sentence whose checksum is missing or does not match."""


@dataclass(frozen=True, slots=True)
class Sentence:
    talker: str
    kind: str
    fields: tuple[str, ...]  # after the address field


@dataclass(frozen=True, slots=True)
class GpsTime:
    """UTC time from the receiver with the system time (Unix seconds) at which its line was read."""

    utc: datetime
    received_at: float
    sentence: str
    valid: bool
    fix_quality: int | None
    satellites: int | None

    @property
    def offset_ms(self) -> float:
        """How far the system clock is behind the GPS time, in milliseconds (negative: ahead)."""
        return (self.utc.timestamp() - self.received_at) * 1000.0


@dataclass(slots=True)
class GpsCounters:
    sentences: int = 0
    bad_checksum: int = 0
    garbage: int = 0
    ignored: int = 0


def nmea_checksum(body: str) -> str:
    """The two-hex-digit checksum of the text between `$` and `*`."""
    return f"{reduce(lambda acc, ch: acc ^ ord(ch), body, 0):02X}"


def parse_sentence(line: str) -> Sentence:
    """Split and check one NMEA line; BadChecksum or ProtocolError when it is not a good sentence."""
    text = line.strip()
    if not text.startswith("$") or len(text) < 7:
        raise ProtocolError(f"not an NMEA sentence: {text[:40]!r}")
    body, star, checksum = text[1:].partition("*")
    if not star or len(checksum) != 2:
        raise BadChecksum(f"no checksum: {text[:40]!r}")
    if checksum.upper() != nmea_checksum(body):
        raise BadChecksum(f"checksum {checksum} does not match {nmea_checksum(body)}")
    address, *fields = body.split(",")
    if len(address) != 5 or not address.isalnum() or address.startswith("P"):
        raise ProtocolError(f"not a talker sentence: {address!r}")
    return Sentence(address[:2], address[2:], tuple(fields))


def _time_of_day(raw: str) -> timedelta:
    """`hhmmss[.sss]` as the time since midnight."""
    if len(raw) < 6 or not raw[:6].isdigit():
        raise ProtocolError(f"bad time {raw!r}")
    hours, minutes, seconds = int(raw[0:2]), int(raw[2:4]), float(raw[4:])
    if hours > 23 or minutes > 59 or not 0 <= seconds < 60:
        raise ProtocolError(f"bad time {raw!r}")
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _midnight(year: int, month: int, day: int) -> datetime:
    try:
        return datetime(year, month, day, tzinfo=UTC)
    except ValueError as err:
        raise ProtocolError(f"bad date {year}-{month}-{day}") from err


def rmc_time(sentence: Sentence) -> tuple[datetime, bool]:
    """UTC time and fix validity of an RMC sentence."""
    fields = sentence.fields
    if len(fields) < 9 or not fields[0] or len(fields[8]) != 6 or not fields[8].isdigit():
        raise ProtocolError("RMC without time or date")
    date = fields[8]
    year = int(date[4:6])
    year += 2000 if year < 80 else 1900  # two-digit years: GPS time began in 1980
    day = _midnight(year, int(date[2:4]), int(date[0:2]))
    valid = fields[1] == "A" and (len(fields) < 12 or fields[11] != "N")
    return day + _time_of_day(fields[0]), valid


def zda_time(sentence: Sentence) -> datetime:
    """UTC time of a ZDA sentence."""
    fields = sentence.fields
    if len(fields) < 4 or not fields[0] or not all(f.isdigit() for f in fields[1:4]):
        raise ProtocolError("ZDA without time or date")
    return _midnight(int(fields[3]), int(fields[2]), int(fields[1])) + _time_of_day(fields[0])


def gga_fix(sentence: Sentence) -> tuple[int, int | None]:
    """Fix quality (0 none, 1 GPS, 2 DGPS, 4/5 RTK, 6 estimated) and satellites in use of a GGA sentence."""
    fields = sentence.fields
    if len(fields) < 7 or not fields[5].isdigit():
        raise ProtocolError("GGA without fix quality")
    satellites = int(fields[6]) if fields[6].isdigit() else None
    return int(fields[5]), satellites


class Gps:
    """Reads the receiver on its own thread; `on_time(GpsTime)` runs there for every RMC/ZDA time."""

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        on_time: Callable[[GpsTime], None] | None = None,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
    ) -> None:
        self.channel = LineChannel("gps", port, self._line, baudrate=baudrate, backoff_s=backoff_s, backoff_max_s=backoff_max_s)
        self.counters = GpsCounters()
        self._on_time = on_time
        self._lock = threading.Lock()
        self._fix_valid = False
        self._fix_quality: int | None = None
        self._satellites: int | None = None
        self._latest: GpsTime | None = None

    def start(self) -> None:
        self.channel.start()

    def stop(self, timeout: float = 2.0) -> None:
        self.channel.stop(timeout)

    @property
    def connected(self) -> bool:
        return self.channel.connected

    def latest(self) -> GpsTime | None:
        """The last time the receiver reported (valid or not), or None."""
        with self._lock:
            return self._latest

    def clock_offset_ms(self, now: float, max_age_s: float = 5.0) -> float | None:
        """The clock offset from the last valid time read within `max_age_s` of `now` (Unix seconds), else None."""
        latest = self.latest()
        if latest is None or not latest.valid or now - latest.received_at > max_age_s:
            return None
        return latest.offset_ms

    def _line(self, text: str, received_at: float) -> None:
        try:
            sentence = parse_sentence(text)
        except BadChecksum as err:
            self.counters.bad_checksum += 1
            log.debug("gps: %s", err)
            return
        except ProtocolError as err:
            self.counters.garbage += 1
            log.debug("gps: %s", err)
            return
        if sentence.kind not in USED_SENTENCES:
            self.counters.ignored += 1
            return
        try:
            reading = self._read(sentence, received_at)
        except ProtocolError as err:
            self.counters.garbage += 1
            log.debug("gps: %s", err)
            return
        self.counters.sentences += 1
        if reading is not None:
            call_safely("gps", self._on_time, reading)

    def _read(self, sentence: Sentence, received_at: float) -> GpsTime | None:
        if sentence.kind == "GGA":
            quality, satellites = gga_fix(sentence)
            with self._lock:
                self._fix_quality, self._satellites = quality, satellites
                self._fix_valid = quality > 0
            return None
        if sentence.kind == "RMC":
            utc, valid = rmc_time(sentence)
            with self._lock:
                self._fix_valid = valid
        else:
            utc = zda_time(sentence)
        with self._lock:
            reading = GpsTime(utc, received_at, sentence.kind, self._fix_valid, self._fix_quality, self._satellites)
            self._latest = reading
        return reading
