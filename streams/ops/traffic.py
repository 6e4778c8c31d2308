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
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

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


@dataclass(slots=True)
class OrderMaker:
    rng: random.Random
    shape: TrafficShape = field(default_factory=TrafficShape)
    catalogue: Catalogue | None = None
    _sequence: Iterator[int] = field(default_factory=itertools.count)
    _recent: list[tuple[bytes, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.catalogue is None:
            self.catalogue = Catalogue.build(self.rng, self.shape.categories, self.shape.products_per_category)

    def order(self, event_time: float) -> dict[str, object]:
        """One valid order placed at ``event_time`` (unix seconds)."""
        rng, shape, catalogue = self.rng, self.shape, self.catalogue
        assert catalogue is not None
        category = catalogue.pick_category(rng)
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
            "customer_id": f"c-{rng.randrange(50_000):05d}",
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

    def event(self, now: float) -> tuple[str, bytes, bytes]:
        """(kind, key, value) of the next event: "order", "late", "invalid" or "duplicate"."""
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
