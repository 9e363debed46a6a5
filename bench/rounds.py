"""What every bench shares so that its figures cannot flatter: alternating rounds, median and spread, the machine's load.

A bench runs its baseline and its subject in alternating rounds in the same time window (`alternate`), keeps one
`Round` per measurement with the 1-minute load average before and after it, and reports each figure as the median of
at least three rounds with its range (`Summary`). `busy_warning` says when the machine was busy enough to make the
figures doubtful. The CPU a process, its threads or the whole machine used comes from /proc (`process_cpu_s`,
`thread_cpu_s`, `machine_busy_s`; nothing where /proc is missing): a bench takes it before and after a window.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

MIN_ROUNDS = 3
BUSY_LOAD_PER_CORE = 0.5  # a 1-minute load average above this share of the cores, outside the bench itself, is "busy"
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def load_average() -> float:
    """The machine's 1-minute load average (0 where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def cores() -> int:
    return os.cpu_count() or 1


def alternate(subjects: Sequence[str], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, subject) pairs: every subject once per round, the order reversed every other round (ABBA...), so a
    drift of the machine during the run shows as spread, not as a difference between subjects."""
    if rounds < 1:
        raise ValueError("at least one round")
    for number in range(rounds):
        order = list(subjects) if number % 2 == 0 else list(reversed(subjects))
        for subject in order:
            yield number, subject


@dataclass
class Round:
    """One measurement of one subject: its figures by name and the load average around it."""

    subject: str
    number: int
    figures: dict[str, float] = field(default_factory=dict)
    load_before: float = field(default_factory=load_average)
    load_after: float = 0.0

    def done(self, **figures: float) -> Round:
        self.figures.update(figures)
        self.load_after = load_average()
        return self


@dataclass(frozen=True)
class Summary:
    """The median of a figure over rounds, and its range."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def text(self, fmt: str = "{:.1f}", unit: str = "") -> str:
        """`median (low-high)`, e.g. `1,234 (1,180-1,301) req/s`."""
        if self.count == 0:
            return "n/a"
        spread = f" ({fmt.format(self.low)}-{fmt.format(self.high)})" if self.count > 1 else ""
        return f"{fmt.format(self.median)}{spread}{unit and ' ' + unit}"


def summarize(rounds: Sequence[Round], subject: str, figure: str) -> Summary:
    return Summary.of([r.figures[figure] for r in rounds if r.subject == subject and figure in r.figures])


def ratios(rounds: Sequence[Round], subject: str, baseline: str, figure: str) -> Summary:
    """The subject's figure over the baseline's, round by round (each pair measured in the same window)."""
    base = {r.number: r.figures[figure] for r in rounds if r.subject == baseline and figure in r.figures}
    values = [
        r.figures[figure] / base[r.number] for r in rounds if r.subject == subject and figure in r.figures and base.get(r.number)
    ]
    return Summary.of(values)


def load_text(rounds: Sequence[Round]) -> str:
    """The load averages seen over the rounds, e.g. `load 0.21-1.85 (2 cores)`."""
    seen = [r.load_before for r in rounds] + [r.load_after for r in rounds if r.load_after]
    if not seen:
        return f"load n/a ({cores()} cores)"
    return f"load {min(seen):.2f}-{max(seen):.2f} ({cores()} cores)"


def busy_warning(load_before_start: float) -> str | None:
    """A warning when the machine was already busy before the bench started its own processes."""
    if load_before_start > BUSY_LOAD_PER_CORE * cores():
        return (
            f"WARNING: the machine was busy before the bench started (load {load_before_start:.2f} on {cores()} cores): "
            "the figures below are doubtful; run it again on a quiet machine"
        )
    return None


# -- CPU from /proc ----------------------------------------------------------------


def stat_cpu_s(path: str) -> float | None:
    """User plus system CPU seconds from a /proc `stat` file (a process's or one thread's); None if unreadable."""
    try:
        with open(path, encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        # After the command name: state is fields[0], utime is field 14 of the full line -> [11], stime [12].
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds of a process, all its threads; None where /proc is missing or the process is gone."""
    return stat_cpu_s(f"/proc/{pid}/stat")


def thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds per thread of a process (tid -> seconds); empty where /proc is missing."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            value = stat_cpu_s(f"/proc/{pid}/task/{tid}/stat")
            if value is not None:
                out[int(tid)] = value
    return out


def machine_busy_s() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine since boot, all cores, from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            values = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK
