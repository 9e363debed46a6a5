"""Audio source strings (`KIND:TARGET?key=value&...`), parsed and checked; shared by the node and audio capture."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl

KINDS = ("sounddevice", "pyaudio", "file", "synthetic")
SYNTHETIC_SIGNALS = ("sine", "noise", "silence", "sweep", "stuck", "click")
# step_s/step_db: the level changes by step_db after step_s seconds of capture (a test's failing microphone)
# period: click only, a 1 ms click at every whole multiple of `period` seconds of the wall clock (live listen's delay)
SYNTHETIC_OPTIONS = ("freq", "dbfs", "channels", "rate", "step_s", "step_db", "period")
CAPTURE_OPTIONS = ("channels", "rate")
PORTAUDIO_OPTIONS = ("channels", "rate", "format")
SAMPLE_FORMATS = ("float32", "int32", "int16")
MIN_RATE, MAX_RATE = 16_000, 96_000
MAX_CHANNELS = 64
MIN_CLICK_PERIOD_S, MAX_CLICK_PERIOD_S = 0.05, 60.0
CLICK_DBFS = -6.0  # a click's default level: far above a player's detection threshold (0.1)


@dataclass(frozen=True, slots=True)
class AudioSource:
    """Where the node's audio comes from; `signal`, the levels and the level step matter only for `synthetic`."""

    kind: str
    target: str
    channels: int = 2
    rate: int = 48_000
    freq: float = 1000.0
    dbfs: float = -20.0
    sample_format: str = "float32"
    step_s: float | None = None  # synthetic: after this many seconds of capture ...
    step_db: float = 0.0  # ... the level changes by this much (capture opened again: the clock starts again)
    period: float = 1.0  # synthetic click: seconds between clicks, at whole multiples of time.time()
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_synthetic(self) -> bool:
        return self.kind == "synthetic"

    def describe(self) -> str:
        """A short human name, e.g. `synthetic sine 1000 Hz -20 dBFS`."""
        if not self.is_synthetic:
            return f"{self.kind} {self.target}".strip()
        if self.target == "silence":
            return "synthetic silence"
        level = f"{self.dbfs:g} dBFS" + (" RMS" if self.target == "noise" else "")
        if self.step_s is not None and self.step_db:
            level += f", {self.step_db:+g} dB after {self.step_s:g}s"
        if self.target == "click":
            return f"synthetic click every {self.period:g}s {level}"
        if self.target in ("noise", "stuck"):
            return f"synthetic {self.target} {level}"
        return f"synthetic {self.target} {self.freq:g} Hz {level}"


def parse_audio_source(text: str) -> AudioSource:
    """Parse `KIND:TARGET?options`; ValueError says what is wrong."""
    kind, sep, rest = text.strip().partition(":")
    if not sep or kind not in KINDS:
        raise ValueError(f"expected KIND:TARGET with KIND one of {', '.join(KINDS)}")
    target, _, query = rest.partition("?")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as err:
        raise ValueError(f"bad options {query!r}") from err
    allowed = {"synthetic": SYNTHETIC_OPTIONS, "file": CAPTURE_OPTIONS}.get(kind, PORTAUDIO_OPTIONS)
    if kind == "synthetic":
        target = target or "sine"
        if target not in SYNTHETIC_SIGNALS:
            raise ValueError(f"synthetic signal must be one of {', '.join(SYNTHETIC_SIGNALS)}, not {target!r}")
    elif not target:
        raise ValueError(f"{kind}: needs a target, e.g. {kind}:0")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} (known: {', '.join(allowed)})")
    values: dict[str, float | int | str] = {}
    if "format" in options:
        if options["format"] not in SAMPLE_FORMATS:
            raise ValueError(f"option 'format' must be one of {', '.join(SAMPLE_FORMATS)}, not {options['format']!r}")
        values["sample_format"] = options["format"]
    if "channels" in options:
        values["channels"] = _number(options, "channels", int, 1, MAX_CHANNELS)
    if "rate" in options:
        values["rate"] = _number(options, "rate", int, MIN_RATE, MAX_RATE)
    if kind == "synthetic":
        if "freq" in options:
            values["freq"] = _number(options, "freq", float, 1.0, 48_000.0)
        if "dbfs" in options:
            values["dbfs"] = _number(options, "dbfs", float, -200.0, 0.0)
        if "step_s" in options:
            values["step_s"] = _number(options, "step_s", float, 0.0, 86_400.0)
        if "step_db" in options:
            values["step_db"] = _number(options, "step_db", float, -200.0, 200.0)
        if "period" in options:
            if target != "click":
                raise ValueError("option 'period' is for synthetic:click only")
            values["period"] = _number(options, "period", float, MIN_CLICK_PERIOD_S, MAX_CLICK_PERIOD_S)
        if target == "click" and "dbfs" not in options:
            values["dbfs"] = CLICK_DBFS
    return AudioSource(kind=kind, target=target, options=options, **values)  # type: ignore[arg-type]


def _number(options: dict[str, str], key: str, kind: type[int] | type[float], low: float, high: float) -> int | float:
    try:
        value = kind(options[key])
    except ValueError as err:
        raise ValueError(f"option {key!r}: {options[key]!r} is not a number") from err
    if not low <= value <= high:
        raise ValueError(f"option {key!r}: {value} is outside {low:g}..{high:g}")
    return value
