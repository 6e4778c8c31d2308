"""One memory budget for the pair counts of a worker: exact while they fit, Space-Saving beyond.

Every bucket of every horizon of every pairs partition the worker owns keeps
two summaries (streams.pairs.ledger). They start without a capacity, so they
count exactly. :meth:`PairMemoryBudget.enforce` runs after each applied
message: when the summaries together take more than the budget, it gives the
largest ones a common capacity, the largest c for which every summary cut to
c (or smaller already) takes at most :data:`CUT_TO` of the budget, and they
drop their smallest counts down to it. From then on those summaries are
Space-Saving summaries of capacity c: they evict instead of growing, and their
counts carry errors (streams.pairs.sketch). The others go on counting exactly
until the next cut. Once the summaries take less than :data:`LIFT_BELOW` of the
budget (old buckets expired), every capacity is lifted again (to the deprecated
per-bucket caps where those are set): new items are counted in full again,
though a summary that dropped items stays inexact until its bucket expires.

Memory is accounted per entry, measured with tracemalloc on CPython 3.11
(tests/unit/test_pair_memory.py holds a worker's pair state to the budget):
the ledger's dict entry and the entry's share of the changelog table's copy
of its bucket (its base, and logs of up to half of it), plus two bytes per
character of the item's name (its string, and its copy in that JSON). A
summary that dropped items costs more per entry: errors, eviction levels, and
a dict that has seen deletions.

Nothing here knows about Kafka or Faust.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Final

from streams.pairs.ledger import BucketKey, PairLedger
from streams.pairs.sketch import SpaceSaving, finish

EXACT_ENTRY_BYTES: Final = 125  # measured 104-113 with a base, ~120 with logs of half of it, besides the name
LOSSY_ENTRY_BYTES: Final = 175  # measured ~146 with a base
BYTES_PER_CHAR: Final = 2
CUT_TO: Final = 0.8  # a cut leaves room, so that the next one is many messages away
LIFT_BELOW: Final = 0.5  # capacities are lifted once this little of the budget is used


def summary_bytes(summary: SpaceSaving) -> int:
    """What ``summary`` takes in the worker, by the accounting above."""
    per_entry = EXACT_ENTRY_BYTES if summary.is_exact else LOSSY_ENTRY_BYTES
    return len(summary) * per_entry + summary.key_chars * BYTES_PER_CHAR


def bytes_per_entry_once_cut(summary: SpaceSaving) -> float:
    """What an entry of ``summary`` takes once a cut made it drop items: lossy, with names of its average length."""
    return LOSSY_ENTRY_BYTES + summary.key_chars * BYTES_PER_CHAR / max(1, len(summary))


def cut_capacity(sizes: Iterable[tuple[int, float]], target: int) -> int:
    """The largest capacity c >= 1 with sum(min(n, c) * bytes per entry once cut) <= ``target``.

    Over (entries n, bytes per entry once cut) of every summary. Summaries left
    whole are counted at that rate too, which is at least theirs: the sum only
    grows with c (a cut summary costs more per entry than an exact one), and
    what a cut leaves is within ``target``. 1 when even that does not fit: a
    summary holds at least one item.
    """
    sized = [size for size in sizes if size[0]]
    low, high = 1, max((n for n, _ in sized), default=1)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(n, middle) * per_entry for n, per_entry in sized) <= target:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(slots=True)
class Usage:
    """What the last :meth:`PairMemoryBudget.enforce` found and did."""

    bytes: int = 0  # the pair state after it
    cuts: int = 0  # cuts so far
    dropped: int = 0  # entries dropped by cuts so far
    capacity: int | None = None  # the capacity of the last cut; None once lifted


class PairMemoryBudget:
    """Keeps the summaries of a worker's pair ledgers within ``limit_bytes`` together."""

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 1:
            raise ValueError(f"the pair memory budget must be at least 1 byte, got {limit_bytes!r}")
        self.limit_bytes = limit_bytes
        self.usage = Usage()
        # Each ledger's bytes as the last full pass found them, and whether any summary then had
        # a capacity other than its cap: with them, a message that changed one ledger is
        # checked against the budget by counting that ledger alone.
        self._ledger_bytes: dict[PairLedger, int] = {}
        self._capped = True

    def enforce(self, ledgers: Iterable[PairLedger], changed: PairLedger | None = None) -> Usage:
        """Cut the largest summaries when they take more than the budget, lift caps when far below it.

        With ``changed``, only that ledger changed since the last call (a message was applied
        to it): the others count as the last call found them. Without it (and after
        :meth:`forget`, e.g. once a flush expired buckets), every summary is counted again.
        """
        return finish(self.enforce_in_steps(ledgers, changed))

    def enforce_in_steps(self, ledgers: Iterable[PairLedger],
                         changed: PairLedger | None = None) -> Generator[None, None, Usage]:
        """:meth:`enforce`, in steps a caller may let the event loop run between (a cut takes many).

        Between two steps of a cut the summaries not cut yet are as before it; nothing may be
        added to the ledgers until the steps are done.
        """
        ledgers = list(ledgers)
        if changed is not None and all(ledger in self._ledger_bytes for ledger in ledgers):
            self._ledger_bytes[changed] = ledger_bytes(changed)
            used = sum(self._ledger_bytes[ledger] for ledger in ledgers)
            below_lift = used < self.limit_bytes * LIFT_BELOW
            if used <= self.limit_bytes and not (below_lift and self._capped):
                if below_lift:
                    self.usage.capacity = None
                self.usage.bytes = used
                return self.usage
        return (yield from self._enforce_all(ledgers))

    def forget(self) -> None:
        """Count every summary at the next :meth:`enforce`: ledgers changed other than by a message."""
        self._ledger_bytes = {}

    def _enforce_all(self, ledgers: list[PairLedger]) -> Generator[None, None, Usage]:
        held: list[tuple[PairLedger, BucketKey, SpaceSaving, int | None, int]] = [
            (ledger, key, summary, cap, summary_bytes(summary))
            for ledger in ledgers for key, summary, cap in ledger.summaries()
        ]
        used = sum(size for *_, size in held)
        usage = self.usage
        if used > self.limit_bytes:
            capacity = cut_capacity(((len(summary), bytes_per_entry_once_cut(summary)) for _, _, summary, _, _ in held),
                                    int(self.limit_bytes * CUT_TO))
            for ledger, key, summary, cap, _ in held:
                if len(summary) > capacity:
                    yield
                    usage.dropped += yield from summary.resize_in_steps(capacity if cap is None
                                                                        else min(cap, capacity))
                    ledger.mark_changed(key)  # the changelog holds what the worker holds, for the next recovery
            usage.cuts += 1
            usage.capacity = capacity
            used = sum(summary_bytes(summary) for _, _, summary, _, _ in held)
        elif used < self.limit_bytes * LIFT_BELOW:
            # Also after a restore: the changelog keeps the capacities a cut gave.
            for ledger, key, summary, cap, _ in held:
                if summary.capacity != cap:
                    summary.resize(cap)
                    ledger.mark_changed(key)  # its logs were applied under the old capacity
            usage.capacity = None
        usage.bytes = used
        self._ledger_bytes = {ledger: ledger_bytes(ledger) for ledger in ledgers}
        self._capped = any(summary.capacity != cap for _, _, summary, cap, _ in held)
        return usage


def ledger_bytes(ledger: PairLedger) -> int:
    """What the summaries of ``ledger`` take, by the accounting above."""
    return sum(summary_bytes(summary) for _, summary, _ in ledger.summaries())
