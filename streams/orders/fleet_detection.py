"""Drop detection for the whole fleet: every orders partition's tick counts, tested by one owner.

A worker that tested only its own partitions would see 1/k of the orders with k
workers: a drop would take about k times longer to reach a threshold, and the
k tests would page about k times as often by chance. So the test runs once, on
every order, as the pair counts are repartitioned (streams/pairs/outbox.py):

* each orders partition, at each flush, puts one :func:`detection_message` in
  its outbox: the orders it applied since the last flush, counted per 5 s
  event-time tick and segment, with its source partition, its outbox sequence
  number and its event-time watermark. It leaves only once the flush is durable,
  and a restarted (or new) owner of the partition sends the last one again;
* between flushes with orders, a :func:`status_message` says where the
  partition stands (its watermark, and whether messages wait to be read);
* both go to the one partition of the detection topic. Its owner folds them
  into one :class:`~streams.orders.detection.DropDetector`
  (:meth:`FleetDetector.apply`): a (source, sequence) is applied once, so a
  re-send after a crash counts nothing. A tick is tested once every orders
  partition has reported and the low watermark of the partitions passed it
  (:func:`~streams.orders.detection.low_watermark`: one far behind the newest,
  with nothing waiting, is idle and does not hold the test back; one with a
  backlog does, so a replay raises the same alarms as the live stream).

The owner's state lives in a one-partition table (:meth:`FleetDetector.take_changes`):
the ticks as tested, one key per event-time minute for the baseline's span
and lag, and a meta key with the CUSUMs, alarms, untested ticks and each source's
sequence, watermark and backlog flag. A new owner (a restart, a rebalance)
replays the tested ticks to rebuild the baselines, then takes the CUSUMs from the
meta key (:meth:`FleetDetector.restore`): nothing is lost, and the messages it reads
again (not yet acknowledged) apply once. The topic itself could not serve: read
back over the baseline's day it is ~100 times the table's size (a message per
partition per flush), and Tansu keeps no retention.

Nothing here knows about Kafka or Faust.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streams.orders.detection import (
    MINUTE,
    TOTAL,
    DetectionConfig,
    DropDetector,
    Segment,
    count_in,
    low_watermark,
)
from streams.orders.facts import OrderFacts

KIND = "detection"  # the outbox kind of these messages (streams/runtime/processors.py routes them)
META = "meta"
TICKS = "t"
PARTITION = 0  # the detection topic's only partition
OTHER = "other"
EPISODES_KEPT = 20  # alarms kept in the meta key (the newest)


def tick_rows(orders: Iterable[OrderFacts], tick: float,
              max_values: int) -> list[list[Any]]:
    """[[tick start, [[kind, value, orders, cross-sell orders], ...]], ...] of ``orders``, oldest tick first.

    At most ``max_values`` values per kind (the first met), the rest summed into "other":
    a message stays small whatever the labels.
    """
    # Counted first per (tick, category, channel, variant): one dict update per order. Read in the
    # order first met, these give each tick's segments, and each kind's values, in the order the
    # orders first met them, as counting order by order would.
    groups: dict[tuple[float, str, str, str], list[int]] = {}
    for facts in orders:
        key = (facts.event_time // tick * tick, facts.primary_category, facts.channel, facts.variant)
        entry = groups.get(key)
        if entry is None:
            groups[key] = [1, 1 if facts.cross_sell else 0]
        else:
            entry[0] += 1
            if facts.cross_sell:
                entry[1] += 1
    ticks: dict[float, dict[Segment, list[int]]] = {}
    seen: dict[str, dict[str, None]] = {"primary_category": {}, "channel": {}, "variant": {}}
    for (start, category, channel, variant), (n, cross) in groups.items():
        counts = ticks.get(start)
        if counts is None:
            counts = ticks[start] = {}
        segments = [TOTAL]
        for kind, value in (("primary_category", category), ("channel", channel), ("variant", variant)):
            values = seen[kind]
            if value not in values:
                if len(values) >= max_values:
                    value = OTHER
                else:
                    values[value] = None
            segments.append((kind, value))
        count_in(counts, segments, cross, n)
    return [[start, [[kind, value, n, c] for (kind, value), (n, c) in counts.items()]]
            for start, counts in sorted(ticks.items())]


def detection_message(source: int, sequence: int, watermark: float | None, orders: Sequence[OrderFacts],
                      tick: float, max_values: int) -> dict[str, Any]:
    """The outbox message of one flush of orders partition ``source``: its orders' tick counts."""
    return {"kind": KIND, "partition": PARTITION, "source": source, "sequence": sequence, "watermark": watermark,
            "ticks": tick_rows(orders, tick, max_values)}


def detection_messages(source: int, sequence: int, watermark: float | None, orders: Sequence[OrderFacts],
                       tick: float, max_values: int, max_bytes: int) -> list[dict[str, Any]]:
    """:func:`detection_message` in parts of at most ``max_bytes`` of JSON each, ticks whole.

    A flush of a backlog can span days of event time, thousands of ticks: one
    message would pass the producer's limit. Parts are applied once each, by
    (sequence, part); only the last carries the watermark, so that no tick is
    tested before every part of the flush is in.
    """
    whole = detection_message(source, sequence, watermark, orders, tick, max_values)
    room = max_bytes - len(orjson.dumps({**whole, "ticks": [], "part": 0, "parts": 0})) - 64
    chunks: list[list[Any]] = [[]]
    used = 0
    for row in whole["ticks"]:
        size = len(orjson.dumps(row)) + 1
        if used + size > room and chunks[-1]:
            chunks.append([])
            used = 0
        chunks[-1].append(row)
        used += size
    last = len(chunks) - 1
    return [{**whole, "watermark": watermark if i == last else None, "ticks": rows, "part": i, "parts": len(chunks)}
            for i, rows in enumerate(chunks)]


def status_message(source: int, watermark: float | None, waiting: bool) -> dict[str, Any]:
    """Where orders partition ``source`` stands: the watermark of the orders it sent, and whether more wait."""
    return {"kind": KIND, "partition": PARTITION, "source": source, "watermark": watermark, "waiting": waiting}


@dataclass(slots=True)
class Source:
    """What the owner knows of one orders partition."""

    sequence: int = 0  # the newest outbox sequence applied
    watermark: float | None = None  # event time up to which its orders were sent
    waiting: bool = False  # messages of it were waiting to be read, when it last said
    part: int = 0  # the newest part of that sequence applied (detection_messages)

    def to_list(self) -> list[Any]:
        return [self.sequence, self.watermark, self.waiting, self.part]


def meta_key() -> str:
    return f"{PARTITION}/{META}"


def ticks_key(minute: float) -> str:
    return f"{PARTITION}/{TICKS}/{int(minute)}"


class FleetDetector:
    """The drop test of the whole fleet: the tick counts of ``partitions`` orders partitions merged."""

    def __init__(self, config: DetectionConfig, partitions: int) -> None:
        self.config = config
        self.partitions = partitions
        self.detector = DropDetector(config)
        self.sources: dict[int, Source] = {}
        # Tested ticks by minute, of the minutes not yet closed and written: minute -> tick start -> counts.
        self._open: dict[float, dict[float, dict[Segment, list[int]]]] = {}
        self._dirty: set[float] = set()
        self._written: set[float] = set()  # minutes with a key in the table
        self._changed = False
        # What a failed flush took that the next take cannot build again (give_back).
        self._carried: dict[str, Any] = {}
        self._carried_deletes: list[str] = []

    # -- applying messages ----------------------------------------------------------
    def apply(self, message: Mapping[str, Any]) -> bool:
        """Fold in one message and test the ticks it completes; False for a sequence applied before."""
        source = self.sources.get(int(message["source"]))
        if source is None:
            source = self.sources[int(message["source"])] = Source()
        self._changed = True
        watermark = message.get("watermark")
        if watermark is not None and (source.watermark is None or watermark > source.watermark):
            source.watermark = float(watermark)
        if "waiting" in message:
            source.waiting = bool(message["waiting"])
        sequence = message.get("sequence")
        applied = True
        if sequence is not None:
            part = int(message.get("part", 0))
            if (sequence, part) <= (source.sequence, source.part):
                applied = False
            else:
                source.sequence, source.part = int(sequence), part
                for start, rows in message["ticks"]:
                    self.detector.add_tick(float(start), ((k, v, int(n), int(c)) for k, v, n, c in rows))
        self.advance()
        return applied

    def clock(self) -> float | None:
        """The event time every tick before which is complete: None until every partition has reported."""
        if len(self.sources) < self.partitions:
            return None
        return low_watermark([(s.watermark, s.waiting) for s in self.sources.values()], self.config.idle)

    def advance(self) -> None:
        clock = self.clock()
        if clock is None:
            return
        for start, counts in self.detector.advance(clock):
            minute = start // MINUTE * MINUTE
            self._open.setdefault(minute, {})[start] = counts
            self._dirty.add(minute)

    # -- the changelog ---------------------------------------------------------------
    def take_changes(self) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        """(tick writes, meta writes, deletes): written in this order, each once the one before is durable."""
        writes, self._carried = self._carried, {}
        for minute in sorted(self._dirty):
            writes[ticks_key(minute)] = {"ticks": [[start, _rows(counts)]
                                                   for start, counts in sorted(self._open[minute].items())]}
            self._written.add(minute)
        self._dirty = set()
        closed = self.detector.closed_until
        for minute in [m for m in self._open if m + MINUTE <= closed]:
            del self._open[minute]  # complete and written: only a replay reads it again
        oldest = closed - self.config.baseline_span - self.config.baseline_lag - 2 * MINUTE
        expired = sorted(m for m in self._written if m + MINUTE < oldest)
        self._written.difference_update(expired)
        meta: dict[str, Any] = {}
        if writes or self._changed:
            meta[meta_key()] = {"sources": {str(p): s.to_list() for p, s in sorted(self.sources.items())},
                                "detector": self.detector.state(EPISODES_KEPT)}
        self._changed = False
        deletes, self._carried_deletes = self._carried_deletes, []
        return writes, meta, deletes + [ticks_key(m) for m in expired]

    def give_back(self, writes: Mapping[str, Any], deletes: list[str]) -> None:
        """The flush of ``writes`` and ``deletes`` failed: the next take writes them, and the meta key.

        Whatever of that flush the changelog holds is what a crash could leave. A
        minute still open is dirty again (written whole then: its tested ticks are
        never changed, only added to); a minute closed since is written as taken
        (only a replay reads it again, so its value is kept until then).
        """
        self._changed = True
        for key, value in writes.items():
            minute = float(key.rsplit("/", 1)[1])
            if minute in self._open:
                self._dirty.add(minute)
            else:
                self._carried.setdefault(key, value)
        self._carried_deletes = list(deletes) + self._carried_deletes

    @classmethod
    def restore(cls, config: DetectionConfig, partitions: int, items: Iterable[tuple[str, Any]]) -> FleetDetector:
        """The owner's state from the table: baselines replayed from the tested ticks, then the meta key's
        CUSUMs, alarms, untested ticks and sources. Ticks written by a flush whose meta key was not
        written (a crash) are at or after its tested-until and are left out: they are tested again."""
        fleet = cls(config, partitions)
        meta: Mapping[str, Any] | None = None
        minutes: dict[float, list[Any]] = {}
        for key, value in items:
            parts = key.split("/")
            if parts[1:] == [META]:
                meta = value
            elif len(parts) == 3 and parts[1] == TICKS:
                minutes[float(parts[2])] = value["ticks"]
        fleet._written = set(minutes)
        if meta is None:
            return fleet
        state = meta["detector"]
        closed = state["closed_until"]
        detector = fleet.detector
        detector.restore_labels(state)
        if closed is not None:
            tested = [(float(start), {(k, v): [n, c] for k, v, n, c in rows})
                      for minute in sorted(minutes) for start, rows in minutes[minute] if start + config.tick <= closed]
            detector.replay(((start, config.tick, counts) for start, counts in tested), closed)
            for start, counts in tested:
                minute = start // MINUTE * MINUTE
                if minute + MINUTE > closed:  # the minute still open: its key is written again
                    fleet._open.setdefault(minute, {})[start] = counts
        detector.load_state(state)
        # [sequence, watermark, waiting, part]; a meta key written before parts has no part
        fleet.sources = {int(p): Source(int(data[0]), None if data[1] is None else float(data[1]), bool(data[2]),
                                        int(data[3]) if len(data) > 3 else 0)
                         for p, data in meta["sources"].items()}
        return fleet


def _rows(counts: Mapping[Segment, list[int]]) -> list[list[Any]]:
    return [[kind, value, n, c] for (kind, value), (n, c) in counts.items()]
