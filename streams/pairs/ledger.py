"""The pair state of one pairs-topic partition: counts per horizon bucket, read together in views.

Per (horizon, bucket) a :class:`PairBucket` keeps the exact order count N and
two Space-Saving summaries (products, and pairs keyed ``A<US>B``). They count
exactly until the worker's memory budget (streams.pairs.budget) gives them a
capacity; from then on a count may be above the truth by at most the summary's
floor, and its guaranteed part (count - error) is never above it. A bucket
applies each (source partition, outbox sequence, part) once, in order: a
resent outbox (after a crash) or a duplicate part counts nothing. A
:class:`HorizonView` reads the newest buckets of a horizon together and ranks a
product's companions by guaranteed count.

The changelog holds each bucket as a *base* (the whole bucket, key
``<partition>/<horizon>/<start>``, with its generation) and *logs*: the
messages applied since, as received, one key per flush
(``.../<start>/<generation>.<n>``). A flush writes a log, so what it writes
grows with the traffic, not with the bucket; it writes a new base once the
logs would reach half of the base (and after the budget cut the bucket). The
logs of the generation before are deleted at the next flush, once the new
base is durable; recovery applies the logs of a base's generation to it and
deletes any other.

Nothing here knows about Kafka or Faust.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.orders.facts import PAIR_SEPARATOR
from streams.pairs.recommendations import Companion, confidence, lift
from streams.pairs.sketch import SpaceSaving

FLUSHED = "flushed"  # the key that closes a flush of a pairs partition

BucketKey = tuple[str, float]  # (horizon label, bucket start)


@dataclass(slots=True)
class PairBucket:
    products: SpaceSaving
    pairs: SpaceSaving
    orders: int = 0
    # source partition -> [outbox sequence, part] of the newest message applied
    applied: dict[str, list[int]] = field(default_factory=dict)
    generation: int = 0  # of the base in the changelog
    logs: int = 0  # logs written on that base
    logged: int = 0  # their bytes
    pending: list[bytes] = field(default_factory=list)  # messages applied since the last flush, as received
    rebase: bool = True  # the next flush writes a base (new bucket, or cut by the budget)

    @classmethod
    def empty(cls, product_capacity: int | None = None, pair_capacity: int | None = None) -> PairBucket:
        """A bucket whose summaries count exactly until given a capacity (None: none yet)."""
        return cls(SpaceSaving(product_capacity), SpaceSaving(pair_capacity))

    @property
    def exact(self) -> bool:
        return self.products.is_exact and self.pairs.is_exact

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
        # Copies (positions are replaced, not changed): a flush writes it after other messages may be applied.
        return {"orders": self.orders, "applied": dict(self.applied), "generation": self.generation,
                "products": self.products.to_dict(), "pairs": self.pairs.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairBucket:
        """A bucket from its base; state written before logs has no generation (0)."""
        return cls(SpaceSaving.from_dict(data["products"]), SpaceSaving.from_dict(data["pairs"]),
                   int(data["orders"]), {source: _position(last) for source, last in data["applied"].items()},
                   int(data.get("generation", 0)), rebase=False)

    def json_size(self) -> int:
        """About the bytes of its base: names, and a dozen per count."""
        products, pairs = self.products, self.pairs
        return products.key_chars + pairs.key_chars + 12 * (len(products) + len(pairs))


def _position(applied: int | list[int]) -> list[int]:
    """[sequence, part]; state written before messages had parts holds the sequence alone, applied whole."""
    return [applied, 2**62] if isinstance(applied, int) else list(applied)


@dataclass(slots=True)
class HorizonView:
    """The buckets of one horizon read together: N, n_A and guaranteed pair counts.

    A pair's guaranteed count over the horizon is the sum of its guaranteed
    counts per bucket (0 where a bucket does not hold it): never above the
    truth, and below it by at most :attr:`error_bound`, the sum of the pair
    summaries' floors. That is also the most a pair the view does not hold can
    have. n_A sums the product summaries' estimates: exact while the view is,
    else never below the truth, so that confidence and lift from a guaranteed
    count are never above theirs.
    """

    horizon: str
    buckets: list[PairBucket]
    _orders_with: dict[str, int] = field(default_factory=dict, init=False, repr=False)  # n_A looked up

    @property
    def orders(self) -> int:
        """N: every order of the horizon (always exact)."""
        return sum(bucket.orders for bucket in self.buckets)

    @property
    def exact(self) -> bool:
        return all(bucket.exact for bucket in self.buckets)

    @property
    def error_bound(self) -> int:
        """The most a guaranteed pair count is below the truth; 0 while exact."""
        return sum(bucket.pairs.floor for bucket in self.buckets)

    @property
    def product_error_bound(self) -> int:
        """The most n_A is above the truth; 0 while the product summaries are exact."""
        return sum(bucket.products.floor for bucket in self.buckets)

    def orders_with(self, product: str) -> int:
        """n_A: orders with ``product`` (an upper bound once the product summaries drop items)."""
        known = self._orders_with.get(product)
        if known is None:
            known = self._orders_with[product] = sum(bucket.products.estimate(product) for bucket in self.buckets)
        return known

    def guaranteed_pairs(self) -> Counter[str]:
        """Every pair any bucket holds (``A<US>B``), with its guaranteed count over the horizon."""
        total: Counter[str] = Counter()
        for bucket in self.buckets:
            total.update(bucket.pairs.guaranteed_counts())
        return total

    def companions(self, min_support: int, pairs: Mapping[str, int] | None = None) -> dict[str, dict[str, int]]:
        """product -> {companion: guaranteed count}, for the pairs with at least ``min_support`` orders.

        ``pairs``: :meth:`guaranteed_pairs`, when the caller has them already.
        """
        grouped: dict[str, dict[str, int]] = {}
        for key, count in (self.guaranteed_pairs() if pairs is None else pairs).items():
            if count >= min_support:
                product, companion = key.split(PAIR_SEPARATOR, 1)
                of_product = grouped.get(product)
                if of_product is None:
                    grouped[product] = {companion: count}
                else:
                    of_product[companion] = count
        return grouped

    def companions_of(self, product: str) -> dict[str, int]:
        """One product's companions with their guaranteed counts (reads every pair of the view)."""
        prefix = product + PAIR_SEPARATOR
        found: Counter[str] = Counter()
        for bucket in self.buckets:
            for key, count in bucket.pairs.guaranteed_counts(prefix).items():
                found[key[len(prefix):]] += count
        return dict(found)

    def ranked(self, product: str, companions: Mapping[str, int], k: int, min_support: int) -> list[Companion]:
        """Top ``k`` companions of ``product`` with at least ``min_support`` guaranteed orders together.

        Sorted by guaranteed count, then lift, then id; confidence and lift are
        computed from the guaranteed count (README: error bound).
        """
        n_a = self.orders_with(product)
        n = self.orders
        ranked = [
            Companion(companion, count, confidence(count, n_a), lift(count, n_a, self.orders_with(companion), n))
            for companion, count in companions.items() if count >= min_support
        ]
        ranked.sort(key=lambda c: (-c.count, -c.lift, c.product_id))
        return ranked[:k]


def top_pairs(pairs: Mapping[str, int], limit: int) -> list[tuple[str, str, int]]:
    """The ``limit`` largest (a, b, count) of ``pairs`` (``a<US>b`` keys) with a < b: by count, then a, then b.

    Only the keys with the largest counts are split: those at or above the
    k-th largest count, k growing until ``limit`` of them have a < b.
    """
    if limit < 1 or not pairs:
        return []
    counts = sorted(pairs.values(), reverse=True)
    wanted = 2 * limit
    while True:
        threshold = counts[min(wanted, len(counts)) - 1]
        rows = [(a, b, count) for key, count in pairs.items() if count >= threshold
                for a, b in (key.split(PAIR_SEPARATOR, 1),) if a < b]
        if len(rows) >= limit or wanted >= len(counts):
            return heapq.nsmallest(limit, rows, key=lambda row: (-row[2], row[0], row[1]))
        wanted *= 4


class PairLedger:
    """The pair state of one pairs-topic partition: buckets per horizon.

    ``product_capacity`` and ``pair_capacity`` (deprecated settings) cap every
    bucket's summaries from the start; None leaves them to the memory budget.
    """

    def __init__(self, partition: int, horizons: Mapping[str, float], slots: int,
                 product_capacity: int | None = None, pair_capacity: int | None = None) -> None:
        self.partition = partition
        self.horizons = dict(horizons)
        self.slots = slots
        self.product_capacity = product_capacity
        self.pair_capacity = pair_capacity
        self.buckets: dict[BucketKey, PairBucket] = {}
        self._dirty: set[BucketKey] = set()
        self._stale: list[str] = []  # logs a new base replaced: deleted once it is durable
        # Logs whose new base a failed flush did not make durable: deleted a flush later (give_back).
        self._held: list[str] = []
        # What the last take wrote and deleted, and the logs it left to delete: for give_back.
        self._taken: tuple[list[BucketKey], list[str], list[str]] = ([], [], [])

    def apply(self, message: Mapping[str, Any], received: bytes | None = None) -> bool:
        """Fold in one pairs message (``received``: its JSON as it came, logged as is); False if not applied."""
        key = (str(message["horizon"]), float(message["bucket"]))
        if key[0] not in self.horizons:
            return False
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = PairBucket.empty(self.product_capacity, self.pair_capacity)
        applied = bucket.apply(message)
        if applied:
            bucket.pending.append(received if received is not None else orjson.dumps(message))
            self._dirty.add(key)
        return applied

    def summaries(self) -> Iterator[tuple[BucketKey, SpaceSaving, int | None]]:
        """(bucket key, summary, its cap from the settings) of every summary: what the memory budget shares."""
        for key, bucket in self.buckets.items():
            yield key, bucket.products, self.product_capacity
            yield key, bucket.pairs, self.pair_capacity

    def mark_changed(self, key: BucketKey) -> None:
        """The next flush writes the bucket's base: the budget changed it, and its logs no longer replay to it."""
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.rebase = True
            self._dirty.add(key)

    def take_changes(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """The table writes and deletes that make the changelog hold the buckets as they are now."""
        writes: dict[str, dict[str, Any]] = {}
        deletes, self._stale = self._stale, []  # the bases that replaced them are durable since the last flush
        taken = [key for key in self._dirty if key in self.buckets]
        for key in self._dirty:
            bucket = self.buckets.get(key)
            if bucket is None:
                continue
            name = self.table_key(key)
            pending = sum(len(message) for message in bucket.pending)
            if bucket.rebase or 2 * (bucket.logged + pending) > bucket.json_size():
                self._stale += _log_keys(name, bucket)
                bucket.generation, bucket.logs, bucket.logged, bucket.rebase = bucket.generation + 1, 0, 0, False
                writes[name] = bucket.to_dict()
            else:
                writes[f"{name}/{bucket.generation}.{bucket.logs}"] = {
                    "messages": [orjson.Fragment(message) for message in bucket.pending]}
                bucket.logs += 1
                bucket.logged += pending
            bucket.pending = []
        self._dirty = set()
        for key, bucket in self._expire():
            name = self.table_key(key)
            deletes += [name, *_log_keys(name, bucket)]
        self._stale += self._held  # this flush writes the bases that replace them
        self._held = []
        self._taken = (taken, deletes, list(self._stale))
        return writes, deletes

    def give_back(self) -> None:
        """The flush of the last take failed: the next one writes its buckets whole, as new bases.

        The changelog may hold any of that flush's bases and logs, or none: a new
        base (a new generation) supersedes them all, whatever landed. The logs its
        own new bases replaced may still be all the changelog has of them, so they
        are deleted only once a later base is durable (a flush after the next);
        its deletions are made by the next flush. Called before the next take.
        """
        keys, deletes, staled = self._taken
        for key in keys:
            self.mark_changed(key)
        self._held = staled + self._held
        self._stale = deletes + [key for key in self._stale if key not in set(staled)]
        self._taken = ([], [], [])

    def _expire(self) -> list[tuple[BucketKey, PairBucket]]:
        expired = []
        for horizon, seconds in self.horizons.items():
            starts = [start for (h, start) in self.buckets if h == horizon]
            if not starts:
                continue
            oldest = max(starts) - seconds
            expired += [(horizon, start) for start in starts if start <= oldest]
        return [(key, self.buckets.pop(key)) for key in expired]

    def table_key(self, key: BucketKey) -> str:
        start = key[1]
        return f"{self.partition}/{key[0]}/{int(start) if start.is_integer() else repr(start)}"

    def view(self, horizon: str) -> HorizonView:
        """The buckets of ``horizon`` within its span of the newest one, read together (nothing is copied)."""
        starts = sorted(start for (h, start) in self.buckets if h == horizon)
        if not starts:
            return HorizonView(horizon, [])
        oldest = starts[-1] - self.horizons[horizon]
        return HorizonView(horizon, [self.buckets[(horizon, start)] for start in starts if start > oldest])

    @classmethod
    def restore(cls, partition: int, horizons: Mapping[str, float], slots: int, product_capacity: int | None,
                pair_capacity: int | None, items: Iterable[tuple[str, Any]]) -> PairLedger:
        """The ledger as its changelog holds it: bases with the logs of their generation applied.

        Bases written before logs (and before the memory budget) restore too.
        Logs of another generation, or without a base, are deleted at the next flush.
        """
        ledger = cls(partition, horizons, slots, product_capacity, pair_capacity)
        logs: list[tuple[BucketKey, int, int, str, Any]] = []
        for key, value in items:
            parts = key.split("/")
            if len(parts) == 3:  # <partition>/<horizon>/<bucket start>; not the flush marker
                ledger.buckets[(parts[1], float(parts[2]))] = PairBucket.from_dict(value)
            elif len(parts) == 4:  # .../<generation>.<n>
                written_on, _, nth = parts[3].partition(".")
                logs.append(((parts[1], float(parts[2])), int(written_on), int(nth), key, value))
        for bucket_key, generation, number, key, value in sorted(logs, key=lambda log: log[:3]):
            bucket = ledger.buckets.get(bucket_key)
            if bucket is None or generation != bucket.generation or number != bucket.logs:
                ledger._stale.append(key)
                continue
            for message in value["messages"]:
                bucket.apply(message)
            bucket.logs += 1
            bucket.logged += len(orjson.dumps(value))
        return ledger


def _log_keys(name: str, bucket: PairBucket) -> list[str]:
    """The keys of the logs written on the bucket's current base."""
    return [f"{name}/{bucket.generation}.{n}" for n in range(bucket.logs)]
