"""A hostile corpus of order events: what a careless or malicious producer can send.

Every case says what the worker must make of it (:attr:`Hostile.expect`):

* ``VALID``: it passes the contract (it may still be a duplicate or late, which
  the offline truth decides from its place in the partition);
* a rejection reason (``streams.contract``'s names): it is counted under that
  reason and dead-lettered with it;
* ``DECIDED_BY_CONTRACT``: it is rejected or not as the project's decoder says
  (deep nesting inside JSON, where either verdict would be defensible).

A case is built at the moment it is sent (:meth:`Hostile.build` takes the wall
clock), so an order meant to be on time is on time however long the run.
Nothing here talks to Kafka: the chaos run (``bench/chaos.py``) sends the
events, and a unit test checks the declared verdicts against the contract.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from streams.orders.contract import (
    BEFORE_RETENTION,
    EMPTY,
    FUTURE_EVENT_TIME,
    NON_POSITIVE_PRICE,
    NOT_JSON,
    NOT_UTF8,
    OVERSIZED,
    PRICE_TOO_LARGE,
    QUANTITY_TOO_LARGE,
    TOO_MANY_ITEMS,
    WRONG_TYPE,
)

VALID = "valid"
DECIDED_BY_CONTRACT = "decided_by_contract"
# Verdicts that depend on time (the record, the clock, the partition's watermark), not on the bytes alone.
TIME_REASONS = (FUTURE_EVENT_TIME, BEFORE_RETENTION)

MIB = 1024 * 1024
# The ordinary traffic (streams.traffic) uses the first 12 of these; together they stay within
# CROSSSELL_MAX_LABEL_VALUES (20), so the truth of every label breakdown is exact.
CATEGORIES = (
    "electronics", "phone-accessories", "books", "toys", "kitchen", "home-decor", "garden", "sports",
    "outdoor", "beauty", "health", "fashion", "shoes", "jewelry", "pet-supplies", "grocery",
)
CATALOGUE_PRODUCTS = 20_000
BASKET_SIZE = 50
# Header names the worker writes on a dead letter; a producer may forge them on its input.
FORGED_HEADERS = (
    ("crosssell.reason", b"forged_reason"),
    ("crosssell.detail", b"a forged detail"),
    ("crosssell.source.offset", b"-1"),
)
YEAR_2099 = datetime(2099, 6, 1, tzinfo=UTC).timestamp()
YEAR_1970 = 86_400.0 * 3  # 1970-01-04


@dataclass(frozen=True, slots=True)
class Event:
    """One record as it is produced: key, value, headers, a record timestamp (None: the producer's clock)
    and a partition (None: chosen from the key, as the ordinary traffic's)."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class Hostile:
    case: str
    expect: str  # VALID, a rejection reason, or DECIDED_BY_CONTRACT
    build: Callable[[float], Event]  # the record, given the wall clock when it is sent


@dataclass(frozen=True, slots=True)
class Product:
    product_id: str
    category: str
    price: float


def catalogue(rng: random.Random, products: int = CATALOGUE_PRODUCTS) -> list[Product]:
    """``products`` products spread over :data:`CATEGORIES`, with prices from 0.5 to ~2000."""
    return [
        Product(f"h{i % len(CATEGORIES):02d}-{i:05d}", CATEGORIES[i % len(CATEGORIES)],
                round(max(0.5, rng.lognormvariate(3.0, 1.0)), 2))
        for i in range(products)
    ]


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def order(order_id: str, t: float, lines: list[dict[str, object]], **extra: object) -> dict[str, object]:
    return {"order_id": order_id, "customer_id": f"c-{order_id}", "occurred_at": rfc3339(t), "currency": "EUR",
            "channel": "web", "variant": "control", "items": lines, **extra}


def line(product: Product, quantity: int = 1, price: object = None) -> dict[str, object]:
    return {"product_id": product.product_id, "category": product.category,
            "unit_price": product.price if price is None else price, "quantity": quantity}


def padded(document: dict[str, object], size: int) -> bytes:
    """``document`` as JSON of exactly ``size`` bytes, grown by an ignored ``note`` field."""
    bare = orjson.dumps({**document, "note": ""})
    if len(bare) > size:
        raise ValueError(f"the order alone is {len(bare)} bytes, more than {size}")
    return orjson.dumps({**document, "note": "x" * (size - len(bare))})


def with_raw_price(document: dict[str, object], literal: bytes) -> bytes:
    """``document`` as JSON whose first line's unit_price is the literal ``literal`` (10**400, NaN...)."""
    marker = 987654.321
    items = document["items"]
    assert isinstance(items, list)
    items[0]["unit_price"] = marker
    raw = orjson.dumps(document)
    assert raw.count(b"987654.321") == 1
    return raw.replace(b"987654.321", literal)


def hostile_corpus(rng: random.Random, *, partitions: int = 4, max_event_bytes: int = 65536, baskets: int = 300,
                   big_sizes: tuple[int, ...] = (MIB, 3 * MIB)) -> list[Hostile]:
    """The cases, in a fixed order (the chaos run shuffles when they are sent)."""
    products = catalogue(random.Random(rng.random()))
    cases: list[Hostile] = []
    tag = f"{rng.getrandbits(32):08x}"

    def add(case: str, expect: str, build: Callable[[float], Event]) -> None:
        cases.append(Hostile(case, expect, build))

    def pick(n: int = 1) -> list[Product]:
        return rng.sample(products, n)

    def simple(order_id: str, t: float, n_lines: int = 2) -> dict[str, object]:
        return order(order_id, t, [line(p, rng.randint(1, 3)) for p in pick(n_lines)])

    # -- Oversized: over CROSSSELL_MAX_EVENT_BYTES, and over Kafka's 1 MiB default request size.
    for size in big_sizes:
        label = f"{size // MIB} MiB" if size % MIB == 0 else f"{size} bytes"
        add(f"valid JSON of {label}", OVERSIZED,
            lambda now, size=size, oid=f"big-{tag}-{size}": Event(oid.encode(), padded(simple(oid, now), size)))
        seed = rng.random()
        add(f"garbage of {label}", OVERSIZED,
            lambda now, size=size, seed=seed: Event(b"garbage", random.Random(seed).randbytes(size)))
    seed = rng.random()
    add("garbage of 1 MiB with forged crosssell headers", OVERSIZED,
        lambda now: Event(b"garbage", random.Random(seed).randbytes(MIB), FORGED_HEADERS))
    # -- The limit itself: exactly max_event_bytes passes, one byte more does not.
    add("an order of exactly CROSSSELL_MAX_EVENT_BYTES", VALID,
        lambda now, oid=f"limit-{tag}": Event(oid.encode(), padded(simple(oid, now), max_event_bytes)))
    add("an order one byte over CROSSSELL_MAX_EVENT_BYTES", OVERSIZED,
        lambda now, oid=f"limit1-{tag}": Event(oid.encode(), padded(simple(oid, now), max_event_bytes + 1)))

    # -- Deep nesting: over the size limit, and under it (the parser's depth limit).
    add("100,000 nested [", OVERSIZED, lambda now: Event(b"deep", b"[" * 100_000))
    add("30,000 nested [ ] under the size limit", DECIDED_BY_CONTRACT,
        lambda now: Event(b"deep", b"[" * 30_000 + b"]" * 30_000))
    add("an order with 20,000 nested arrays in an extra field", DECIDED_BY_CONTRACT,
        lambda now, oid=f"nested-{tag}": Event(oid.encode(), orjson.dumps(simple(oid, now))[:-1]
                                               + b',"extra":' + b"[" * 20_000 + b"]" * 20_000 + b"}"))

    # -- Numbers a double cannot hold, and the ones that look like numbers.
    numbers = ((b"1" + b"0" * 400, PRICE_TOO_LARGE), (b"1e309", PRICE_TOO_LARGE), (b"-0.0", NON_POSITIVE_PRICE),
               (b'"NaN"', WRONG_TYPE), (b'"Infinity"', WRONG_TYPE), (b"NaN", NOT_JSON), (b"Infinity", NOT_JSON))
    for i, (literal, expect) in enumerate(numbers):
        shown = literal.decode() if len(literal) < 20 else "10**400"
        add(f"unit_price {shown}", expect,
            lambda now, literal=literal, oid=f"num-{tag}-{i}": Event(
                oid.encode(), with_raw_price(simple(oid, now), literal)))
    add("quantity 10**400", QUANTITY_TOO_LARGE,
        lambda now, oid=f"qty-{tag}": Event(oid.encode(), orjson.dumps(simple(oid, now)).replace(
            b'"quantity":', b'"quantity":1' + b"0" * 400 + b',"was":', 1)))
    # At the limits, not over them. (One unit: a larger revenue would blur every sum it joins.)
    rich = pick()[0]
    cheap = next(p for p in products if p.category != rich.category)
    add("unit_price 1000000000, and a line of 100000 units", VALID,
        lambda now, oid=f"rich-{tag}": Event(oid.encode(), orjson.dumps(
            order(oid, now, [line(rich, 1, 1_000_000_000), line(cheap, 100_000, 0.5)]))))

    # -- Wrong clocks. The record that agrees with its 2099 event time goes to every partition:
    # the orders after it must count normally everywhere.
    for p in range(partitions):
        add(f"occurred_at in 2099, record timestamp in 2099, partition {p}", FUTURE_EVENT_TIME,
            lambda now, p=p, oid=f"y2099r-{tag}-{p}": Event(oid.encode(), orjson.dumps(simple(oid, YEAR_2099)),
                                                            timestamp_ms=int(YEAR_2099 * 1000), partition=p))
    add("occurred_at in 2099, record timestamp now", FUTURE_EVENT_TIME,
        lambda now, oid=f"y2099-{tag}": Event(oid.encode(), orjson.dumps(simple(oid, YEAR_2099))))
    add("occurred_at a day ahead, record timestamp a day ahead", FUTURE_EVENT_TIME,
        lambda now, oid=f"ahead-{tag}": Event(oid.encode(), orjson.dumps(simple(oid, now + 86400)),
                                              timestamp_ms=int((now + 86400) * 1000)))
    add("occurred_at in 1970, record timestamp now", BEFORE_RETENTION,
        lambda now, oid=f"y1970-{tag}": Event(oid.encode(), orjson.dumps(simple(oid, YEAR_1970))))
    add("occurred_at in 1970, record timestamp in 1970", BEFORE_RETENTION,
        lambda now, oid=f"y1970r-{tag}": Event(oid.encode(), orjson.dumps(simple(oid, YEAR_1970)),
                                               timestamp_ms=int(YEAR_1970 * 1000)))

    # -- Forged and huge headers.
    add("a valid order with forged crosssell headers", VALID,
        lambda now, oid=f"forged-{tag}": Event(oid.encode(), orjson.dumps(simple(oid, now)), FORGED_HEADERS))
    add("an invalid event with forged crosssell headers", NOT_JSON,
        lambda now: Event(b"forged-bad", b"{not json", FORGED_HEADERS))
    add("a rejected order with forged crosssell headers", NON_POSITIVE_PRICE,
        lambda now, oid=f"forged-neg-{tag}": Event(oid.encode(), with_raw_price(simple(oid, now), b"-5"),
                                                   FORGED_HEADERS))
    add("a valid order with a 2 MiB header", VALID,
        lambda now, oid=f"hugeh-{tag}": Event(oid.encode(), orjson.dumps(simple(oid, now)),
                                              (("x-trace", b"t" * 2 * MIB),)))
    add("an invalid event with a 2 MiB header", NOT_JSON,
        lambda now: Event(b"hugeh-bad", b"{not json", (("x-trace", b"t" * 2 * MIB),)))
    add("an invalid event with 2,000 headers of 1 KiB", EMPTY,
        lambda now: Event(b"manyh-bad", b"", tuple((f"x-h{i}", b"h" * 1024) for i in range(2000))))

    # -- Keys of odd bytes, on valid and invalid events.
    odd_keys: list[bytes | None] = [None, b"", b"\x00" * 16, bytes(range(256)), b"\xff\xfe\xfd\xfc",
                                    random.Random(rng.random()).randbytes(10 * 1024)]
    for i, odd in enumerate(odd_keys):
        shown = "null" if odd is None else f"{len(odd)} bytes"
        add(f"a valid order with a key of {shown}", VALID,
            lambda now, odd=odd, oid=f"oddkey-{tag}-{i}": Event(odd, orjson.dumps(simple(oid, now))))
        add(f"non-UTF-8 bytes with a key of {shown}", NOT_UTF8,
            lambda now, odd=odd: Event(odd, b'{"order_id": "\xff\xfe"}'))
    add("a null value (tombstone)", EMPTY, lambda now: Event(b"tombstone", None))

    # -- Duplicate order ids: a retry, a retry with other content, the same id under another key.
    dup = f"dup-{tag}"
    add("an order", VALID, lambda now: Event(dup.encode(), orjson.dumps(simple(dup, now))))
    add("the same order id again", VALID, lambda now: Event(dup.encode(), orjson.dumps(simple(dup, now))))
    add("the same order id again, other lines", VALID,
        lambda now: Event(dup.encode(), orjson.dumps(simple(dup, now, 3))))
    add("the same order id under another key", VALID,
        lambda now: Event(b"not-" + dup.encode(), orjson.dumps(simple(dup, now))))

    # -- Sizes of baskets: the item limit, and baskets of many distinct products.
    add("an order of 501 lines", TOO_MANY_ITEMS,
        lambda now, oid=f"lines501-{tag}": Event(oid.encode(), orjson.dumps(
            order(oid, now, [line(p) for p in pick(501)]))))
    for i in range(baskets):
        chosen = pick(BASKET_SIZE)
        add(f"a basket of {BASKET_SIZE} distinct products #{i}", VALID,
            lambda now, oid=f"basket-{tag}-{i}", chosen=chosen: Event(
                oid.encode(), orjson.dumps(order(oid, now, [line(p, 1 + n % 3) for n, p in enumerate(chosen)]))))
    return cases
