"""Recommendation hit rate: do orders contain what the published lists promised?

For an order whose primary product A had a published "frequently bought
together" list at the order's event time (the newest version of A's list
computed at or before it), a **hit** is an order holding at least one listed
companion. Per variant a window keeps four sums (:data:`HIT_FIGURES`):

* ``listed_orders``: orders whose primary product had a list (the denominator);
* ``hit_orders``: those with at least one listed companion; hit rate =
  hit_orders / listed_orders;
* ``promised``: the sum over those orders of what the list promised offline,
  P(at least one companion) = 1 - prod(1 - c_i) over the listed confidences
  c_i = P(B_i | A), companions taken as independent; the mean promise is
  promised / listed_orders;
* ``best_confidence``: the sum of the list's highest confidence max c_i, a
  lower bound of the offline P(at least one) whatever the companions'
  dependence (the union holds the best companion's orders). The true offline
  value lies between it and min(1, sum c_i); the independence figure lies
  between those two as well.

A hit rate near the promise means the lists hold online what they measured
offline; well below the best confidence (a bound, not an estimate) means they
do not: stale lists, a list the shop does not show, or a shift in what people
buy. The lists are counted from the same orders, so the comparison is in
sample: a check of the lists' use, not a forecast.

:class:`PublishedLists` holds the newest versions of the lists of at most
``capacity`` products, evicting the least recently used (looked up by an order
or updated by a message). An evicted product's orders count as unlisted until
its list is published again (when it changes materially, or after a restart of
its pairs owner); the number evicted is reported.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import orjson

HIT_FIGURES = ("listed_orders", "hit_orders", "promised", "best_confidence")
# Versions of one product's list kept: the newest, and the one before it for orders that
# were placed before the newest was computed (a worker behind, or a replay).
VERSIONS = 2


class BestCompanion(NamedTuple):
    """The listed companion with the highest lift (ties: higher confidence, then smaller id)."""

    product: str
    lift: float
    confidence: float


class PublishedList(NamedTuple):
    computed_at: float  # unix seconds
    companions: frozenset[str]
    promised: float  # 1 - prod(1 - c_i)
    best_confidence: float  # max c_i
    best_by_lift: BestCompanion | None = None


def published_list(value: bytes) -> tuple[str, PublishedList] | None:
    """(product, list) from a recommendations-topic message value; None when it is not a usable list."""
    try:
        data = orjson.loads(value)
        product = data["product_id"]
        computed_at = datetime.fromisoformat(data["computed_at"]).timestamp()
        confidences = {c["product_id"]: float(c["confidence"]) for c in data["companions"]}
        lifts = {c["product_id"]: float(c["lift"]) for c in data["companions"]}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
    if not isinstance(product, str) or not confidences:
        return None
    return product, listed(computed_at, confidences.items(), lifts)


def listed(computed_at: float, confidences: Iterable[tuple[str, float]],
           lifts: Mapping[str, float] | None = None) -> PublishedList:
    pairs = [(product, min(1.0, max(0.0, c))) for product, c in confidences]
    miss = math.prod(1.0 - c for _, c in pairs)
    best = None
    if lifts:
        best = min((BestCompanion(p, lifts[p], c) for p, c in pairs if p in lifts),
                   key=lambda b: (-b.lift, -b.confidence, b.product), default=None)
    return PublishedList(computed_at, frozenset(p for p, _ in pairs), 1.0 - miss,
                         max((c for _, c in pairs), default=0.0), best)


class PublishedLists:
    """The lists of at most ``capacity`` products, least recently used evicted first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.lists: OrderedDict[str, tuple[PublishedList, ...]] = OrderedDict()
        self.evicted = 0

    def publish(self, product: str, version: PublishedList) -> None:
        held = self.lists.pop(product, ())
        versions = tuple(sorted((*(v for v in held if v.computed_at != version.computed_at), version)))
        self.lists[product] = versions[-VERSIONS:]
        if len(self.lists) > self.capacity:
            self.lists.popitem(last=False)
            self.evicted += 1

    def withdraw(self, product: str) -> None:
        """A tombstone: the product has no list any more."""
        self.lists.pop(product, None)

    def newest(self, product: str) -> PublishedList | None:
        """The newest list of ``product``, without marking it used (for reading, not for orders)."""
        versions = self.lists.get(product)
        return versions[-1] if versions else None

    def at(self, product: str, event_time: float) -> PublishedList | None:
        """The newest list of ``product`` computed at or before ``event_time``; marks it used."""
        versions = self.lists.get(product)
        if versions is None:
            return None
        self.lists.move_to_end(product)
        for version in reversed(versions):
            if version.computed_at <= event_time:
                return version
        return None


def hit_figures(version: PublishedList, products: Iterable[str]) -> tuple[int, int, float, float]:
    """The four figures one order adds: listed, hit (0/1), promised, best confidence."""
    hit = not version.companions.isdisjoint(products)
    return 1, int(hit), version.promised, version.best_confidence


def hit_rate_json(figures: list[float] | tuple[float, ...]) -> dict[str, Any]:
    listed_orders, hits, promised, best = figures
    return {
        "listed_orders": listed_orders,
        "hit_orders": hits,
        "hit_rate": hits / listed_orders if listed_orders else None,
        "promised": promised / listed_orders if listed_orders else None,
        "best_confidence": best / listed_orders if listed_orders else None,
    }
