"""One customer's orders over the horizon, folded into a small state, and what it contributes to the counts.

A state is a commutative summary of a customer's orders (:func:`merge` of two
summaries is the summary of both sets of orders), so it does not matter in
which order the customer partition receives them, nor how a flush grouped
them. Orders after a gap of more than the horizon start the customer afresh,
as if they were a new customer: only the newest *episode* (orders with no gap
of more than the horizon between them, in event time) counts. The older
episodes are kept as well (``earlier``), because an order that arrives late
can fall into the gap and bridge it, and then the episodes join, exactly as if
the orders had arrived in event-time order. They are dropped only once no
order can bridge them any more on the ledger's own terms: when the last order
of an episode is more than a horizon older than the oldest bucket of the
partition's watermark (``floor`` in :func:`merge`; the same margin the ledger's
expiry relies on, streams/customers/ledger.py).

The counts are histograms over event-time buckets (:func:`contributions`):
each customer counts once in the bucket of the time that makes it count, so a
rolling view is the sum of the buckets inside the horizon:

* ``customers``: by the time of the last order (the customer has an order in the horizon);
* ``multi``: by the last time of the second most recent category (two or more categories in the horizon);
* ``repeat``: by the time of the second most recent order (two or more orders in the horizon);
* ``single_first``: by the time of the first order, when that order had one category;
* ``later_7d`` / ``later_30d``: the same customers, when another category followed within 7 / 30 days.

Every contribution carries the category of the first order's primary item.
"""

from __future__ import annotations

from typing import Any, NamedTuple

OTHER = "other"
SERIES = ("customers", "multi", "repeat", "single_first", "later_7d", "later_30d")
LATER = (("later_7d", 7 * 86400.0), ("later_30d", 30 * 86400.0))


class CustomerState(NamedTuple):
    orders: int
    last_at: float
    second_at: float | None  # the second most recent order time
    first_at: float
    first_categories: tuple[str, ...]  # of the first order: distinct, sorted
    first_primary: str
    categories: dict[str, tuple[float, float]]  # category -> (first, last) order time
    # older episodes, oldest first, each more than a horizon before the next: they count nowhere
    earlier: tuple[CustomerState, ...] = ()

    def to_json(self) -> list[object]:
        data: list[object] = [self.orders, self.last_at, self.second_at, self.first_at, list(self.first_categories),
                              self.first_primary, {c: list(times) for c, times in self.categories.items()}]
        if self.earlier:
            data.append([episode.to_json() for episode in self.earlier])
        return data

    @classmethod
    def from_json(cls, data: list[Any]) -> CustomerState:
        """A state from :meth:`to_json`; values written before episodes were kept have no eighth item."""
        orders, last_at, second_at, first_at, first_categories, first_primary, categories = data[:7]
        earlier = tuple(cls.from_json(episode) for episode in data[7]) if len(data) > 7 else ()
        return cls(int(orders), float(last_at), None if second_at is None else float(second_at), float(first_at),
                   tuple(first_categories), str(first_primary),
                   {str(c): (float(t[0]), float(t[1])) for c, t in categories.items()}, earlier)


def order_state(at: float, primary: str, categories: tuple[str, ...]) -> CustomerState:
    """The state of a customer with one order (``categories`` distinct and sorted)."""
    return CustomerState(1, at, None, at, categories, primary, {c: (at, at) for c in categories})


def merge(a: CustomerState | None, b: CustomerState, horizon: float, max_categories: int,
          floor: float | None = None) -> CustomerState:
    """The state of both sets of orders: their newest episode, with the older ones in ``earlier``.

    Episodes of both sides are joined where no gap of more than ``horizon``
    separates them, so the result does not depend on the order in which the
    orders came. An older episode whose last order is more than ``horizon``
    before ``floor`` (the oldest bucket of the partition's horizon) is dropped:
    only an order that far behind the watermark could still bridge it.
    """
    episodes = sorted((*(() if a is None else (*a.earlier, a._replace(earlier=()))), *b.earlier,
                       b._replace(earlier=())), key=lambda s: s.first_at)
    joined = [episodes[0]]
    for episode in episodes[1:]:
        if episode.first_at > joined[-1].last_at + horizon:
            joined.append(episode)
        else:
            joined[-1] = _join(joined[-1], episode)
    newest = _bounded(joined[-1], max_categories)
    earlier = tuple(_bounded(e, max_categories) for e in joined[:-1] if floor is None or e.last_at + horizon >= floor)
    return newest._replace(earlier=earlier) if earlier else newest


def _join(a: CustomerState, b: CustomerState) -> CustomerState:
    """One episode from two with no gap of more than the horizon between them."""
    times = sorted((t for t in (a.last_at, a.second_at, b.last_at, b.second_at) if t is not None), reverse=True)
    first = min(a, b, key=lambda s: (s.first_at, s.first_categories, s.first_primary))
    categories = dict(a.categories)
    for category, (first_at, last_at) in b.categories.items():
        known = categories.get(category)
        categories[category] = (first_at, last_at) if known is None else \
            (min(known[0], first_at), max(known[1], last_at))
    return CustomerState(a.orders + b.orders, times[0], times[1], first.first_at, first.first_categories,
                         first.first_primary, categories)


def _bounded(state: CustomerState, max_categories: int) -> CustomerState:
    """At most ``max_categories`` categories: the most recent ones, the others folded into ``other``.

    The single category of a single-category first order is never folded, so
    the later cross-sell stays exact. The other counts stay exact for any
    customer with at most that many categories in the horizon; beyond it, a
    category bought again after being folded can be counted once in ``other``
    as well.
    """
    if len(state.categories) <= max_categories:
        return state
    keep = set(state.first_categories) if len(state.first_categories) == 1 else set()
    ranked = sorted(state.categories.items(), key=lambda kv: (kv[0] not in keep, -kv[1][1], kv[0]))
    named = [kv for kv in ranked if kv[0] != OTHER]
    folded = named[max_categories - 1:] + [kv for kv in ranked if kv[0] == OTHER]
    kept = dict(named[:max_categories - 1])
    kept[OTHER] = (min(t[0] for _, t in folded), max(t[1] for _, t in folded))
    return state._replace(categories=kept)


def later_at(state: CustomerState) -> float | None:
    """When the customer first bought a category that was not in the first order (None: not yet)."""
    firsts = [times[0] for category, times in state.categories.items() if category not in state.first_categories]
    return min(firsts) if firsts else None


def bucket_of(at: float, size: float) -> float:
    return at // size * size


Contribution = tuple[str, float, str]  # (series, bucket start, first category)


def contributions(state: CustomerState | None, bucket: float) -> list[Contribution]:
    """Where ``state`` counts: one (series, bucket, first category) per series it belongs to."""
    if state is None:
        return []
    first = state.first_primary
    found = [("customers", bucket_of(state.last_at, bucket), first)]
    if state.second_at is not None:
        found.append(("repeat", bucket_of(state.second_at, bucket), first))
    if len(state.categories) >= 2:
        second_category_at = sorted((t[1] for t in state.categories.values()), reverse=True)[1]
        found.append(("multi", bucket_of(second_category_at, bucket), first))
    if len(state.first_categories) == 1:
        first_bucket = bucket_of(state.first_at, bucket)
        found.append(("single_first", first_bucket, first))
        later = later_at(state)
        if later is not None:
            found.extend((series, first_bucket, first) for series, within in LATER if later - state.first_at <= within)
    return found
