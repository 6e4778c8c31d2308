"""A customer partition's state: one summary per customer, kept in a disk-backed table, and rolling counts.

Customers are too many to hold in memory: their states live in the table
(RocksDB on disk, with a changelog) and only those touched since the last flush
are held here. The counts are histograms over event-time buckets (one dict per
bucket, a few per horizon), held whole.

Exact after a crash without writing a state twice: a flush writes every changed
customer and bucket as ``{"f": flush id, "v": new value, "p": value before the
flush}``, then the meta key (committed flush id, the (sequence, part) applied
per source partition, watermark, live buckets). A value whose flush id is not
committed in the meta key reads as its ``p``: the flush it came from is undone,
and its messages are applied again from the customers topic. A restore burns
the next flush id (``aborted``), written before the first flush that follows,
so that a value left by a crashed flush can never be taken for a later one's.

Exact when the broker fails a flush (a write refused, or timed out with its
answer lost) and the worker goes on. The take has already advanced the flush
id and cleared the changed customers and buckets; the local store holds every
value of the failed flush, the changelog any of them, or all of them and its
meta key. Left so, a customer the changelog missed would not be written again
until it changed, and a later meta key would commit the older value the
changelog holds. So :meth:`CustomerLedger.give_back`, called before anything
else takes (the flush holds its lock until then):

- aborts the failed flush id as a restore burns one: the meta key of the last
  committed flush, with that id added to ``aborted``, is written alone before
  the next flush's values. Wherever they landed, the failed flush's values then
  read as their ``p``, and a meta key of it that the broker stored is replaced;
- changes again every customer and bucket the failed flush wrote, with its
  value as of the last committed flush as ``p`` and its value now as ``v``:
  the next flush writes each of them whole and its meta key commits them all.
  They are held in memory until then, so no lookup reads the failed value;
- carries its deletions into the next flush (after its meta key), less the
  customers written again meanwhile.

Its messages stay unacked. A crash at any point after the failure restores the
last committed flush (the failed flush's values, and the next one's, read as
``p``; the messages are applied again), or the failed flush whole (the broker
stored its meta key, which is written only once its values are durable); either
way the restore burns a new id. A flush that fails after its meta key is
durable (deleting) is committed: only its deletions are carried.

Customers expire: each flush examines at most ``expiry_keys`` stored customers,
resuming where the last one stopped (wrapping round at the end), and deletes
those whose last order is more than a horizon older than the oldest bucket of
the horizon (:func:`expired`). Such a state counts in no bucket a view reads,
and any order of that customer no older than the oldest bucket starts it afresh
(:func:`streams.customers.state.merge`: a gap of more than the horizon), exactly
as if the state were absent; so a deletion changes no count, now or later, and
needs no versioning: it is written after the meta key, like the expired buckets.
A crash that loses a deletion leaves an expired state, which reads as absent
and is deleted again on a later pass. The margin of one horizon is what makes a
late order safe: only an order more than the horizon less one bucket behind the
partition's watermark (from an orders partition lagging that far behind) could
merge with a deleted state. Without the margin, an order a few seconds late
would merge with a state that had only just left the views, and the counts
would differ (tests/unit/test_customer_ledger.py catches it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streams.customers.state import SERIES, CustomerState, bucket_of, contributions, merge

META = "meta"
CUSTOMER = "c"
BUCKET = "h"

Lookup = Callable[[str], Any]  # a table key -> its JSON value, or None
# (prefix, after, n) -> up to n (key, JSON value) of the keys with that prefix after ``after`` (None: from the
# first), in key order
Scan = Callable[[str, str | None, int], list[tuple[str, Any]]]


@dataclass(frozen=True, slots=True)
class CustomerConfig:
    horizon: float = 30 * 86400.0
    bucket: float = 3600.0
    max_categories: int = 8
    expiry_keys: int = 2_000  # stored customers examined for expiry per flush; 0: never expire


def meta_key(partition: int) -> str:
    return f"{partition}/{META}"


def customer_key(partition: int, customer: str) -> str:
    return f"{partition}/{CUSTOMER}/{customer}"


def bucket_key(partition: int, start: float) -> str:
    return f"{partition}/{BUCKET}/{start:.0f}"


def expired(last_at: float, oldest: float, horizon: float) -> bool:
    """Whether a stored customer whose last order was at ``last_at`` can be deleted.

    True when it counts in no view and no order to come can merge with it:
    ``oldest`` is the oldest bucket inside the horizon of the partition's
    watermark, and an order at or after it is more than a horizon after the
    customer's last order, so it starts the customer afresh.
    """
    return last_at + horizon < oldest


@dataclass
class CustomerMeta:
    flush: int = 0
    aborted: list[int] = field(default_factory=list)
    sources: dict[int, tuple[int, int]] = field(default_factory=dict)  # source -> (sequence, part) applied
    watermark: float | None = None
    buckets: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A copy: the lists are not shared with this meta (a given-back flush appends to ``aborted``)."""
        return {"flush": self.flush, "aborted": list(self.aborted), "watermark": self.watermark,
                "buckets": list(self.buckets),
                "sources": {str(p): list(v) for p, v in self.sources.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CustomerMeta:
        return cls(int(data["flush"]), [int(a) for a in data["aborted"]],
                   {int(p): (int(v[0]), int(v[1])) for p, v in data["sources"].items()},
                   data["watermark"], [float(b) for b in data["buckets"]])

    @property
    def next_flush(self) -> int:
        return max([self.flush, *self.aborted]) + 1

    def committed(self, flush: int) -> bool:
        return flush <= self.flush and flush not in self.aborted


Histogram = dict[str, dict[str, int]]  # series -> first category -> customers
Touched = dict[str, tuple[CustomerState | None, CustomerState | None]]  # customer -> (as of the last flush, now)


@dataclass
class CustomerChanges:
    writes: dict[str, Any]  # versioned values, written first
    meta: tuple[str, dict[str, Any]]  # written once the writes are durable
    deletes: list[str]  # expired buckets and customers, deleted once the meta key is durable
    expired_customers: int = 0  # of the deletes
    # What the take cleared, given back if the broker fails the flush (CustomerLedger.give_back):
    flush: int = 0
    committed: dict[str, Any] = field(default_factory=dict)  # the meta key of the last committed flush
    touched: Touched = field(default_factory=dict)  # the customers written
    bucket_bases: dict[float, Histogram | None] = field(default_factory=dict)  # the buckets written


@dataclass
class CustomerView:
    """The rolling counts of one horizon: totals per series and per first category."""

    watermark: float | None
    totals: dict[str, int]
    by_first_category: dict[str, dict[str, int]]


class CustomerLedger:
    def __init__(self, partition: int, config: CustomerConfig, lookup: Lookup, scan: Scan | None = None) -> None:
        self.partition = partition
        self.config = config
        self.lookup = lookup
        self.scan = scan  # None: customers never expire
        self.expiry_cursor: str | None = None  # the last customer key examined for expiry; None: start over
        self.customers_expired = 0  # deleted since this ledger was restored
        self.meta = CustomerMeta()
        self.histograms: dict[float, Histogram] = {}
        # Touched since the last flush: customer -> (state as of the last flush, state now).
        self.touched: Touched = {}
        self.bucket_bases: dict[float, Histogram | None] = {}  # buckets as of the last flush, of changed ones
        # After a restore or a failed flush: the meta key of the last committed flush, with the flush id
        # burned or aborted; durable before the next flush.
        self.burned: dict[str, Any] | None = None
        self.expired: list[str] = []  # keys of buckets gone past the horizon, deleted after the next meta key
        self.committed = self.meta.to_dict()  # the meta key of the last flush taken, durable unless given back
        self.carried_deletes: list[str] = []  # of failed flushes, made by the next one

    # -- applying messages ---------------------------------------------------
    def apply(self, message: dict[str, Any]) -> bool:
        """Apply one message from the customers topic once; False when it was applied before."""
        source, position = int(message["source"]), (int(message["sequence"]), int(message["part"]))
        if position <= self.meta.sources.get(source, (0, -1)):
            return False
        self.meta.sources[source] = position
        config = self.config
        for customer, data in message["customers"].items():
            delta = CustomerState.from_json(data)
            before = self.state(customer)
            after = merge(before, delta, config.horizon, config.max_categories, self.oldest_bucket())
            self.touched[customer] = (self.touched[customer][0], after)
            watermark = self.meta.watermark
            if watermark is None or delta.last_at > watermark:
                self.meta.watermark = delta.last_at
            self._count(before, -1)
            self._count(after, +1)
        self._expire_buckets()
        return True

    def state(self, customer: str) -> CustomerState | None:
        """The customer's state now (read from the table on first touch since the last flush)."""
        known = self.touched.get(customer)
        if known is not None:
            return known[1]
        state = self._stored_state(self.lookup(customer_key(self.partition, customer)))
        self.touched[customer] = (state, state)
        return state

    def _stored_state(self, value: Any) -> CustomerState | None:
        """A stored customer value as of the last committed flush."""
        data = self._stored_json(value)
        return None if data is None else CustomerState.from_json(data)

    def _stored_json(self, value: Any) -> list[Any] | None:
        if value is None:
            return None
        data: list[Any] | None = value["v"] if self.meta.committed(value["f"]) else value["p"]
        return data

    def _count(self, state: CustomerState | None, sign: int) -> None:
        oldest = self.oldest_bucket()
        for series, start, category in contributions(state, self.config.bucket):
            if oldest is not None and start < oldest:
                continue  # outside the horizon for good: no view reads it
            histogram = self.histograms.get(start)
            if start not in self.bucket_bases:
                self.bucket_bases[start] = None if histogram is None else {s: dict(c) for s, c in histogram.items()}
            if histogram is None:
                histogram = self.histograms[start] = {}
            counts = histogram.setdefault(series, {})
            count = counts.get(category, 0) + sign
            if count:
                counts[category] = count
            else:
                del counts[category]

    def oldest_bucket(self) -> float | None:
        """The oldest bucket inside the horizon of the partition's watermark."""
        watermark = self.meta.watermark
        if watermark is None:
            return None
        return bucket_of(watermark, self.config.bucket) - self.config.horizon + self.config.bucket

    def _expire_buckets(self) -> None:
        oldest = self.oldest_bucket()
        if oldest is None:
            return
        for start in [start for start in self.histograms if start < oldest]:
            del self.histograms[start]
            self.bucket_bases.pop(start, None)
            self.expired.append(bucket_key(self.partition, start))

    # -- views -----------------------------------------------------------------
    def view(self) -> CustomerView:
        totals = dict.fromkeys(SERIES, 0)
        by_category: dict[str, dict[str, int]] = {series: {} for series in SERIES}
        for histogram in list(self.histograms.values()):
            for series, counts in histogram.items():
                of_series = by_category[series]
                for category, count in counts.items():
                    totals[series] += count
                    of_series[category] = of_series.get(category, 0) + count
        return CustomerView(self.meta.watermark, totals, by_category)

    # -- flushing ----------------------------------------------------------------
    def take_changes(self) -> CustomerChanges | None:
        """The writes of the state as of now: versioned values, then the meta key, then deletions."""
        gone = self._expired_customers()
        deletes = list(dict.fromkeys(self._carried_deletes() + self.expired + gone))
        if not self.touched and not self.bucket_bases and not deletes:
            return None
        flush = self.meta.next_flush
        writes: dict[str, Any] = {}
        written: Touched = {}
        for customer, (before, after) in self.touched.items():
            if before is not after:
                written[customer] = (before, after)
                writes[customer_key(self.partition, customer)] = {
                    "f": flush, "v": None if after is None else after.to_json(),
                    "p": None if before is None else before.to_json()}
        for start, base in self.bucket_bases.items():
            writes[bucket_key(self.partition, start)] = {"f": flush, "v": self.histograms.get(start), "p": base}
        bases, committed = self.bucket_bases, self.committed
        self.touched = {}
        self.bucket_bases = {}
        self.expired = []
        self.meta.flush = flush
        self.meta.buckets = sorted(self.histograms)
        self.committed = self.meta.to_dict()
        prefix = customer_key(self.partition, "")
        expired_customers = sum(key.startswith(prefix) for key in deletes)
        return CustomerChanges(writes, (meta_key(self.partition), self.committed), deletes, expired_customers,
                               flush, committed, written, bases)

    def _carried_deletes(self) -> list[str]:
        """The deletions failed flushes left, less the customers this take writes (touched since)."""
        carried, self.carried_deletes = self.carried_deletes, []
        prefix = customer_key(self.partition, "")
        return [key for key in carried if not (key.startswith(prefix) and key[len(prefix):] in self.touched)]

    def give_back(self, burned: tuple[str, dict[str, Any]] | None, changes: CustomerChanges | None) -> None:
        """The flush of ``burned`` and ``changes`` failed before its meta key was known durable.

        Called before anything else takes. Without ``changes`` (the burned meta key
        failed, nothing was taken) the next flush writes ``burned`` again. With them,
        the failed flush id is aborted (see the module docstring): :attr:`burned` is
        the last committed meta key with that id in ``aborted``, written alone before
        the next flush's values; the customers and buckets it wrote are changed
        again with their values as of the last committed flush as ``p``, and its
        deletions are carried into the next flush.
        """
        if changes is None:
            if burned is not None:
                self.burned = burned[1]
            return
        committed = dict(changes.committed)
        committed["aborted"] = [*committed["aborted"], changes.flush]
        self.burned = self.committed = committed
        self.meta.flush = committed["flush"]
        self.meta.aborted.append(changes.flush)
        for customer, (before, after) in changes.touched.items():
            now = self.touched[customer][1] if customer in self.touched else after
            self.touched[customer] = (before, now)
        oldest = self.oldest_bucket()
        for start, base in changes.bucket_bases.items():
            if oldest is None or start >= oldest:  # else expired since: deleted after the next meta key
                self.bucket_bases[start] = base
        self.carried_deletes = changes.deletes + self.carried_deletes

    def carry_deletes(self, changes: CustomerChanges) -> None:
        """The flush of ``changes`` failed after its meta key was durable: the next flush makes its deletions."""
        self.carried_deletes = changes.deletes + self.carried_deletes

    def _expired_customers(self) -> list[str]:
        """The keys of expired customers among the next ``expiry_keys`` stored, resuming where the last pass stopped.

        Customers touched since the last flush are left for a later pass: this
        flush writes them.
        """
        oldest = self.oldest_bucket()
        limit = self.config.expiry_keys
        if self.scan is None or oldest is None or limit <= 0:
            return []
        prefix = customer_key(self.partition, "")
        found = self.scan(prefix, self.expiry_cursor, limit)
        self.expiry_cursor = found[-1][0] if len(found) == limit else None
        gone = []
        horizon = self.config.horizon
        for key, value in found:
            data = self._stored_json(value)  # [orders, last_at, ...]: CustomerState.to_json
            if key[len(prefix):] not in self.touched and (data is None or expired(data[1], oldest, horizon)):
                gone.append(key)
        self.customers_expired += len(gone)
        return gone

    def burned_flush(self) -> tuple[str, dict[str, Any]] | None:
        """After a restore, the meta key that records the burned flush id: durable before the next flush."""
        burned, self.burned = self.burned, None
        return None if burned is None else (meta_key(self.partition), burned)

    # -- recovery --------------------------------------------------------------------
    @classmethod
    def restore(cls, partition: int, config: CustomerConfig, lookup: Lookup,
                scan: Scan | None = None) -> CustomerLedger:
        """The ledger as of the last committed flush; what a crashed flush wrote reads as undone."""
        ledger = cls(partition, config, lookup, scan)
        meta = lookup(meta_key(partition))
        ledger.meta = CustomerMeta() if meta is None else CustomerMeta.from_dict(meta)
        for start in ledger.meta.buckets:
            value = lookup(bucket_key(partition, start))
            histogram = None if value is None else value["v"] if ledger.meta.committed(value["f"]) else value["p"]
            if histogram:
                ledger.histograms[start] = histogram
        ledger.meta.aborted.append(ledger.meta.next_flush)
        ledger.burned = ledger.committed = ledger.meta.to_dict()
        return ledger
