"""History that lasts: one summary per node per minute of its meters and of its heartbeat metrics.

The hub folds meter frames and heartbeats in memory and hands over closed minutes; `store_minutes`
writes them for every node in one transaction (merging with a row already stored for the same
minute, as after a restart), never one write per frame or heartbeat.

Several hubs on one PostgreSQL (issue 24): every hub gets every meter frame, so only the holder of the
`history` lease stores meter minutes (`store_minutes`' `check` verifies its fence in the transaction);
heartbeats are shared out between hubs, so each hub holds part of a node's minute and all of them store
theirs: on PostgreSQL one `INSERT ... ON CONFLICT DO UPDATE` merges a part into a row another hub stored
(or stores at the same moment: the database serialises the two on the row) by adding counts, weighting
means by heartbeats and keeping the highest maxima, as `MetricFold` merges them. SQLite keeps the read,
merge and write of one hub. Reads roll the minutes up
into buckets sized by the span asked for (`interval_for`), so an answer stays small; `prune`
removes minutes older than the retention, a bounded batch at a time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import msgspec
import peewee
from hark_fleet.hub.clock import parse_iso
from hark_fleet.hub.cluster.leases import LeaseLost
from hark_fleet.hub.db.models import MeterMinute, MetricMinute, database_proxy
from hark_fleet.hub.errors import InvalidRequest
from hark_fleet.protocol.messages import Heartbeat

MINUTE_S = 60
DAY_S = 86400
# (longest span, bucket): a response holds at most a few thousand points whatever the span.
INTERVALS = ((DAY_S, 60), (7 * DAY_S, 600), (90 * DAY_S, 3600), (366 * DAY_S, DAY_S))
MAX_SPAN_S = INTERVALS[-1][0]
DEFAULT_SPAN_S = DAY_S
METRIC_RANGES_S = {"1h": 3600, "24h": DAY_S, "7d": 7 * DAY_S, "30d": 30 * DAY_S}
FUTURE_SLACK_S = 300  # a heartbeat stamped further ahead than this (a clock far off) stays out of the history
PRUNE_BATCH = 5000  # rows per table per prune call
CHUNK = 400  # rows per INSERT and keys per IN (...): under every backend's limit on bound parameters

NEG_INF = float("-inf")
ChannelSummary = tuple[float | None, float | None, float | None, float | None]  # peak max, peak mean, RMS max, RMS mean


class _OfMinute(Protocol):
    @property
    def minute(self) -> int: ...


F = TypeVar("F")  # a bucket's fold
S = TypeVar("S", bound=_OfMinute)  # one node's summary of one minute


def _db(energy: float) -> float | None:
    return None if energy <= 0.0 else round(10.0 * math.log10(energy), 2)


def _level(value: float) -> float | None:
    return None if value == NEG_INF else round(value, 2)


def _unix(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")  # year 27 is 0027


# -- windows and buckets --------------------------------------------------------------------


def interval_for(span_s: float) -> int:
    """The bucket for a span: 1 min up to a day, 10 min up to a week, 1 h up to 90 days, then a day."""
    for longest, interval in INTERVALS:
        if span_s <= longest:
            return interval
    return INTERVALS[-1][1]


@dataclass(frozen=True, slots=True)
class Window:
    """The time asked for (Unix seconds, `end` excluded), its range name if any, and its bucket size."""

    start: float
    end: float
    interval_s: int
    range: str | None

    @property
    def first_minute(self) -> int:
        """The first minute that overlaps the window."""
        return int(self.start) - int(self.start) % MINUTE_S

    def holds(self, minute: int) -> bool:
        return self.first_minute <= minute < self.end

    def bucket(self, minute: int) -> int:
        return minute - minute % self.interval_s

    def to_api(self) -> dict[str, Any]:
        return {"range": self.range, "from": _iso(self.start), "to": _iso(self.end), "interval_s": self.interval_s}


def window(
    range_name: str | None,
    start: datetime | None,
    end: datetime | None,
    now: float,
    ranges: dict[str, int],
    default: str | None = None,
) -> Window:
    """The window of `range` (ending now) or of `from`/`to` (one of them may be left out); a bad one is a 400."""
    if range_name is not None and (start is not None or end is not None):
        raise InvalidRequest("Give a range or from/to, not both.", fields={"range": "cannot be combined with from or to"})
    if start is None and end is None:
        name = range_name if range_name is not None else default
        if name not in ranges:
            raise InvalidRequest("Unknown range.", fields={"range": f"must be one of {', '.join(ranges)}"})
        span = ranges[name]
        return Window(now - span, now, interval_for(span), name)
    to = _unix(end) if end is not None else now
    since = _unix(start) if start is not None else to - DEFAULT_SPAN_S
    if since >= to:
        raise InvalidRequest("The window is empty.", fields={"from": "must be before to"})
    if to - since > MAX_SPAN_S:
        raise InvalidRequest("The window is too long.", fields={"from": f"at most {MAX_SPAN_S // DAY_S} days before to"})
    return Window(since, to, interval_for(to - since), None)


# -- meters ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterSummary:
    """One node's meter frames over one minute (levels in dBFS, None when silent throughout; stored rounded to 0.01)."""

    node_id: str
    minute: int
    frames: int
    channels: tuple[ChannelSummary, ...]
    momentary_lufs_max: float | None = None
    short_term_lufs_max: float | None = None
    integrated_lufs: float | None = None


class MeterFold:
    """Minute summaries folded into one: highest peak and RMS, energy means weighted by frames, highest loudness."""

    __slots__ = ("frames", "peaks", "peak_energy", "rms_highs", "rms_energy", "momentary", "short_term", "integrated", "_last")

    def __init__(self) -> None:
        self.frames = 0
        self.peaks: list[float] = []
        self.peak_energy: list[float] = []
        self.rms_highs: list[float] = []
        self.rms_energy: list[float] = []
        self.momentary = NEG_INF
        self.short_term = NEG_INF
        self.integrated: float | None = None
        self._last = -1  # the minute the integrated reading comes from

    def add(self, summary: MeterSummary) -> None:
        self.add_minute(
            summary.minute,
            summary.frames,
            summary.channels,
            summary.momentary_lufs_max,
            summary.short_term_lufs_max,
            summary.integrated_lufs,
        )

    def add_minute(
        self,
        minute: int,
        frames: int,
        channels: Sequence[Sequence[float | None]],
        momentary: float | None,
        short_term: float | None,
        integrated: float | None,
    ) -> None:
        """One minute's values, as a summary holds them or as a stored row reads (a month is 43,200 of these)."""
        peaks, peak_energy, rms_highs, rms_energy = self.peaks, self.peak_energy, self.rms_highs, self.rms_energy
        missing = len(channels) - len(peaks)
        if missing > 0:
            peaks += [NEG_INF] * missing
            peak_energy += [0.0] * missing
            rms_highs += [NEG_INF] * missing
            rms_energy += [0.0] * missing
        i = 0
        for peak, peak_mean, rms, rms_mean in channels:
            if peak is not None and peak > peaks[i]:
                peaks[i] = peak
            if rms is not None and rms > rms_highs[i]:
                rms_highs[i] = rms
            if peak_mean is not None:
                peak_energy[i] += 10.0 ** (peak_mean / 10.0) * frames
            if rms_mean is not None:
                rms_energy[i] += 10.0 ** (rms_mean / 10.0) * frames
            i += 1
        self.frames += frames
        if momentary is not None and momentary > self.momentary:
            self.momentary = momentary
        if short_term is not None and short_term > self.short_term:
            self.short_term = short_term
        if integrated is not None and minute >= self._last:
            self.integrated, self._last = integrated, minute

    def channels(self) -> tuple[ChannelSummary, ...]:
        frames = self.frames or 1
        return tuple(
            (
                _level(self.peaks[i]),
                _db(self.peak_energy[i] / frames),
                _level(self.rms_highs[i]),
                _db(self.rms_energy[i] / frames),
            )
            for i in range(len(self.peaks))
        )

    def summary(self, node_id: str, minute: int) -> MeterSummary:
        return MeterSummary(
            node_id, minute, self.frames, self.channels(), _level(self.momentary), _level(self.short_term), self.integrated
        )

    def point(self, bucket: int) -> dict[str, Any]:
        """The API's point: `peak_dbfs` the highest peak and `rms_dbfs` the mean RMS, as in the per-second history."""
        return {
            "ts": _iso(bucket),
            "frames": self.frames,
            "channels": [
                {"index": i, "peak_dbfs": peak, "peak_mean_dbfs": peak_mean, "rms_dbfs": rms_mean, "rms_max_dbfs": rms}
                for i, (peak, peak_mean, rms, rms_mean) in enumerate(self.channels())
            ],
            "momentary_lufs": _level(self.momentary),
            "short_term_lufs": _level(self.short_term),
            "integrated_lufs": self.integrated,
        }


def meter_points(
    summaries: Iterable[MeterSummary], win: Window, folds: dict[int, MeterFold] | None = None
) -> list[dict[str, Any]]:
    """The minutes inside the window rolled up into its buckets (added to `folds`, those already folded), oldest
    first; buckets without frames are left out."""
    folds = fold_minutes({} if folds is None else folds, summaries, win, MeterFold, MeterFold.add)
    return [folds[bucket].point(bucket) for bucket in sorted(folds)]


def fold_minutes(
    folds: dict[int, F], summaries: Iterable[S], win: Window, new: Callable[[], F], add: Callable[[F, S], None]
) -> dict[int, F]:
    """Each minute summary inside the window added to its bucket's fold (made with `new` when missing); `folds` back."""
    for summary in summaries:
        minute = summary.minute
        if win.holds(minute):
            bucket = win.bucket(minute)
            fold = folds.get(bucket)
            if fold is None:
                fold = folds[bucket] = new()
            add(fold, summary)
    return folds


# -- heartbeat metrics ------------------------------------------------------------------------

MEAN, MAX, MIN, MAX_ABS = "mean", "max", "min", "max_abs"


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    aggregates: tuple[str, ...]
    read: Callable[[Heartbeat], float | None]
    integer: bool = False


METRICS: tuple[Metric, ...] = (
    Metric("cpu_pct", (MEAN, MAX), lambda b: b.cpu_pct),
    Metric("memory_used_pct", (MEAN, MAX), lambda b: b.memory.used_pct if b.memory is not None else None),
    Metric("disk_used_pct", (MEAN, MAX), lambda b: b.disk.used_pct if b.disk is not None else None),
    Metric("disk_free_bytes", (MIN,), lambda b: b.disk.free_bytes if b.disk is not None else None, integer=True),
    Metric("temperature_c", (MEAN, MAX), lambda b: b.temperature_c),
    Metric("outbox_depth", (MEAN, MAX), lambda b: b.outbox.depth if b.outbox is not None else None),
    Metric("clock_offset_ms", (MEAN, MAX_ABS), lambda b: b.clock.offset_ms if b.clock is not None else None),
    Metric("load_1m", (MEAN, MAX), lambda b: b.load[0] if b.load else None),
)
COLUMNS: tuple[str, ...] = tuple(f"{m.name}_{a}" for m in METRICS for a in m.aggregates)
_SLOTS: tuple[tuple[int, str], ...] = tuple((i, a) for i, m in enumerate(METRICS) for a in m.aggregates)  # column -> metric


def _finite(value: float | int | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """One node's heartbeats over one minute: `values` in the order of COLUMNS."""

    node_id: str
    minute: int
    samples: int
    values: tuple[float | None, ...]


class MetricFold:
    """Heartbeats, minute summaries or stored partial sums folded into one bucket.

    A mean weighs each minute by its heartbeats; a metric some heartbeats left out is the mean
    of those that had it within their minute.
    """

    __slots__ = ("samples", "sums", "weights", "highs", "lows", "abs_highs")

    def __init__(self) -> None:
        count = len(METRICS)
        self.samples = 0
        self.sums = [0.0] * count
        self.weights = [0] * count
        self.highs: list[float | None] = [None] * count
        self.lows: list[float | None] = [None] * count
        self.abs_highs: list[float | None] = [None] * count

    def _high(self, i: int, value: float | None) -> None:
        if value is not None and (self.highs[i] is None or value > self.highs[i]):  # type: ignore[operator]
            self.highs[i] = value

    def _low(self, i: int, value: float | None) -> None:
        if value is not None and (self.lows[i] is None or value < self.lows[i]):  # type: ignore[operator]
            self.lows[i] = value

    def _abs_high(self, i: int, value: float | None) -> None:
        if value is not None and (self.abs_highs[i] is None or value > self.abs_highs[i]):  # type: ignore[operator]
            self.abs_highs[i] = value

    def add_heartbeat(self, beat: Heartbeat) -> None:
        self.samples += 1
        for i, metric in enumerate(METRICS):
            value = _finite(metric.read(beat))
            if value is None:
                continue
            self.sums[i] += value
            self.weights[i] += 1
            self._high(i, value)
            self._low(i, value)
            self._abs_high(i, abs(value))

    def add_summary(self, summary: MetricSummary) -> None:
        self._add(summary.samples, summary.values, None)

    def add_parts(self, samples: int, values: Sequence[Any], mean_weights: Sequence[Any]) -> None:
        """A stored bucket: for means the sum of mean x samples and its weight, as `metric_folds` selects them."""
        self._add(samples, values, mean_weights)

    def _add(self, samples: int, values: Sequence[Any], mean_weights: Sequence[Any] | None) -> None:
        self.samples += int(samples)
        means = iter(mean_weights) if mean_weights is not None else None
        for (i, aggregate), value in zip(_SLOTS, values, strict=True):
            if aggregate == MEAN:
                if means is not None:
                    weight = int(next(means) or 0)
                    if value is not None and weight:
                        self.sums[i] += float(value)
                        self.weights[i] += weight
                elif value is not None:
                    self.sums[i] += float(value) * samples
                    self.weights[i] += samples
            elif aggregate == MAX:
                self._high(i, None if value is None else float(value))
            elif aggregate == MIN:
                self._low(i, None if value is None else float(value))
            else:
                self._abs_high(i, None if value is None else float(value))

    def value(self, i: int, aggregate: str) -> float | None:
        if aggregate == MEAN:
            return self.sums[i] / self.weights[i] if self.weights[i] else None
        if aggregate == MAX:
            return self.highs[i]
        if aggregate == MIN:
            return self.lows[i]
        return self.abs_highs[i]

    def summary(self, node_id: str, minute: int) -> MetricSummary:
        return MetricSummary(node_id, minute, self.samples, tuple(self.value(i, a) for i, a in _SLOTS))

    def point(self, bucket: int) -> dict[str, Any]:
        point: dict[str, Any] = {"ts": _iso(bucket), "samples": self.samples}
        for i, metric in enumerate(METRICS):
            values = {}
            for aggregate in metric.aggregates:
                value = self.value(i, aggregate)
                if value is not None:
                    value = int(value) if metric.integer else round(value, 2)
                values[aggregate] = value
            point[metric.name] = values
        return point


class HeartbeatMinutes:
    """Applied heartbeats folded per node and minute (of the node's own `ts`: a replayed one lands where it belongs)."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, int], MetricFold] = {}

    def add(self, node_id: str, beat: Heartbeat, now: float, oldest: float) -> bool:
        """Fold one heartbeat; False when it is older than `oldest` or stamped far ahead of `now` (left out)."""
        try:
            sent = _unix(parse_iso(beat.ts))
        except ValueError:
            return False
        if not oldest <= sent <= now + FUTURE_SLACK_S:
            return False
        key = (node_id, int(sent) - int(sent) % MINUTE_S)
        fold = self._open.get(key)
        if fold is None:
            fold = self._open[key] = MetricFold()
        fold.add_heartbeat(beat)
        return True

    def take(self, before: float | None) -> list[MetricSummary]:
        """The minutes that ended by `before` (None: every minute, the one in progress too), taken out."""
        limit = None if before is None else int(before) - int(before) % MINUTE_S
        taken = [key for key in self._open if limit is None or key[1] < limit]
        return [self._open.pop(key).summary(*key) for key in taken]

    def pending(self, node_id: str) -> list[MetricSummary]:
        return [fold.summary(*key) for key, fold in self._open.items() if key[0] == node_id]

    def forget(self, node_id: str) -> None:
        for key in [key for key in self._open if key[0] == node_id]:
            del self._open[key]


def metric_points(folds: dict[int, MetricFold]) -> list[dict[str, Any]]:
    return [folds[bucket].point(bucket) for bucket in sorted(folds)]


# -- storage (on a database worker) -------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _meter_row(summary: MeterSummary) -> dict[str, Any]:
    channels = [[_rounded(v) for v in channel] for channel in summary.channels]
    return {
        "node_id": summary.node_id,
        "minute": summary.minute,
        "frames": summary.frames,
        "channels": msgspec.json.encode(channels).decode(),
        "momentary_lufs_max": _rounded(summary.momentary_lufs_max),
        "short_term_lufs_max": _rounded(summary.short_term_lufs_max),
        "integrated_lufs": _rounded(summary.integrated_lufs),
    }


_CHANNELS = msgspec.json.Decoder(tuple[ChannelSummary, ...])  # made once: decoding with `type=` per row costs 8 µs


def _meter_summary(row: tuple[Any, ...]) -> MeterSummary:
    node_id, minute, frames, channels, momentary, short_term, integrated = row
    return MeterSummary(node_id, int(minute), int(frames), _CHANNELS.decode(channels), momentary, short_term, integrated)


METER_FIELDS = (
    MeterMinute.node_id,
    MeterMinute.minute,
    MeterMinute.frames,
    MeterMinute.channels,
    MeterMinute.momentary_lufs_max,
    MeterMinute.short_term_lufs_max,
    MeterMinute.integrated_lufs,
)
METRIC_FIELDS = (MetricMinute.node_id, MetricMinute.minute, MetricMinute.samples, *(getattr(MetricMinute, c) for c in COLUMNS))


def _metric_row(summary: MetricSummary) -> dict[str, Any]:
    return {
        "node_id": summary.node_id,
        "minute": summary.minute,
        "samples": summary.samples,
        **dict(zip(COLUMNS, summary.values, strict=True)),
    }


def _metric_summary(row: tuple[Any, ...]) -> MetricSummary:
    return MetricSummary(row[0], int(row[1]), int(row[2]), tuple(row[3:]))


def merge_meters(summaries: Iterable[MeterSummary]) -> list[MeterSummary]:
    """One summary per node and minute (two for one minute happen across a restart, or a clock stepping back)."""
    folds: dict[tuple[str, int], MeterFold] = {}
    for summary in summaries:
        folds.setdefault((summary.node_id, summary.minute), MeterFold()).add(summary)
    return [fold.summary(*key) for key, fold in folds.items()]


def merge_metrics(summaries: Iterable[MetricSummary]) -> list[MetricSummary]:
    folds: dict[tuple[str, int], MetricFold] = {}
    for summary in summaries:
        folds.setdefault((summary.node_id, summary.minute), MetricFold()).add_summary(summary)
    return [fold.summary(*key) for key, fold in folds.items()]


def _store(
    model: type[peewee.Model],
    fields: Sequence[Any],
    summaries: list[Any],
    to_row: Callable[[Any], dict[str, Any]],
    from_row: Callable[[tuple[Any, ...]], Any],
    merge: Callable[[Iterable[Any]], list[Any]],
) -> None:
    if not summaries:
        return
    fresh = {(s.node_id, s.minute): s for s in merge(summaries)}
    stored: list[Any] = []
    for minutes in _chunks(sorted({minute for _, minute in fresh})):
        rows: Any = model.select(*fields).where(model.minute.in_(list(minutes))).tuples()  # type: ignore[attr-defined]
        stored += [from_row(row) for row in rows if (row[0], int(row[1])) in fresh]
    for old in stored:
        key = (old.node_id, old.minute)
        merged = merge([old, fresh.pop(key)])[0]
        row = to_row(merged)
        del row["node_id"], row["minute"]
        model.update(**row).where(model.node_id == key[0], model.minute == key[1]).execute()  # type: ignore[attr-defined]
    for chunk in _chunks(list(fresh.values())):
        model.insert_many([to_row(s) for s in chunk]).execute()


def _upsert_metrics(summaries: list[MetricSummary]) -> None:
    """PostgreSQL: each node's minute inserted, or merged into the row there in the same statement.

    Two hubs storing their parts of one minute at once both succeed (the second waits for the first's
    row, then merges into it); rows go in (node, minute) order, so two such writes never deadlock.
    """
    merged = sorted(merge_metrics(summaries), key=lambda s: (s.node_id, s.minute))
    table: Any = MetricMinute._meta.table
    old_samples = table.samples
    new_samples = peewee.EXCLUDED.samples
    update: dict[Any, Any] = {MetricMinute.samples: old_samples + new_samples}
    for i, aggregate in _SLOTS:
        name = f"{METRICS[i].name}_{aggregate}"
        old, new = getattr(table, name), getattr(peewee.EXCLUDED, name)
        value: Any
        if aggregate == MEAN:  # weighted by heartbeats; a part without the metric leaves the other's mean
            weighted = (old * old_samples + new * new_samples) / (old_samples + new_samples)
            value = peewee.Case(None, ((new.is_null(), old), (old.is_null(), new)), weighted)
        elif aggregate == MIN:
            value = peewee.fn.LEAST(old, new)  # PostgreSQL's LEAST and GREATEST skip NULLs
        else:
            value = peewee.fn.GREATEST(old, new)
        update[getattr(MetricMinute, name)] = value
    for chunk in _chunks(merged):
        MetricMinute.insert_many([_metric_row(s) for s in chunk]).on_conflict(
            conflict_target=[MetricMinute.node_id, MetricMinute.minute], update=update
        ).execute()


def _insert_absent(summaries: list[MeterSummary]) -> None:
    """Meter minutes stored only where no row is: minutes another hub may have stored before this one took over."""
    merged = sorted(merge_meters(summaries), key=lambda s: (s.node_id, s.minute))
    for chunk in _chunks(merged):
        MeterMinute.insert_many([_meter_row(s) for s in chunk]).on_conflict_ignore().execute()


def store_minutes(
    meters: list[MeterSummary],
    metrics: list[MetricSummary],
    check: Callable[[], None] | None = None,
    meters_if_absent: Sequence[MeterSummary] = (),
) -> bool:
    """Write closed minutes of every node in one transaction: one row per node and minute, merged with a stored one.

    `check` (several hubs): called in the transaction before the meter minutes are written, it raises (the
    lease's LeaseLost) when this hub may no longer store them; then the meter minutes are left out (False back)
    and the heartbeat minutes still stored. `meters_if_absent`: minutes stored only where no row is.
    """
    postgres = isinstance(database_proxy.obj, peewee.PostgresqlDatabase)
    with database_proxy.atomic():  # one transaction (no savepoint: a minute's rows carry one transaction id)
        allowed = True
        if check is not None and (meters or meters_if_absent):
            try:
                check()  # a refusal leaves the transaction usable: it only found no row
            except LeaseLost:
                allowed = False
        if postgres:
            _upsert_metrics(metrics)
        else:
            _store(MetricMinute, METRIC_FIELDS, metrics, _metric_row, _metric_summary, merge_metrics)
        if allowed:
            _store(MeterMinute, METER_FIELDS, meters, _meter_row, _meter_summary, merge_meters)
            if meters_if_absent:
                _insert_absent(list(meters_if_absent))
    return allowed


def expired_before(now: float, retention_s: float) -> int:
    """Minutes that started before this are past the retention."""
    return int(now - retention_s)


def prune(before: int, limit: int = PRUNE_BATCH) -> tuple[int, int]:
    """Delete at most `limit` of the oldest rows per table whose minute started before `before`; the counts deleted."""
    counts = []
    with database_proxy.atomic():
        for model in (MeterMinute, MetricMinute):
            oldest = model.select(model.node_id, model.minute).where(model.minute < before).order_by(model.minute).limit(limit)
            counts.append(model.delete().where(peewee.Tuple(model.node_id, model.minute).in_(oldest)).execute())
    return counts[0], counts[1]


def meter_summaries(node_id: str, win: Window) -> list[MeterSummary]:
    """A node's stored meter minutes inside the window, oldest first."""
    query = (
        MeterMinute.select(*METER_FIELDS)
        .where(MeterMinute.node_id == node_id, MeterMinute.minute >= win.first_minute, MeterMinute.minute < win.end)
        .order_by(MeterMinute.minute)
    )
    rows = database_proxy.execute(query).fetchall()  # the driver's values as they are: no per-column conversion
    return [_meter_summary(row) for row in rows]


_ALL_CHANNELS = msgspec.json.Decoder(list[list[list[float | None]]])


def _node_minutes(model: Any, node_id: str, win: Window, writing: Iterable[int]) -> list[Any]:
    """A node's rows inside the window, without the minutes being written as this reads (counted from memory)."""
    conditions = [model.node_id == node_id, model.minute >= win.first_minute, model.minute < win.end]
    skipped = sorted(set(writing))
    if skipped:
        conditions.append(model.minute.not_in(skipped))
    return conditions


def meter_history(node_id: str, win: Window, unstored: list[MeterSummary], writing: Iterable[int] = ()) -> list[dict[str, Any]]:
    """The API's meter points: the stored minutes and those not stored yet, rolled up (on a database worker, off the loop).

    `writing`: minutes of `unstored` that a write in progress may or may not have committed; their
    stored rows are left out whichever it is. Stored rows are folded as they are read, their
    channel lists decoded in one call: a month of minutes is 43,200 rows.
    """
    query = (
        MeterMinute.select(*METER_FIELDS[1:])
        .where(*_node_minutes(MeterMinute, node_id, win, writing))
        .order_by(MeterMinute.minute)
    )
    rows = database_proxy.execute(query).fetchall()
    channels = _ALL_CHANNELS.decode("[" + ",".join(row[2] for row in rows) + "]") if rows else []
    folds: dict[int, MeterFold] = {}
    interval = win.interval_s
    for (minute, frames, _, momentary, short_term, integrated), levels in zip(rows, channels, strict=True):
        minute = int(minute)
        bucket = minute - minute % interval
        fold = folds.get(bucket)
        if fold is None:
            fold = folds[bucket] = MeterFold()
        fold.add_minute(minute, frames, levels, momentary, short_term, integrated)
    return meter_points(unstored, win, folds)


def metric_history(node_id: str, win: Window, unstored: list[MetricSummary], writing: Iterable[int] = ()) -> list[dict[str, Any]]:
    """The API's heartbeat metric points: the database's bucket sums and the minutes not stored yet (as `meter_history`)."""
    folds = fold_minutes(metric_folds(node_id, win, writing), unstored, win, MetricFold, MetricFold.add_summary)
    return metric_points(folds)


def metric_folds(node_id: str, win: Window, writing: Iterable[int] = ()) -> dict[int, MetricFold]:
    """A node's stored heartbeat minutes inside the window, summed per bucket by the database."""
    bucket = MetricMinute.minute / win.interval_s * win.interval_s  # integer division on both backends (peewee's % is LIKE)
    parts: list[Any] = []
    weights: list[Any] = []
    for i, aggregate in _SLOTS:
        column = getattr(MetricMinute, f"{METRICS[i].name}_{aggregate}")
        if aggregate == MEAN:
            parts.append(peewee.fn.SUM(column * MetricMinute.samples))
            weights.append(peewee.fn.SUM(peewee.Case(None, ((column.is_null(), 0),), MetricMinute.samples)))
        elif aggregate == MIN:
            parts.append(peewee.fn.MIN(column))
        else:
            parts.append(peewee.fn.MAX(column))
    query: Any = (
        MetricMinute.select(bucket, peewee.fn.SUM(MetricMinute.samples), *parts, *weights)
        .where(*_node_minutes(MetricMinute, node_id, win, writing))
        .group_by(peewee.SQL("1"))
        .tuples()
    )
    folds: dict[int, MetricFold] = {}
    count = len(parts)
    for row in query:
        fold = folds[int(row[0])] = MetricFold()
        fold.add_parts(int(row[1]), row[2 : 2 + count], row[2 + count :])
    return folds


def delete_node_history(node_id: str) -> None:
    """A deleted node's history goes with it."""
    MeterMinute.delete().where(MeterMinute.node_id == node_id).execute()
    MetricMinute.delete().where(MetricMinute.node_id == node_id).execute()
