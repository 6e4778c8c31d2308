"""Has the cross-sell rate dropped? A sequential test in event time, per segment.

Each segment (the total, each primary category, channel and variant) runs
one-sided Bernoulli CUSUMs (Page 1954; Reynolds & Stoumbos 1999) of its
orders against a baseline rate p0: for a design drop d, p1 = p0 (1 - d) and
every order adds its log-likelihood ratio

    x ln(p1 / p0) + (1 - x) ln((1 - p1) / (1 - p0))      (x = 1: cross-sell order)

to a statistic floored at 0. The alarm is on while any statistic is at or
above its threshold h (statistics are exported as fractions of h). One CUSUM is optimal for the drop it is designed for;
three (25 %, 50 %, 90 %) keep both a small drop and a collapse near the limit
z = (p0 - p1) / sqrt(p0 (1 - p0) / n) = 4. A statistic is capped (at
``cap`` h) so that an alarm clears soon after the rate recovers.

The thresholds. A CUSUM designed for the drop it meets needs about h / KL orders,
and KL ~ (p0 d)^2 / (2 p0 (1 - p0)), so its delay is about h / 8 times the
limit: below 2x the limit only for h < 16 on average, and one run draws from a
wide spread (the drop's realised rate, the evidence a CUSUM loses when it
touches 0). Each unit less multiplies the false alarms of that CUSUM by about
e, and they grow with the orders a segment sees, not with the number of
segments: the total sees every order, and the categories, the channels and the
variants each see them all again between them, so the total carries about a
quarter of the false alarms. Measured with ``python -m bench.detection
--simulate 10`` (the benchmark's timeline, a normal week then 18 drops, drawn
ten times per tick from the generator's order mix):

* (14, 15, 19) for every segment, as before (``--total-thresholds 14,15,19``):
  2 false alarms in 1 of the 10 weeks, 14 of the 180 drops later than the goal;
  the total's worst 1.02x (25 % at 5/s), 1.13x (50 % at 0.2/s), 1.26x (25 % at
  0.2/s);
* the total at (12, 13, 14): the same false alarms (both in segments), 13 late;
  the total's worst 0.87x, 1.09x and 1.08x, its means down by 10-30 % (a
  collapse at 0.2/s 0.53x instead of 0.74x of the goal);
* a scratch run with the segments' 50 % CUSUM at 14 (90 % at 17) had false
  alarms in 3 of 10 weeks (a channel or a variant, ~300 orders at half its
  rate): the segments stay at (14, 15, 19).

Tried and not kept (in a scratch simulation of the same kind): the baseline at
its measured rate instead of one standard error low (2 late drops fewer in 10
runs, one false alarm more); leaving the ticks of an alarm of the total out of
every segment's baseline (no change).
Kept: an alarm's ticks leave the baseline from the minute of its change point,
also those counted before the alarm went on (a drop seen after more than
``short_lag``). Before, part of the previous drop stayed in a category's
baseline at 0.2/s, so a 25 % drop looked like a 20 % one. Ten runs at one
origin (``--simulate 10 --origin 1700000000``), before -> after: the same false
alarms (4 in one week, 1 in another), 12 -> 9 of 180 drops late; 25 % in a
category at 0.2/s late in 6 -> 4 runs (mean 0.80 -> 0.64 of the goal, one run
still not detected); 50 % there late in 2 -> 1, but one run not detected
(worst 1.19 before).

Kept: thresholds cut by volume. A CUSUM's false alarms grow with the orders
it sees (about n e^-h), so a segment whose baseline day holds n orders, fewer
than ``reference_orders`` (100,000), has every threshold lowered by
ln(reference_orders / n): it pages by chance no more often per day than a
segment of 100,000 orders a day at the configured thresholds. Only a
baseline that covers its whole day counts (a fresh start keeps the
thresholds). In the normal week (~870,000 orders a day) the categories under
11 % of the orders and the marketplace channel are cut by 0.06 (books) to
1.2 (fashion, 3.5 %); at 0.2 orders/s a category of a quarter of the orders
(~4,500 a day) is cut by 3.1, the total (~17,000) by 1.8.
Measured at one origin, ten runs of the whole timeline (``--simulate 10
--origin 1700000000``), before -> after: 9 -> 5 of 180 drops late, the same
false alarms (4 in run 2: the total twice and toys twice, 900-2,300 orders at
~0.20 against ~0.26, each alarm two episodes a minute apart; 1 in run 5, the
total). Still late: 25 % in the category at 0.2/s in 2 runs (mean 0.42 of the
goal; one run not detected: its drop came out at 0.194 instead of 0.18 over
its ~1,980 orders, 17 % below a baseline of 0.2355, z ~ 4.3 only at the very
end of the 11-hour drop; the 25 % CUSUM, restarted 2.9 h into it, peaked at
0.79 of its cut threshold, 10.6), 50 % in the category
at 5/s (1.42), 50 % in the total at 0.2/s (1.09), 25 % in the category at 50/s
(1.07). With one normal day and ``--set reference_orders=N`` (``--simulate 10
--week-days 1``), late drops of 180 for N = 0, 30,000, 100,000, 300,000: 16,
12, 11, 10; the normal week alone (``--simulate 5 --rates ''``) had the same
false alarms with N = 0 and 100,000.
Tried and not kept: a baseline lag of 6 h or 12 h instead of 1 h (so that a
slow drop's first hours stay out of the baseline): with one normal day and the
0.2/s drops only, 5 of 60 late with each of 1 h, 6 h and 12 h.

What is still late is the spread of a CUSUM's delay, not its mean: a
25 % CUSUM that knows p0 exactly (a Monte Carlo of the order-by-order
statistic, p0 = 0.24) is later than twice the limit in 17 % of drops at h =
14, 9 % at 12 and 4 % at 10 (27 %, 21 %, 10 % with p0 one standard error of
4,500 orders low). So the busy scenarios at (14, 15, 19) miss their goal in
about one run in ten each, whatever the baseline; every scenario within goal
in every run needs lower thresholds than the normal week's false alarms allow.

Orders are counted in event-time ticks (5 s) and a tick is tested once the
event-time clock passed its end, so the test does not depend on how fast the
orders are delivered: a week replayed in minutes gives the same alarms, at the
same event times, as the week lived. Orders for a tick already tested are
left out (counted in ``dropped``): fewer orders, no bias.

The baseline of a segment is its own rate over the trailing day, ending an
hour (``baseline_lag``) before the tick, so a drop in progress does not pull
it down; while a segment has evidence of a drop it ends where the evidence
began, and the ticks of an alarm never count in it. It is taken
one standard error lower than measured, so that its own noise cannot page.
Until the lagged day holds ``min_baseline_orders``, the total uses
``expected_rate`` when configured, and every segment the data older than
``short_lag``. Nothing here is kept only in memory: the worker that runs the
fleet's test keeps it in a table (streams/orders/fleet_detection.py), and a new
owner rebuilds the baselines with :meth:`DropDetector.replay` of the tested
ticks and takes the CUSUMs and alarms back with :meth:`DropDetector.load_state`.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from streams.orders.windows import WindowTotals

Segment = tuple[str, str]  # (kind, value): ("total", "all"), ("primary_category", "books"), ...
TOTAL: Segment = ("total", "all")
KINDS = ("total", "primary_category", "channel", "variant")
OTHER = "other"
MINUTE = 60.0


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    tick: float = 5.0  # seconds of event time per test; divides a minute
    drops: tuple[float, ...] = (0.25, 0.5, 0.9)  # relative drops the CUSUMs are designed for
    # Thresholds of those CUSUMs, in log-likelihood-ratio units, for the segments (categories,
    # channels, variants) and for the total; see the module docstring for how they were measured.
    thresholds: tuple[float, ...] = (14.0, 15.0, 19.0)
    total_thresholds: tuple[float, ...] | None = (12.0, 13.0, 14.0)  # None: the segments'
    cap: float = 1.5  # a statistic stops growing at cap x its threshold
    baseline_span: float = 86400.0
    baseline_lag: float = 3600.0
    short_lag: float = 900.0
    min_baseline_orders: int = 1000
    # A segment whose baseline (a full day) holds n < reference_orders orders has its thresholds lowered by
    # ln(reference_orders / n): the same false alarms per day as a segment of reference_orders a day.
    reference_orders: float = 100_000.0  # 0: the thresholds as configured, whatever the volume
    expected_rate: float = 0.0  # 0: none
    idle: float = 600.0  # a partition this far behind the newest one does not hold the clock back
    max_values: int = 20  # tested values per kind, the rest summed into "other"
    episodes_kept: int = 1000


@dataclass(slots=True)
class Episode:
    """One alarm of one segment, in event time."""

    kind: str
    value: str
    started: float  # event time the alarm went on
    change: float  # where the evidence begins: the estimated start of the drop
    ended: float | None = None
    baseline: float = 0.0
    rate: float = 0.0  # cross-sell rate of the orders since ``change``, when the alarm went on
    orders: int = 0


@dataclass(slots=True)
class SegmentState:
    statistics: list[float]  # per design drop, as a fraction of its threshold: 1 or more is an alarm
    since: list[float | None]  # start of the tick each statistic left 0 (the estimated change point)
    runs: list[list[int]]  # [orders, cross-sell orders] since then
    baseline: float | None = None
    baseline_orders: int = 0
    threshold_cut: float = 0.0  # subtracted from every threshold: the segment sees few orders a day
    episode: Episode | None = None
    alarmed: int | None = None  # the CUSUM that holds the alarm (its change point and run are reported)
    past: list[tuple[float, float]] = field(default_factory=list)  # (change, ended) of recent episodes

    def in_episode(self, moment: float) -> bool:
        """Whether a tick that ended at ``moment`` belongs to an alarm: from the minute of its change point."""
        if self.episode is not None and minute_of(self.episode.change) < moment:
            return True
        return any(minute_of(change) < moment < ended for change, ended in self.past)


@dataclass(frozen=True, slots=True)
class SegmentReport:
    kind: str
    value: str
    statistic: float
    alarm: bool
    baseline: float | None
    baseline_orders: int
    recent_rate: float
    recent_orders: int
    since: float | None
    alarm_started: float | None


def tested_label(seen: dict[str, set[str]], kind: str, value: str, limit: int) -> str:
    """``value``, or "other" once ``kind`` already has ``limit`` tested values."""
    values = seen.setdefault(kind, set())
    if value in values:
        return value
    if len(values) >= limit:
        return OTHER
    values.add(value)
    return value


class DropDetector:
    """The CUSUMs of every segment of the orders this worker holds, advanced in event time."""

    def __init__(self, config: DetectionConfig) -> None:
        if len(config.drops) != len(config.thresholds) or len(config.drops) != len(config.total_thresholds or
                                                                                config.drops):
            raise ValueError("one threshold per design drop")
        if MINUTE % config.tick:
            raise ValueError(f"the detection tick ({config.tick:g}s) must divide a minute")
        deepest = math.log(config.reference_orders / config.min_baseline_orders) if config.reference_orders > 0 else 0
        if deepest >= min(*config.thresholds, *(config.total_thresholds or ())):
            raise ValueError(f"reference_orders {config.reference_orders:g} would cut a threshold to 0 or below "
                             f"(by up to {deepest:.1f}, for a baseline of min_baseline_orders)")
        self.config = config
        self.segments: dict[Segment, SegmentState] = {}
        self.pending: dict[float, dict[Segment, list[int]]] = {}  # tick start -> segment -> [orders, cross]
        self.closed_until = -math.inf  # ticks before this were tested
        self.dropped = 0
        self.episodes: list[Episode] = []
        self._seen: dict[str, set[str]] = {}
        # Cumulative [orders, cross] per segment, and at the start of every minute with a tick counted, a
        # copy of it as it was then (the ticks that ended by that moment): the baseline sums.
        self._cumulative: dict[Segment, list[int]] = {}
        # Tested ticks wait ``short_lag`` before they count in a baseline: by then a sharp drop
        # in them has been detected, and the ticks of an alarm (from its change point) are left out.
        self._maturing: deque[tuple[float, Mapping[Segment, list[int]]]] = deque()
        self._mark_moments: list[float] = []
        self._marks: list[dict[Segment, tuple[int, int]]] = []
        self._baseline_cache: dict[tuple[Segment, float, float], tuple[float | None, int, float]] = {}
        self._counted_since = math.inf  # the end of the first tick counted in a baseline

    # -- counting ----------------------------------------------------------------
    def observe(self, event_time: float, primary_category: str, channel: str, variant: str,
                cross_sell: bool) -> None:
        """Count one applied order."""
        if event_time < self.closed_until:
            self.dropped += 1
            return
        start = event_time // self.config.tick * self.config.tick
        tick = self.pending.get(start)
        if tick is None:
            tick = self.pending[start] = {}
        count_in(tick, self._segments_of(primary_category, channel, variant), 1 if cross_sell else 0)

    def _segments_of(self, primary_category: str, channel: str, variant: str) -> tuple[Segment, ...]:
        limit, seen = self.config.max_values, self._seen
        return (TOTAL,
                ("primary_category", tested_label(seen, "primary_category", primary_category, limit)),
                ("channel", tested_label(seen, "channel", channel, limit)),
                ("variant", tested_label(seen, "variant", variant, limit)))

    def add_tick(self, start: float, counts: Iterable[tuple[str, str, int, int]]) -> None:
        """Count the orders of one tick, as (kind, value, orders, cross-sell orders) per segment, from
        another process (streams/orders/fleet_detection.py); values beyond ``max_values`` fold into "other"."""
        rows = list(counts)
        if start < self.closed_until:
            self.dropped += sum(n for kind, _, n, _ in rows if kind == TOTAL[0])
            return
        tick = self.pending.setdefault(start, {})
        for kind, value, n, c in rows:
            label = value if kind == TOTAL[0] else tested_label(self._seen, kind, value, self.config.max_values)
            entry = tick.get((kind, label))
            if entry is None:
                tick[(kind, label)] = [n, c]
            else:
                entry[0] += n
                entry[1] += c

    def advance(self, clock: float) -> list[tuple[float, dict[Segment, list[int]]]]:
        """Test every tick that ended at or before the event-time ``clock``, oldest first; returns them."""
        tick = self.config.tick
        tested = []
        for start in sorted(s for s in self.pending if s + tick <= clock):
            counts = self.pending.pop(start)
            self._test(start, start + tick, counts)
            tested.append((start, counts))
        self.closed_until = max(self.closed_until, clock // tick * tick)
        return tested

    def replay(self, minutes: Iterable[tuple[float, float, Mapping[Segment, list[int]]]], clock: float) -> None:
        """Rebuild from retained windows, (start, size, segment counts) oldest first, that ended by ``clock``."""
        for start, size, counts in minutes:
            if start + size <= clock and start >= self.closed_until:
                bounded: dict[Segment, list[int]] = {}
                for (kind, value), (n, c) in counts.items():
                    label = value if kind == "total" else tested_label(self._seen, kind, value, self.config.max_values)
                    entry = bounded.setdefault((kind, label), [0, 0])
                    entry[0] += n
                    entry[1] += c
                self._test(start, start + size, bounded)
                self.closed_until = start + size
        self.closed_until = max(self.closed_until, clock // self.config.tick * self.config.tick)

    # -- testing -----------------------------------------------------------------
    def _test(self, start: float, end: float, counts: Mapping[Segment, list[int]]) -> None:
        config = self.config
        # In segment order, not in the order the counts came: alarms of one tick are listed the same
        # whether one process saw every order or a fleet merged its workers' tick counts as they arrived.
        for segment, (n, c) in sorted(counts.items()):
            state = self.segments.get(segment)
            if state is None:
                state = self.segments[segment] = self._new_state()
            p0, base_orders, cut = self._baseline(segment, end, state)
            state.baseline, state.baseline_orders, state.threshold_cut = p0, base_orders, cut
            if p0 is not None and 0.0 < p0 < 1.0:
                self._update(segment, state, start, end, n, c, p0)
        self._maturing.append((end, counts))
        while self._maturing and self._maturing[0][0] <= end - config.short_lag:
            self._count(*self._maturing.popleft())

    def _update(self, segment: Segment, state: SegmentState, start: float, end: float, n: int, c: int,
                p0: float) -> None:
        config = self.config
        thresholds = config.total_thresholds if segment == TOTAL and config.total_thresholds else config.thresholds
        for k, (drop, configured) in enumerate(zip(config.drops, thresholds, strict=True)):
            threshold = configured - state.threshold_cut
            p1 = p0 * (1.0 - drop)
            value = state.statistics[k] + (c * math.log1p(-drop) + (n - c) * math.log((1.0 - p1) / (1.0 - p0))) \
                / threshold
            if value <= 0.0:
                state.statistics[k], state.since[k], state.runs[k] = 0.0, None, [0, 0]
                continue
            if state.since[k] is None:
                state.since[k] = start
            state.statistics[k] = min(value, config.cap)
            run = state.runs[k]
            run[0] += n
            run[1] += c
        alarm = max(state.statistics) >= 1.0
        state.alarmed = alarmed(state.statistics, state.alarmed) if alarm else None
        if alarm and state.episode is None:
            k = alarmed(state.statistics, None)
            run = state.runs[k]
            since = state.since[k]
            state.episode = Episode(segment[0], segment[1], end, since if since is not None else start,
                                    baseline=p0, rate=run[1] / run[0] if run[0] else 0.0, orders=run[0])
            self.episodes.append(state.episode)
            del self.episodes[:-config.episodes_kept]
            self._uncount_from(segment, state.episode.change)
        elif not alarm and state.episode is not None:
            state.episode.ended = end
            state.past = [*state.past[-9:], (state.episode.change, end)]
            state.episode = None

    # -- the baseline ------------------------------------------------------------
    def _count(self, end: float, counts: Mapping[Segment, list[int]]) -> None:
        cumulative = self._cumulative
        self._counted_since = min(self._counted_since, end)
        minute = math.ceil(end / MINUTE) * MINUTE - MINUTE  # the start of the minute the tick ended in
        if not self._mark_moments or minute > self._mark_moments[-1]:
            self._mark_moments.append(minute)
            self._marks.append({s: (n, c) for s, (n, c) in cumulative.items()})
            self._baseline_cache = {}
            self._prune(minute)
        for segment, (n, c) in counts.items():
            state = self.segments.get(segment)
            if state is not None and state.in_episode(end):
                continue
            entry = cumulative.get(segment)
            if entry is None:
                cumulative[segment] = [n, c]
            else:
                entry[0] += n
                entry[1] += c

    def _uncount_from(self, segment: Segment, change: float) -> None:
        """Take out of the baseline sums the ticks of ``segment`` counted from the minute of ``change`` on.

        A drop too small to be seen within ``short_lag`` had its first ticks counted before the alarm
        went on; left in, they would lower the baseline once the alarm ends (the next drop of that
        segment would look smaller than it is)."""
        index = bisect_left(self._mark_moments, minute_of(change))
        if index == len(self._marks):
            return  # no tick of that minute or later counted yet
        kept = self._marks[index].get(segment, (0, 0))  # every tick counted by then ended by the cut
        for mark in self._marks[index + 1:]:
            if segment in mark:
                mark[segment] = kept
        if segment in self._cumulative:
            self._cumulative[segment] = list(kept)
        self._baseline_cache = {}

    def _prune(self, now: float) -> None:
        config = self.config
        oldest = now - config.baseline_span - config.baseline_lag - 2 * MINUTE
        drop = bisect_left(self._mark_moments, oldest)  # the marks before ``oldest`` are not read again
        if drop > 256:
            del self._mark_moments[:drop]
            del self._marks[:drop]

    def _counts_between(self, segment: Segment, first: float, last: float) -> tuple[int, int]:
        """Orders and cross-sell orders of ``segment`` in ticks that ended in (first, last], minute starts."""
        def at(moment: float) -> tuple[int, int]:
            # The first mark at or after ``moment``: no tick ended between them (it would have made a mark).
            index = bisect_left(self._mark_moments, moment)
            if index < len(self._marks):
                return self._marks[index].get(segment, (0, 0))
            n, c = self._cumulative.get(segment, (0, 0))
            return n, c
        n1, c1 = at(last)
        n0, c0 = at(first)
        return n1 - n0, c1 - c0

    def _baseline(self, segment: Segment, now: float, state: SegmentState) -> tuple[float | None, int, float]:
        """(p0, the orders it was measured on, the cut of the thresholds) of ``segment`` at ``now``."""
        config = self.config
        # Evidence of a drop in progress (a statistic above 0) ends the baseline where it began.
        begun = [since for since in state.since if since is not None]
        frozen = min(begun) if begun else math.inf
        key = (segment, now // MINUTE, frozen // MINUTE if begun else math.inf)
        cached = self._baseline_cache.get(key)
        if cached is not None:
            return cached
        found: tuple[float | None, int, float] = (None, 0, 0.0)
        for lag in (config.baseline_lag, config.short_lag):
            last = minute_of(min(now - lag, frozen))
            n, c = self._counts_between(segment, last - config.baseline_span, last)
            if n >= config.min_baseline_orders:
                p = c / n
                found = (max(0.0, p - math.sqrt(p * (1.0 - p) / n)), n, self._threshold_cut(n, last))
                break
            if segment == TOTAL and config.expected_rate > 0:
                found = (config.expected_rate, 0, 0.0)
                break
        self._baseline_cache[key] = found
        return found

    def _threshold_cut(self, orders: int, last: float) -> float:
        """How much lower than configured the thresholds of a segment are whose baseline ending at ``last``
        holds ``orders`` orders: ln(reference_orders / orders) when that is a full day's worth, else 0.

        A CUSUM's false alarms grow with the orders it sees (about n e^-h), so a segment of few orders a
        day can take a lower h for the same false alarms per day. Only a baseline that covers its whole
        span (give or take ``short_lag``, so that a new owner replaying the retained ticks agrees) says
        how many orders a day the segment sees: on a fresh start the thresholds stay as configured."""
        config = self.config
        if config.reference_orders <= 0 or orders >= config.reference_orders:
            return 0.0
        if self._counted_since > last - config.baseline_span + config.short_lag:
            return 0.0
        return math.log(config.reference_orders / orders)

    # -- the state, for a changelog ------------------------------------------------
    def state(self, episodes: int = 20) -> dict[str, Any]:
        """What :meth:`replay` cannot rebuild from tested counts: the CUSUMs and alarms, the ticks not
        tested yet, the tested labels, and the newest ``episodes`` alarms (JSON-ready)."""
        return {
            "closed_until": None if self.closed_until == -math.inf else self.closed_until,
            "dropped": self.dropped,
            "seen": {kind: sorted(values) for kind, values in self._seen.items()},
            "pending": [[start, [[kind, value, n, c] for (kind, value), (n, c) in counts.items()]]
                        for start, counts in sorted(self.pending.items())],
            "segments": [[kind, value, s.statistics, s.since, s.runs, None if s.episode is None else
                          asdict(s.episode), s.past, s.alarmed] for (kind, value), s in self.segments.items()],
            "episodes": [asdict(e) for e in self.episodes[-episodes:]],
        }

    def restore_labels(self, state: Mapping[str, Any]) -> None:
        """The tested values per kind of :meth:`state`: before a :meth:`replay`, so that it folds the same."""
        self._seen = {kind: set(values) for kind, values in state["seen"].items()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Take the CUSUMs, alarms, untested ticks and labels of :meth:`state` (after a :meth:`replay`
        of the tested counts rebuilt the baselines)."""
        self.restore_labels(state)
        closed = state["closed_until"]
        self.closed_until = -math.inf if closed is None else float(closed)
        self.dropped = int(state["dropped"])
        self.pending = {float(start): {(kind, value): [n, c] for kind, value, n, c in rows}
                        for start, rows in state["pending"]}
        self.episodes = [Episode(**e) for e in state["episodes"]]
        for kind, value, statistics, since, runs, episode, past, holding in state["segments"]:
            segment = (kind, value)
            current = self.segments.get(segment)
            if current is None:
                current = self.segments[segment] = self._new_state()
            current.statistics, current.since, current.runs = list(statistics), list(since), [list(r) for r in runs]
            current.past = [(float(change), float(ended)) for change, ended in past]
            current.alarmed = holding
            current.episode = None if episode is None else self._same_episode(Episode(**episode))
        self._baseline_cache = {}

    def _same_episode(self, episode: Episode) -> Episode:
        """The listed episode ``episode`` stands for (so that its end is recorded in the list), else itself."""
        for listed in reversed(self.episodes):
            if (listed.kind, listed.value, listed.started) == (episode.kind, episode.value, episode.started):
                return listed
        self.episodes.append(episode)
        return episode

    def _new_state(self) -> SegmentState:
        drops = self.config.drops
        return SegmentState([0.0] * len(drops), [None] * len(drops), [[0, 0] for _ in drops])

    # -- what is exported ----------------------------------------------------------
    def report(self) -> list[SegmentReport]:
        reports = []
        for (kind, value), state in sorted(self.segments.items()):
            k = strongest(state.statistics) if state.alarmed is None else state.alarmed
            run = state.runs[k]
            episode = state.episode
            reports.append(SegmentReport(
                kind, value, state.statistics[k], state.statistics[k] >= 1.0, state.baseline,
                state.baseline_orders, run[1] / run[0] if run[0] else 0.0, run[0], state.since[k],
                episode.started if episode is not None else None))
        return reports


def minute_of(moment: float) -> float:
    """The start of the event-time minute of ``moment``."""
    return moment // MINUTE * MINUTE


def count_in(counts: dict[Segment, list[int]], segments: Iterable[Segment], cross_sell: int,
             orders: int = 1) -> None:
    """Add ``orders`` orders, ``cross_sell`` of them cross-sell, to the [orders, cross-sell orders] of each of
    ``segments`` (by default one order: ``cross_sell`` 1 or 0)."""
    for segment in segments:
        entry = counts.get(segment)
        if entry is None:
            counts[segment] = [orders, cross_sell]
        else:
            entry[0] += orders
            entry[1] += cross_sell


def strongest(statistics: list[float]) -> int:
    """The index of the CUSUM nearest to (or furthest past) its threshold."""
    return max(range(len(statistics)), key=statistics.__getitem__)


def alarmed(statistics: list[float], holding: int | None) -> int:
    """The CUSUM an alarm is reported from: ``holding`` while it stays at its threshold, else the one
    furthest past it, the larger design drop on a tie. Its change point and the rate since then are the
    drop's: a CUSUM designed for a smaller drop left 0 earlier, on normal orders (a 28 % rate that
    collapsed to 0 read as 16 % "since the drop began" from the 25 % CUSUM, whose run began before)."""
    if holding is not None and statistics[holding] >= 1.0:
        return holding
    return max(range(len(statistics)), key=lambda k: (statistics[k], k))


def window_counts(windows: Iterable[WindowTotals]) -> dict[Segment, list[int]]:
    """The [orders, cross-sell orders] per segment of retained windows of one minute (several partitions')."""
    counts: dict[Segment, list[int]] = {}
    for totals in windows:
        entry = counts.setdefault(TOTAL, [0, 0])
        entry[0] += totals.orders
        entry[1] += totals.cross_sell_orders
        for kind, labels in (("primary_category", totals.by_category), ("channel", totals.by_channel),
                             ("variant", totals.by_variant)):
            for label, (n, c) in labels.items():
                entry = counts.setdefault((kind, label), [0, 0])
                entry[0] += n
                entry[1] += c
    return counts


def low_watermark(partitions: Iterable[tuple[float | None, bool]], idle: float) -> float | None:
    """The event-time clock of several partitions, each (watermark, has messages waiting).

    The oldest watermark among the partitions that have messages waiting or are within
    ``idle`` of the newest: a quiet partition (nothing waiting, far behind) cannot stop the
    tests, and one that is only slower to be read (a backlog, a replay) holds them back,
    so its orders are not left out. None while a partition with messages waiting has none
    applied yet.
    """
    listed = list(partitions)
    if any(watermark is None and waiting for watermark, waiting in listed):
        return None
    known = [(w, waiting) for w, waiting in listed if w is not None]
    if not known:
        return None
    newest = max(w for w, _ in known)
    return min(w for w, waiting in known if waiting or w >= newest - idle)
