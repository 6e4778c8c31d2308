"""Realistic order traffic, as plain dicts and bytes (no Kafka here).

A catalogue of categories and products with Zipf-skewed popularity; each
category has a few companion categories that customers tend to add. An order
has a primary item, sometimes more units or lines from the same category
(upsell) and, with the cross-sell propensity, lines from companion categories.
A share of events can be late (event time far in the past), invalid (one of
many malformed shapes) or duplicated (an upstream retry of an order).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from streams.settings import parse_duration

CATEGORY_NAMES = (
    "electronics", "phone-accessories", "books", "toys", "kitchen", "home-decor", "garden", "sports",
    "outdoor", "beauty", "health", "fashion", "shoes", "jewelry", "pet-supplies", "grocery", "office",
    "baby", "automotive", "music", "games", "tools", "lighting", "bedding",
)
CHANNELS = (("web", 0.55), ("app", 0.35), ("marketplace", 0.10))
VARIANTS = (("control", 0.5), ("treatment", 0.5))
# Recommendation touchpoints of attributed lines: the n-th line after the primary gets the n-th
# (cycling), so choosing one draws nothing from the random stream and seeds keep their orders.
TOUCHPOINTS = ("pdp_frequently_bought_together", "cart_upsell", "post_purchase_email")


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    category: str
    price: float


@dataclass(slots=True)
class Catalogue:
    categories: list[str]
    products: dict[str, list[Product]]
    category_weights: list[float]
    product_weights: dict[str, list[float]]  # cumulative, for rng.choices(cum_weights=...)
    companions: dict[str, list[str]]
    cheapest: dict[str, Product]

    @classmethod
    def build(cls, rng: random.Random, categories: int = 12, products_per_category: int = 200,
              skew: float = 1.1) -> Catalogue:
        names = [CATEGORY_NAMES[i] if i < len(CATEGORY_NAMES) else f"category-{i}" for i in range(categories)]
        products: dict[str, list[Product]] = {}
        weights: dict[str, list[float]] = {}
        for c, name in enumerate(names):
            median = rng.choice((8.0, 15.0, 25.0, 40.0, 90.0, 250.0))
            products[name] = [
                Product(f"p{c:03d}-{i:05d}", name, round(max(0.5, rng.lognormvariate(0, 0.6) * median), 2))
                for i in range(products_per_category)
            ]
            ranked = (1.0 / (rank + 1) ** skew for rank in range(products_per_category))
            weights[name] = list(itertools.accumulate(ranked))
        companions = {
            name: rng.sample([n for n in names if n != name], k=min(3, len(names) - 1)) for name in names
        }
        return cls(names, products, [1.0 / (rank + 1) ** 0.8 for rank in range(len(names))], weights, companions,
                   {name: min(products[name], key=lambda p: p.price) for name in names})

    def pick_category(self, rng: random.Random) -> str:
        return rng.choices(self.categories, self.category_weights)[0]

    def pick_product(self, rng: random.Random, category: str) -> Product:
        return rng.choices(self.products[category], cum_weights=self.product_weights[category])[0]


@dataclass(slots=True)
class TrafficShape:
    cross_sell_propensity: float = 0.3
    treatment_uplift: float = 0.05  # extra cross-sell propensity in the "treatment" variant
    upsell_propensity: float = 0.2
    attribution_share: float = 0.3  # lines after the primary that carry a recommendation touchpoint
    late_share: float = 0.0
    late_by_seconds: float = 900.0
    invalid_share: float = 0.0
    duplicate_share: float = 0.0
    categories: int = 12
    products_per_category: int = 200
    # Customers: ids drawn from `customers`; with `return_rate` an order comes from a customer seen
    # before (one of the last `remembered`), whose primary category is, with `category_drift`, a
    # companion of their last one (a later cross-sell) and otherwise their last one again.
    customers: int = 50_000
    return_rate: float = 0.0
    category_drift: float = 0.3
    remembered: int = 10_000


@dataclass(slots=True)
class OrderMaker:
    rng: random.Random
    shape: TrafficShape = field(default_factory=TrafficShape)
    catalogue: Catalogue | None = None
    _sequence: Iterator[int] = field(default_factory=itertools.count)
    _recent: list[tuple[bytes, bytes]] = field(default_factory=list)
    _returning: list[tuple[str, str]] = field(default_factory=list)  # (customer, last primary category)

    def __post_init__(self) -> None:
        if self.catalogue is None:
            self.catalogue = Catalogue.build(self.rng, self.shape.categories, self.shape.products_per_category)

    def order(self, event_time: float) -> dict[str, object]:
        """One valid order placed at ``event_time`` (unix seconds)."""
        rng, shape, catalogue = self.rng, self.shape, self.catalogue
        assert catalogue is not None
        customer, category = self._customer_and_category(catalogue)
        primary = catalogue.pick_product(rng, category)
        lines = [(primary, rng.choices((1, 2, 3), (0.8, 0.15, 0.05))[0])]
        if rng.random() < shape.upsell_propensity:
            lines.append((catalogue.pick_product(rng, category), 1))
        variant = rng.choices([v for v, _ in VARIANTS], [w for _, w in VARIANTS])[0]
        propensity = shape.cross_sell_propensity + (shape.treatment_uplift if variant == "treatment" else 0.0)
        if rng.random() < propensity:
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                companion = rng.choice(catalogue.companions[category]) if rng.random() < 0.7 \
                    else catalogue.pick_category(rng)
                product = catalogue.pick_product(rng, companion)
                # A companion line is never the primary item: keep it cheaper than the primary
                # line, falling back to the category's cheapest product, else no line.
                if product.price >= primary.price * lines[0][1]:
                    product = catalogue.cheapest[companion]
                if product.price < primary.price * lines[0][1]:
                    lines.append((product, 1))
        number = next(self._sequence)
        order: dict[str, object] = {
            "order_id": f"o-{self.rng.getrandbits(48):012x}-{number}",
            "customer_id": customer,
            "occurred_at": rfc3339(event_time),
            "currency": "EUR",
            "channel": rng.choices([c for c, _ in CHANNELS], [w for _, w in CHANNELS])[0],
            "variant": variant,
            "items": [
                {"product_id": p.product_id, "category": p.category, "unit_price": p.price, "quantity": q,
                 **({"attribution": TOUCHPOINTS[(i - 1) % len(TOUCHPOINTS)]}
                    if i and rng.random() < shape.attribution_share else {})}
                for i, (p, q) in enumerate(lines)
            ],
        }
        return order

    def _customer_and_category(self, catalogue: Catalogue) -> tuple[str, str]:
        """Who orders, and the primary category: a new customer, or a returning one (the customer model)."""
        rng, shape = self.rng, self.shape
        if shape.return_rate <= 0:  # the draws of the traffic before the customer model, unchanged
            category = catalogue.pick_category(rng)
            return f"c-{rng.randrange(shape.customers):05d}", category
        if self._returning and rng.random() < shape.return_rate:
            index = rng.randrange(len(self._returning))
            customer, last = self._returning[index]
            category = rng.choice(catalogue.companions[last]) if rng.random() < shape.category_drift else last
            self._returning[index] = (customer, category)
            return customer, category
        customer, category = f"c-{rng.randrange(shape.customers):05d}", catalogue.pick_category(rng)
        self._returning.append((customer, category))
        if len(self._returning) > shape.remembered:
            self._returning.pop(0)
        return customer, category

    def event(self, now: float, adjust: Callable[[dict[str, object]], object] | None = None
              ) -> tuple[str, bytes, bytes]:
        """(kind, key, value) of the next event: "order", "late", "invalid" or "duplicate".

        ``adjust`` may change an order before it is sent (a scenario's drop, :meth:`Scenario.apply`)."""
        roll = self.rng.random()
        shape = self.shape
        if roll < shape.invalid_share:
            key, value = invalid_event(self.rng, self.order(now))
            return "invalid", key, value
        roll -= shape.invalid_share
        if roll < shape.duplicate_share and self._recent:
            key, value = self.rng.choice(self._recent)
            return "duplicate", key, value
        roll -= shape.duplicate_share
        late = roll < shape.late_share
        order = self.order(now - shape.late_by_seconds if late else now)
        if adjust is not None:
            adjust(order)
        key, value = str(order["order_id"]).encode(), orjson.dumps(order)
        if not late:
            self._recent.append((key, value))
            if len(self._recent) > 100:
                self._recent.pop(0)
        return ("late" if late else "order"), key, value


def rfc3339(event_time: float) -> str:
    return datetime.fromtimestamp(event_time, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def invalid_event(rng: random.Random, order: dict[str, object]) -> tuple[bytes, bytes]:
    """A malformed variant of ``order``: one of the ways real producers get it wrong."""
    key = str(order["order_id"]).encode()
    items = order["items"]
    assert isinstance(items, list)
    kind = rng.randrange(10)
    if kind == 0:
        return key, b"{not json"
    if kind == 1:
        return key, b"\xff\xfe" + orjson.dumps(order)
    if kind == 2:
        return key, b""
    if kind == 3:
        del order["customer_id"]
    elif kind == 4:
        order["items"] = []
    elif kind == 5:
        items[0]["unit_price"] = -abs(float(items[0]["unit_price"]))
    elif kind == 6:
        items[0]["quantity"] = 0
    elif kind == 7:
        order["currency"] = "euro"
    elif kind == 8:
        order["occurred_at"] = "yesterday"
    else:
        items[0]["unit_price"] = str(items[0]["unit_price"])
    return key, orjson.dumps(order)


# -- scenarios: a rate over time, and scripted drops, stalls and bursts ---------------------
DAY = 86400.0
SEGMENT_KINDS = ("total", "primary_category", "channel", "variant")


@dataclass(frozen=True, slots=True)
class Drop:
    """The cross-sell rate of ``kind``=``value`` falls by ``fraction`` from ``at`` for ``seconds``."""

    kind: str
    value: str
    fraction: float
    at: float
    seconds: float

    def covers(self, offset: float, order: dict[str, object]) -> bool:
        if not self.at <= offset < self.at + self.seconds:
            return False
        if self.kind == "total":
            return True
        if self.kind == "primary_category":
            items = order["items"]
            assert isinstance(items, list)
            return bool(items[0]["category"] == self.value)
        return order.get(self.kind) == self.value


@dataclass(frozen=True, slots=True)
class Spell:
    """From ``at`` for ``seconds``, the rate times ``factor``: 0 is a stall, 10 a burst."""

    factor: float
    at: float
    seconds: float


@dataclass(frozen=True, slots=True)
class Scenario:
    """Orders per second over time (constant, or diurnal between ``low`` and ``high``), and what happens.

    Offsets are seconds from the scenario's start. The diurnal profile has its
    trough at offset 0 (midnight) and its peak at noon.
    """

    rate: float = 50.0
    diurnal: tuple[float, float] | None = None
    drops: tuple[Drop, ...] = ()
    spells: tuple[Spell, ...] = ()

    def rate_at(self, offset: float) -> float:
        if self.diurnal is None:
            rate = self.rate
        else:
            low, high = self.diurnal
            rate = low + (high - low) * (1.0 - math.cos(2.0 * math.pi * (offset % DAY) / DAY)) / 2.0
        for spell in self.spells:
            if spell.at <= offset < spell.at + spell.seconds:
                rate *= spell.factor
        return rate

    def next_change(self, offset: float) -> float:
        """The next offset at which a spell starts or ends (inf: none)."""
        edges = [edge for s in self.spells for edge in (s.at, s.at + s.seconds) if edge > offset]
        return min(edges, default=math.inf)

    def arrivals(self, rng: random.Random, seconds: float) -> Iterator[float]:
        """Offsets of the orders of the first ``seconds``: a Poisson process at :meth:`rate_at`.

        A diurnal rate is taken as constant for a second; a gap that would cross a change of
        rate is drawn again from the change (the process is memoryless); a stall jumps to its end.
        """
        offset = 0.0
        while True:
            rate = self.rate_at(offset)
            change = self.next_change(offset)
            if self.diurnal is not None:
                change = min(change, math.floor(offset) + 1.0)
            if rate <= 0.0:
                offset = change
                if offset >= seconds:
                    return
                continue
            gap = rng.expovariate(rate)
            if offset + gap >= change:
                offset = change
                continue
            offset += gap
            if offset >= seconds:
                return
            yield offset

    def apply(self, rng: random.Random, offset: float, order: dict[str, object]) -> dict[str, object]:
        """``order`` without its cross-sell lines when a drop covering it takes them (probability: its fraction)."""
        for drop in self.drops:
            if drop.covers(offset, order) and rng.random() < drop.fraction:
                items = order["items"]
                assert isinstance(items, list)
                primary = items[0]["category"]
                order["items"] = [item for item in items if item["category"] == primary]
                break
        return order


def parse_scenario(rate: float, profile: str, events: list[str]) -> Scenario:
    """From the command line: ``--profile constant|diurnal[:LOW-HIGH]`` and ``--scenario`` items.

    Items (times as durations: 90s, 10m, 2h, 1d): ``drop=KIND:VALUE:FRACTION@AT+FOR``
    (KIND total, primary_category, channel or variant; FRACTION 0-1 or a percentage),
    ``stall@AT+FOR``, ``burst=FACTOR@AT+FOR``.
    """
    diurnal: tuple[float, float] | None = None
    if profile.startswith("diurnal"):
        low, high = (0.2, 20.0)
        if ":" in profile:
            low_text, high_text = profile.split(":", 1)[1].split("-", 1)
            low, high = float(low_text), float(high_text)
        if not 0 < low <= high:
            raise ValueError(f"--profile {profile!r}: expected diurnal:LOW-HIGH with 0 < LOW <= HIGH")
        diurnal = (low, high)
    elif profile != "constant":
        raise ValueError(f"--profile {profile!r}: expected constant or diurnal[:LOW-HIGH]")
    drops: list[Drop] = []
    spells: list[Spell] = []
    for item in events:
        try:
            what, when = item.split("@", 1)
            at_text, for_text = when.split("+", 1)
            at, seconds = parse_duration(at_text), parse_duration(for_text)
            name, _, argument = what.partition("=")
            if name == "drop":
                kind, value, fraction_text = argument.rsplit(":", 2) if argument.count(":") >= 2 else ("", "", "")
                fraction = float(fraction_text.rstrip("%")) / (100.0 if fraction_text.endswith("%") else 1.0)
                if kind not in SEGMENT_KINDS or not 0.0 <= fraction <= 1.0:
                    raise ValueError
                drops.append(Drop(kind, value, fraction, at, seconds))
            elif name == "stall" and not argument:
                spells.append(Spell(0.0, at, seconds))
            elif name == "burst":
                spells.append(Spell(float(argument), at, seconds))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"--scenario {item!r}: expected drop=KIND:VALUE:FRACTION@AT+FOR (KIND one of "
                             f"{', '.join(SEGMENT_KINDS)}), stall@AT+FOR or burst=FACTOR@AT+FOR, "
                             "e.g. drop=primary_category:electronics:50%@10m+20m") from None
    return Scenario(rate, diurnal, tuple(drops), tuple(spells))
