"""streams.pairs.budget: one memory budget for a worker's pair counts; exact while they fit, guaranteed beyond.

Orders go through the same path as in the worker (per-flush accumulators,
outbox messages, the pair ledgers of every pairs partition, the budget after
each message) and the lists are compared with brute-force counting.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from itertools import combinations

import pytest

from streams.orders.windows import window_start
from streams.pairs.basket import PairAccumulator
from streams.pairs.budget import (
    CUT_TO,
    EXACT_ENTRY_BYTES,
    LOSSY_ENTRY_BYTES,
    PairMemoryBudget,
    cut_capacity,
    summary_bytes,
)
from streams.pairs.ledger import PairBucket, PairLedger, top_pairs
from streams.pairs.outbox import outbox_messages, owner_partition
from streams.pairs.sketch import SpaceSaving

PARTITIONS = 4
HORIZONS = {"24h": 86400.0}
SLOTS = 12
T0 = 1_790_000_000.0
K = 10
MIN_SUPPORT = 2

Order = tuple[float, tuple[str, ...]]  # event time, distinct products


def zipf_orders(seed: int, products: int, count: int, hours: float = 6.0) -> list[Order]:
    """Orders over ``hours`` of event time, products by Zipf popularity, a third with a bundle partner."""
    rng = random.Random(seed)
    catalogue = [f"p{n:05d}" for n in range(products)]
    weights = [1 / (rank + 1) ** 1.05 for rank in range(products)]
    orders = []
    for n in range(count):
        basket = set(rng.choices(catalogue, weights, k=rng.choice((1, 2, 2, 3, 3, 4, 6))))
        if rng.random() < 0.35:
            first = min(basket)
            basket.add(catalogue[(catalogue.index(first) + 1 + rng.randrange(3)) % products])
        orders.append((T0 + hours * 3600 * n / count, tuple(sorted(basket))))
    return orders


def feed(orders: list[Order], ledgers: list[PairLedger], budget: PairMemoryBudget,
         flush_every: int = 250, recount: bool = False) -> Iterator[int]:
    """Apply ``orders`` flush by flush as the worker does; yields the budget's accounting after every message.

    As the worker, the budget is told which ledger a message changed, and forgets what it
    counted once a flush expired buckets; ``recount`` counts every summary after every message.
    """
    for sequence, first in enumerate(range(0, len(orders), flush_every), start=1):
        batches: dict[tuple[str, float], PairAccumulator] = {}
        for event_time, basket in orders[first:first + flush_every]:
            for label, seconds in HORIZONS.items():
                key = (label, window_start(event_time, seconds / SLOTS))
                batches.setdefault(key, PairAccumulator()).add_baskets([basket])
        for message in outbox_messages(0, sequence, batches, PARTITIONS):
            ledger = ledgers[message["partition"]]
            if ledger.apply(message):
                yield budget.enforce(ledgers, changed=None if recount else ledger).bytes
        for ledger in ledgers:
            ledger.take_changes()
        budget.forget()


def run(orders: list[Order], limit_bytes: int) -> tuple[list[PairLedger], PairMemoryBudget, int]:
    ledgers = [PairLedger(q, HORIZONS, SLOTS) for q in range(PARTITIONS)]
    budget = PairMemoryBudget(limit_bytes)
    peak = max(feed(orders, ledgers, budget))
    return ledgers, budget, peak


def truth(orders: list[Order]) -> tuple[int, Counter[str], Counter[tuple[str, str]]]:
    with_product: Counter[str] = Counter()
    together: Counter[tuple[str, str]] = Counter()
    for _, basket in orders:
        with_product.update(basket)
        for a, b in combinations(basket, 2):
            together[(a, b)] += 1
            together[(b, a)] += 1
    return len(orders), with_product, together


def exact_lists(orders: list[Order]) -> dict[str, list[tuple[str, int]]]:
    n, with_product, together = truth(orders)
    rows: dict[str, list[tuple[str, int, float]]] = {}
    for (a, b), count in together.items():
        if count >= MIN_SUPPORT:
            rows.setdefault(a, []).append((b, count, count * n / (with_product[a] * with_product[b])))
    return {a: [(b, count) for b, count, _ in sorted(r, key=lambda r: (-r[1], -r[2], r[0]))[:K]]
            for a, r in rows.items()}


def published_lists(ledgers: list[PairLedger]) -> dict[str, list[tuple[str, int]]]:
    lists = {}
    for ledger in ledgers:
        view = ledger.view("24h")
        for product, companions in view.companions(MIN_SUPPORT).items():
            assert owner_partition(product, PARTITIONS) == ledger.partition
            lists[product] = [(c.product_id, c.count) for c in view.ranked(product, companions, K, MIN_SUPPORT)]
    return lists


@pytest.fixture(scope="module")
def orders() -> list[Order]:
    return zipf_orders(seed=16, products=3000, count=12_000)


# --- the capacity of a cut ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "target", "expected"),
    [
        ([(10, 150.0), (10, 150.0)], 3000, 10),  # everything fits
        ([(10, 100.0), (10, 100.0)], 1000, 5),  # half of each
        ([(10, 200.0), (10, 200.0)], 1000, 2),  # entries cost more
        ([(100, 100.0), (4, 100.0)], 2400, 20),  # the small one keeps its 4: 20 + 4 entries
        ([(100, 100.0), (0, 100.0)], 1, 1),  # never below one item
        ([], 100, 1),
    ],
)
def test_a_cut_gives_the_largest_summaries_the_largest_common_capacity_that_fits(
        sizes: list[tuple[int, float]], target: int, expected: int) -> None:
    assert cut_capacity(sizes, target) == expected


def test_a_summary_costs_more_per_entry_once_it_dropped_items() -> None:
    summary = SpaceSaving()
    summary.add_many([("ab", 1), ("cd", 2)])
    assert summary_bytes(summary) == 2 * EXACT_ENTRY_BYTES + 4 * 2
    summary.resize(1)
    assert summary_bytes(summary) == LOSSY_ENTRY_BYTES + 2 * 2


@pytest.mark.parametrize("limit", [0, -5])
def test_a_budget_below_one_byte_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        PairMemoryBudget(limit)


@pytest.mark.parametrize(
    ("pairs", "limit", "expected"),
    [
        ({}, 3, []),
        ({"a\x1fb": 1}, 0, []),
        ({"a\x1fb": 2, "b\x1fa": 2, "c\x1fd": 5}, 1, [("c", "d", 5)]),
        ({"b\x1fa": 9, "a\x1fc": 1}, 2, [("a", "c", 1)]),  # b -> a is counted where a lives
        ({"a\x1fc": 3, "b\x1fc": 3, "a\x1fb": 3}, 2, [("a", "b", 3), ("a", "c", 3)]),  # ties by a, then b
        ({**{f"z{n}\x1fa": 100 for n in range(50)}, "a\x1fb": 1}, 1, [("a", "b", 1)]),  # past many b -> a
    ],
)
def test_top_pairs_are_the_largest_counts_of_pairs_a_before_b(
        pairs: dict[str, int], limit: int, expected: list[tuple[str, str, int]]) -> None:
    assert top_pairs(pairs, limit) == expected


# --- within the budget: exact ----------------------------------------------------------


def test_counts_that_fit_the_budget_are_exact_and_give_the_brute_force_lists(orders: list[Order]) -> None:
    ledgers, budget, _ = run(orders, limit_bytes=10**9)
    assert budget.usage.cuts == 0
    views = [ledger.view("24h") for ledger in ledgers]
    assert all(view.exact and view.error_bound == 0 for view in views)
    assert published_lists(ledgers) == exact_lists(orders)
    n, with_product, _ = truth(orders)
    assert {view.orders for view in views} == {n}
    assert all(views[0].orders_with(product) == count for product, count in with_product.items())


# --- beyond the budget: guaranteed ------------------------------------------------------


@pytest.fixture(scope="module")
def squeezed(orders: list[Order]) -> tuple[list[PairLedger], PairMemoryBudget, int]:
    _, exact_budget, _ = run(orders, limit_bytes=10**9)
    return run(orders, limit_bytes=exact_budget.usage.bytes // 4)


def test_beyond_the_budget_the_state_stays_within_it_but_for_one_message(
        squeezed: tuple[list[PairLedger], PairMemoryBudget, int]) -> None:
    ledgers, budget, peak = squeezed
    assert budget.usage.cuts > 0
    assert peak <= budget.limit_bytes
    assert budget.usage.bytes == sum(summary_bytes(s) for ledger in ledgers for _, s, _ in ledger.summaries())
    assert not all(ledger.view("24h").exact for ledger in ledgers)


def test_beyond_the_budget_no_count_is_above_the_truth_nor_below_it_by_more_than_the_error_bound(
        orders: list[Order], squeezed: tuple[list[PairLedger], PairMemoryBudget, int]) -> None:
    ledgers, _, _ = squeezed
    _, with_product, together = truth(orders)
    checked = 0
    for ledger in ledgers:
        view = ledger.view("24h")
        bound = view.error_bound
        assert bound > 0
        held = view.guaranteed_pairs()
        for (a, b), true in together.items():
            if owner_partition(a, PARTITIONS) != ledger.partition:
                continue
            guaranteed = held.get(f"{a}\x1f{b}", 0)
            assert true - bound <= guaranteed <= true, (a, b)
            checked += 1
        for product, true in with_product.items():
            assert true <= view.orders_with(product) <= true + view.product_error_bound
    assert checked == len(together)  # each pair is checked where its product is owned


def test_beyond_the_budget_a_list_holds_every_companion_the_error_bound_cannot_hide(
        orders: list[Order], squeezed: tuple[list[PairLedger], PairMemoryBudget, int]) -> None:
    ledgers, _, _ = squeezed
    _, _, together = truth(orders)
    companions: dict[str, dict[str, int]] = {}
    for (a, b), count in together.items():
        companions.setdefault(a, {})[b] = count
    published = published_lists(ledgers)
    certain = 0
    for ledger in ledgers:
        bound = ledger.view("24h").error_bound
        for product, rows in exact_lists(orders).items():
            if owner_partition(product, PARTITIONS) != ledger.partition:
                continue
            listed = dict(published.get(product, []))
            assert all(count <= together[(product, companion)] for companion, count in listed.items())
            top = {companion for companion, _ in rows}
            outside = max((n for c, n in companions[product].items() if c not in top), default=0)
            # Its guaranteed count is above every outsider's true count, which bounds theirs.
            for companion, count in rows:
                if count - bound > outside and count - bound >= MIN_SUPPORT:
                    assert companion in listed, (product, companion, count, bound)
                    certain += 1
    assert certain > 20


def test_a_cut_rewrites_the_buckets_it_changed_so_that_recovery_stays_within_the_budget(
        orders: list[Order]) -> None:
    ledgers = [PairLedger(q, HORIZONS, SLOTS) for q in range(PARTITIONS)]
    budget = PairMemoryBudget(10**9)
    list(feed(orders[:4000], ledgers, budget))
    budget.limit_bytes = budget.usage.bytes // 3
    usage = budget.enforce(ledgers)
    assert usage.cuts == 1 and usage.bytes <= budget.limit_bytes * CUT_TO
    for ledger in ledgers:
        writes, _ = ledger.take_changes()
        restored = PairLedger.restore(ledger.partition, HORIZONS, SLOTS, None, None, list(writes.items()))
        assert {key: bucket.to_dict() for key, bucket in restored.buckets.items()} == {
            key: bucket.to_dict() for key, bucket in ledger.buckets.items()}


def test_a_cut_in_steps_leaves_the_state_of_a_cut_in_one_go(orders: list[Order]) -> None:
    """The worker lets the event loop run between the steps of a cut: one step per summary at least."""
    states = []
    for stepwise in (False, True):
        ledgers = [PairLedger(q, HORIZONS, SLOTS) for q in range(PARTITIONS)]
        budget = PairMemoryBudget(10**9)
        list(feed(orders[:4000], ledgers, budget))
        budget.limit_bytes = budget.usage.bytes // 3
        steps = 0
        if stepwise:
            for _ in budget.enforce_in_steps(ledgers):
                steps += 1
        else:
            budget.enforce(ledgers)
        cut = sum(1 for ledger in ledgers for _, summary, _ in ledger.summaries() if not summary.is_exact)
        assert cut > 1 and (not stepwise or steps >= cut)
        states.append(([{key: b.to_dict() for key, b in ledger.buckets.items()} for ledger in ledgers],
                       budget.usage))
    assert states[0] == states[1]


def test_a_bucket_taken_for_a_flush_keeps_its_state_while_more_messages_are_applied() -> None:
    """A pairs flush writes its buckets one step at a time: what it took must not follow later messages."""
    bucket = PairBucket.empty()
    message = {"source": 0, "sequence": 1, "orders": 2, "products": {"a": 2, "b": 1}, "pairs": {"a": {"b": 1}}}
    bucket.apply(message)
    taken = bucket.to_dict()
    bucket.apply({**message, "sequence": 2})
    assert (taken["orders"], taken["applied"], taken["pairs"]["counts"]) == (2, {"0": [1, 0]}, {"a\x1fb": 1})


@pytest.mark.parametrize("limit_bytes", [10**9, 1_500_000, 400_000])
def test_counting_the_changed_ledger_alone_accounts_cuts_and_lifts_as_counting_every_summary(
        orders: list[Order], limit_bytes: int) -> None:
    """The budget told which ledger a message changed decides as one that counts every summary each time."""
    states = []
    for recount in (False, True):
        ledgers = [PairLedger(q, HORIZONS, SLOTS) for q in range(PARTITIONS)]
        budget = PairMemoryBudget(limit_bytes)
        # Six hours of orders, then the same again a day later: the old buckets expire, capacities are lifted.
        later = [(t + 86400.0, basket) for t, basket in orders]
        accounted = list(feed(orders + later, ledgers, budget, recount=recount))
        states.append((accounted, budget.usage, published_lists(ledgers)))
    (fast, fast_usage, fast_lists), (full, full_usage, full_lists) = states
    assert fast == full
    assert fast_usage == full_usage
    assert fast_lists == full_lists
    if limit_bytes < 10**9:
        assert fast_usage.cuts > 0


def test_capacities_are_lifted_once_the_state_is_far_below_the_budget(orders: list[Order]) -> None:
    ledgers = [PairLedger(q, HORIZONS, SLOTS) for q in range(PARTITIONS)]
    budget = PairMemoryBudget(10**9)
    list(feed(orders, ledgers, budget))
    budget.limit_bytes = budget.usage.bytes // 2
    budget.enforce(ledgers)
    assert any(s.capacity is not None for ledger in ledgers for _, s, _ in ledger.summaries())
    budget.limit_bytes = 10**9
    budget.enforce(ledgers)
    assert all(s.capacity is None for ledger in ledgers for _, s, _ in ledger.summaries())


def test_the_deprecated_capacities_cap_every_bucket_from_the_start() -> None:
    ledger = PairLedger(0, HORIZONS, SLOTS, product_capacity=3, pair_capacity=2)
    ledger.apply({"source": 0, "sequence": 1, "horizon": "24h", "bucket": 0.0, "orders": 2,
                  "products": {"a": 2, "b": 1, "c": 1, "d": 1}, "pairs": {"a": {"b": 1, "c": 1, "d": 1}}})
    bucket = ledger.buckets[("24h", 0.0)]
    assert (len(bucket.products), len(bucket.pairs)) == (3, 2)
    budget = PairMemoryBudget(10**9)
    budget.enforce([ledger])  # far below the budget: lifted only up to the caps
    assert (bucket.products.capacity, bucket.pairs.capacity) == (3, 2)


# --- state written before the budget ------------------------------------------------------


def test_a_bucket_written_before_the_budget_restores_and_is_uncapped_when_memory_allows() -> None:
    old = {"orders": 3, "applied": {"0": [4, 0]},
           "products": {"capacity": 1000, "total": 4, "exact": True, "counters": [["a", 3, 0], ["b", 1, 0]]},
           "pairs": {"capacity": 2, "total": 4, "exact": False, "counters": [["a\x1fb", 3, 1], ["b\x1fa", 1, 0]]}}
    ledger = PairLedger.restore(0, HORIZONS, SLOTS, None, None, [("0/24h/0", old), ("0/flushed", {"at": 1.0})])
    bucket = ledger.buckets[("24h", 0.0)]
    assert (bucket.products.is_exact, bucket.pairs.floor, bucket.pairs.guaranteed("a\x1fb")) == (True, 1, 2)
    PairMemoryBudget(10**9).enforce([ledger])
    assert (bucket.products.capacity, bucket.pairs.capacity) == (None, None)
    assert PairBucket.from_dict(bucket.to_dict()).to_dict() == bucket.to_dict()
