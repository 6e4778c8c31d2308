"""Frequently bought together, on both sides of the repartition by product.

Orders are partitioned by order, but a product's companions must be counted
over all orders. So each source partition pre-aggregates what it applied into
one :class:`PairAccumulator` per (horizon, time bucket) and, once per flush,
sends one message per pairs-topic partition *q* and bucket (:func:`outbox_messages`):

* ``pairs``: for the products that *q* owns (:func:`owner_partition`), their
  companions and co-occurrence counts in the batch;
* ``products`` and ``orders``: the batch's order count per product and in all,
  sent to every *q*, because support and lift of A→B need n_B and N, and B may
  be owned elsewhere.

The receiving side keeps, per (q, horizon, bucket), a :class:`PairBucket`: the
exact order count N and two Space-Saving summaries (products, and pairs keyed
``A<US>B``) with fixed capacities, so memory is bounded whatever the
catalogue. A message carries its source partition and the outbox sequence
number of the flush that produced it; a bucket applies a sequence number once.
A message too large for Kafka is sent in parts (:func:`split_message`), each
with its part number; a bucket applies each (sequence, part) once, in order.

Nothing here knows about Kafka or Faust.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.pairs import PairAccumulator, SpaceSaving, confidence, lift
from streams.recommendations import Companion

PAIR_SEPARATOR = "\x1f"
FLUSHED = "flushed"  # the key that closes a flush of a pairs partition


def owner_partition(product_id: str, partitions: int) -> int:
    """The pairs-topic partition that owns ``product_id`` (stable across processes and versions)."""
    return zlib.crc32(product_id.encode()) % partitions


def bucket_size(horizon: float, slots: int) -> float:
    """Buckets of one horizon: the horizon split into ``slots`` equal buckets."""
    return horizon / slots


def outbox_messages(source: int, sequence: int, batches: Mapping[tuple[str, float], PairAccumulator],
                    partitions: int, max_bytes: int | None = None) -> list[dict[str, Any]]:
    """The messages of one flush of source partition ``source``: one per (q, horizon, bucket).

    An accumulator that stands for several keys (the ledger shares one between
    horizons whose buckets hold the same orders) is laid out once. With
    ``max_bytes``, a message whose JSON is larger is sent as parts that each fit.
    """
    messages: list[dict[str, Any]] = []
    laid_out: dict[int, tuple[dict[str, int], dict[int, dict[str, dict[str, int]]]]] = {}
    for (horizon, bucket), accumulator in sorted(batches.items()):
        if not accumulator.total_orders:
            continue
        known = laid_out.get(id(accumulator))
        if known is None:
            known = laid_out[id(accumulator)] = _message_contents(accumulator, partitions)
        products, pairs_by_owner = known
        for q in range(partitions):
            message = {
                "partition": q, "source": source, "sequence": sequence, "horizon": horizon, "bucket": bucket,
                "orders": accumulator.total_orders, "products": products, "pairs": pairs_by_owner.get(q, {}),
            }
            if max_bytes is None:
                messages.append(message)
            else:
                messages.extend(split_message(message, max_bytes))
    return messages


def split_message(message: dict[str, Any], max_bytes: int) -> list[dict[str, Any]]:
    """``message`` alone when its JSON takes at most ``max_bytes``, else parts that each do.

    The parts share the message's header; its product and pair counts are dealt
    out among them (a product's companions may span parts), and its order count
    goes with part 0. Applied in order, the parts add up to the message.
    """
    if len(orjson.dumps(message)) <= max_bytes:
        return [message]
    header = {k: v for k, v in message.items() if k not in ("orders", "products", "pairs")}
    empty = {**header, "orders": message["orders"], "part": 10**9, "parts": 10**9, "products": {}, "pairs": {}}
    # 256: a product key that starts a new part after being counted in the previous one.
    budget = max_bytes - len(orjson.dumps(empty)) - 256
    if budget < 1024:
        raise ValueError(f"max_bytes={max_bytes} leaves no room for the counts of a pairs message")
    chunks: list[tuple[dict[str, int], dict[str, dict[str, int]]]] = [({}, {})]
    used = 0

    def room_for(size: int) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        nonlocal used
        if used + size > budget:
            chunks.append(({}, {}))
            used = 0
        used += size
        return chunks[-1]

    for product, count in message["products"].items():
        room_for(len(orjson.dumps(product)) + len(str(count)) + 2)[0][product] = count
    for product, companions in message["pairs"].items():
        head = len(orjson.dumps(product)) + 4
        for companion, count in companions.items():
            size = len(orjson.dumps(companion)) + len(str(count)) + 2
            pairs = room_for(size if product in chunks[-1][1] else size + head)[1]
            pairs.setdefault(product, {})[companion] = count
    return [{**header, "orders": message["orders"] if i == 0 else 0, "part": i, "parts": len(chunks),
             "products": products, "pairs": pairs} for i, (products, pairs) in enumerate(chunks)]


def _message_contents(accumulator: PairAccumulator,
                      partitions: int) -> tuple[dict[str, int], dict[int, dict[str, dict[str, int]]]]:
    """The "products" of the accumulator's messages, and their "pairs" by pairs partition."""
    pairs_by_owner: dict[int, dict[str, dict[str, int]]] = {}
    for product, companions in accumulator.companion_counts().items():
        owner = owner_partition(product, partitions)
        of_owner = pairs_by_owner.get(owner)
        if of_owner is None:
            pairs_by_owner[owner] = {product: companions}
        else:
            of_owner[product] = companions
    return accumulator.product_counts(), pairs_by_owner


@dataclass(slots=True)
class PairBucket:
    products: SpaceSaving
    pairs: SpaceSaving
    orders: int = 0
    # source partition -> [outbox sequence, part] of the newest message applied
    applied: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def empty(cls, product_capacity: int, pair_capacity: int) -> PairBucket:
        return cls(SpaceSaving(product_capacity), SpaceSaving(pair_capacity))

    def apply(self, message: Mapping[str, Any]) -> bool:
        """Fold one outbox message in, once; False when its sequence was applied before."""
        source = str(message["source"])
        position = [message["sequence"], message.get("part", 0)]
        last = self.applied.get(source)
        if last is not None and position <= _position(last):
            return False
        self.applied[source] = position
        self.orders += message["orders"]
        self.products.add_many(message["products"].items())
        self.pairs.add_many([
            (prefix + companion, count)
            for product, companions in message["pairs"].items()
            for prefix in (product + PAIR_SEPARATOR,)
            for companion, count in companions.items()
        ])
        return True

    def to_dict(self) -> dict[str, Any]:
        return {"orders": self.orders, "applied": self.applied, "products": self.products.to_dict(),
                "pairs": self.pairs.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairBucket:
        return cls(SpaceSaving.from_dict(data["products"]), SpaceSaving.from_dict(data["pairs"]),
                   int(data["orders"]), {source: _position(last) for source, last in data["applied"].items()})


def _position(applied: int | list[int]) -> list[int]:
    """[sequence, part]; state written before messages had parts holds the sequence alone, applied whole."""
    return [applied, 2**62] if isinstance(applied, int) else list(applied)


@dataclass(slots=True)
class HorizonView:
    """The buckets of one horizon merged: N, product counts and pair counts."""

    horizon: str
    orders: int
    products: SpaceSaving
    pairs: SpaceSaving

    def companions(self) -> dict[str, list[tuple[str, int, int]]]:
        """product -> [(companion, estimate, error)] from the pair summary."""
        grouped: dict[str, list[tuple[str, int, int]]] = {}
        for key, estimate, error in self.pairs.entries():
            product, companion = key.split(PAIR_SEPARATOR, 1)
            grouped.setdefault(product, []).append((companion, estimate, error))
        return grouped

    def ranked(self, product: str, entries: Iterable[tuple[str, int, int]], k: int,
               min_support: int) -> list[Companion]:
        """Top ``k`` companions of ``product`` with at least ``min_support`` orders together.

        Sorted by count, then lift, then id. Counts are Space-Saving estimates
        capped at n_A (a co-occurrence cannot exceed the orders with A); exact
        while the summaries hold every item (see README: memory bound).
        """
        n_a = self.products.estimate(product)
        ranked = []
        for companion, estimate, error in entries:
            count = min(estimate, n_a)
            if count < min_support:
                continue
            n_b = self.products.estimate(companion)
            ranked.append(Companion(companion, count, confidence(count, n_a), lift(count, n_a, n_b, self.orders),
                                    min(error, count)))
        ranked.sort(key=lambda c: (-c.count, -c.lift, c.product_id))
        return ranked[:k]


class PairLedger:
    """The pair state of one pairs-topic partition: buckets per horizon."""

    def __init__(self, partition: int, horizons: Mapping[str, float], slots: int, product_capacity: int,
                 pair_capacity: int) -> None:
        self.partition = partition
        self.horizons = dict(horizons)
        self.slots = slots
        self.product_capacity = product_capacity
        self.pair_capacity = pair_capacity
        self.buckets: dict[tuple[str, float], PairBucket] = {}
        self._dirty: set[tuple[str, float]] = set()

    def apply(self, message: Mapping[str, Any]) -> bool:
        key = (str(message["horizon"]), float(message["bucket"]))
        if key[0] not in self.horizons:
            return False
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = PairBucket.empty(self.product_capacity, self.pair_capacity)
        applied = bucket.apply(message)
        if applied:
            self._dirty.add(key)
        return applied

    def take_changes(self) -> tuple[dict[str, bytes | dict[str, Any]], list[str]]:
        writes: dict[str, Any] = {}
        for key in self._dirty:
            bucket = self.buckets.get(key)
            if bucket is not None:
                writes[self.table_key(key)] = bucket.to_dict()
        self._dirty = set()
        deletes = [self.table_key(key) for key in self._expire()]
        return writes, deletes

    def _expire(self) -> list[tuple[str, float]]:
        expired = []
        for horizon, seconds in self.horizons.items():
            starts = [start for (h, start) in self.buckets if h == horizon]
            if not starts:
                continue
            oldest = max(starts) - seconds
            expired += [(horizon, start) for start in starts if start <= oldest]
        for key in expired:
            del self.buckets[key]
        return expired

    def table_key(self, key: tuple[str, float]) -> str:
        start = key[1]
        return f"{self.partition}/{key[0]}/{int(start) if start.is_integer() else repr(start)}"

    def view(self, horizon: str) -> HorizonView:
        """The newest ``slots`` buckets of ``horizon`` merged."""
        starts = sorted(start for (h, start) in self.buckets if h == horizon)
        products = SpaceSaving(self.product_capacity)
        pairs = SpaceSaving(self.pair_capacity)
        orders = 0
        if starts:
            oldest = starts[-1] - self.horizons[horizon]
            for start in starts:
                if start > oldest:
                    bucket = self.buckets[(horizon, start)]
                    orders += bucket.orders
                    products.merge(bucket.products)
                    pairs.merge(bucket.pairs)
        return HorizonView(horizon, orders, products, pairs)

    @classmethod
    def restore(cls, partition: int, horizons: Mapping[str, float], slots: int, product_capacity: int,
                pair_capacity: int, items: Iterable[tuple[str, Any]]) -> PairLedger:
        ledger = cls(partition, horizons, slots, product_capacity, pair_capacity)
        for key, value in items:
            parts = key.split("/")
            if len(parts) == 3:  # <partition>/<horizon>/<bucket start>; not the flush marker
                ledger.buckets[(parts[1], float(parts[2]))] = PairBucket.from_dict(value)
        return ledger
