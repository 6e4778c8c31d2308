"""Pairs of one order, counted per time bucket between two flushes.

The first step of "frequently bought together", as in Bytewax's apriori
example: normalise the basket of an order (:func:`product_basket`: distinct,
sorted), then count it with the other orders of its time bucket
(:class:`PairAccumulator`): orders per product, and orders per pair of
products, each pair under its sorted key ``(a, b)``. An order's first
``max_basket`` products (in sorted order) are paired: a basket of n products
has n(n-1)/2 pairs, and one 500-line wholesale order would give 124,750.

Nothing here knows about Kafka, Faust or Prometheus.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain, combinations
from typing import Any, Final

DEFAULT_MAX_BASKET: Final = 50


def product_basket(product_ids: Iterable[str]) -> tuple[str, ...]:
    """The distinct products of one order, sorted: the normal form every count starts from."""
    return tuple(sorted(set(product_ids)))


class PairAccumulator:
    """Accumulates the orders of one time bucket between two flushes.

    A flush then sends the counts of all of them at once (streams.pairs.outbox),
    instead of one message per order line or per pair: a product bought a
    thousand times in the flush costs one entry.

    Each pair is counted once, under its sorted key ``(a, b)``; the companions
    of each product (both directions) are only laid out when a flush asks.
    """

    __slots__ = ("_max_basket", "_orders", "_pairs", "total_orders")

    def __init__(self, max_basket: int = DEFAULT_MAX_BASKET) -> None:
        if max_basket < 2:
            raise ValueError(f"max_basket must be at least 2 (a pair needs two products), got {max_basket!r}")
        self._max_basket = max_basket
        self.total_orders = 0  # orders in the bucket: the N of support and lift
        self._orders: Counter[str] = Counter()
        self._pairs: Counter[tuple[str, str]] = Counter()

    def add_order(self, product_ids: Iterable[str]) -> None:
        """Count one order, given the product ids of its lines (repeats count once)."""
        self.add_baskets([product_basket(product_ids)])

    def add_baskets(self, baskets: Sequence[tuple[str, ...]]) -> None:
        """Count one order per basket, each as :func:`product_basket` makes it (distinct, sorted).

        The counting loops run in C (``Counter.update``), which is why a flush
        hands over all its orders of a bucket at once.
        """
        self.total_orders += len(baskets)
        self._orders.update(chain.from_iterable(baskets))
        limit = self._max_basket
        # product_pairs() of each basket, without a list per order.
        self._pairs.update(
            chain.from_iterable(combinations(basket[:limit], 2) for basket in baskets if len(basket) > 1)
        )

    def merge(self, other: PairAccumulator) -> None:
        """Add the orders of ``other`` (an accumulator of the same bucket) to this one."""
        self.total_orders += other.total_orders
        self._orders.update(other._orders)
        self._pairs.update(other._pairs)

    def to_state(self) -> dict[str, Any]:
        """The counts as JSON: each pair once (``[a, b, count]``), not laid out per product as messages are."""
        return {"orders": self.total_orders, "products": dict(self._orders),
                "pairs": [[a, b, count] for (a, b), count in self._pairs.items()]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], max_basket: int = DEFAULT_MAX_BASKET) -> PairAccumulator:
        """The accumulator :meth:`to_state` describes."""
        accumulator = cls(max_basket)
        accumulator.total_orders = int(state["orders"])
        accumulator._orders.update(state["products"])
        accumulator._pairs.update({(a, b): count for a, b, count in state["pairs"]})
        return accumulator

    def product_counts(self) -> dict[str, int]:
        """Orders per distinct product seen, by product (sorted)."""
        orders = self._orders
        return {product: orders[product] for product in sorted(orders)}

    def companion_counts(self) -> dict[str, dict[str, int]]:
        """product -> {companion: orders containing both}, both levels sorted; products without companions left out."""
        pairs = self._pairs
        companions: dict[str, dict[str, int]] = {}
        # In sorted (a, b) order every product's companions arrive sorted: first those
        # smaller than it (as a), then those greater (as b).
        for pair in sorted(pairs):
            count = pairs[pair]
            a, b = pair
            of_a = companions.get(a)
            if of_a is None:
                companions[a] = {b: count}
            else:
                of_a[b] = count
            of_b = companions.get(b)
            if of_b is None:
                companions[b] = {a: count}
            else:
                of_b[a] = count
        return {product: companions[product] for product in sorted(companions)}
