"""streams.pairs.outbox: pair deltas too large for one Kafka message go in parts, applied once each."""

from __future__ import annotations

import random

import orjson
import pytest

from streams.pairs.basket import PairAccumulator
from streams.pairs.ledger import PairBucket
from streams.pairs.outbox import outbox_from_state, outbox_messages, outbox_state, split_message
from streams.pairs.sketch import SpaceSaving


def big_message(products: int, companions: int, seed: int = 7) -> dict[str, object]:
    rng = random.Random(seed)
    names = [f"product-{n:06d}-{'x' * rng.randrange(0, 40)}" for n in range(products)]
    return {
        "partition": 1, "source": 2, "sequence": 9, "horizon": "24h", "bucket": 7200.0, "orders": 321,
        "products": {name: rng.randrange(1, 500) for name in names},
        "pairs": {name: {other: rng.randrange(1, 50) for other in rng.sample(names, companions)}
                  for name in names[: products // 2]},
    }


def applied(*messages: dict[str, object]) -> PairBucket:
    bucket = PairBucket.empty(10**6, 10**6)
    for message in messages:
        bucket.apply(message)
    return bucket


def test_a_message_that_fits_is_sent_alone_and_unchanged() -> None:
    message = big_message(10, 3)
    assert split_message(message, 1 << 20) == [message]


@pytest.mark.parametrize("max_bytes", [16_384, 65_536, 500_000])
def test_every_part_fits_and_the_parts_add_up_to_the_message(max_bytes: int) -> None:
    message = big_message(3000, 40)
    parts = split_message(message, max_bytes)
    assert len(parts) > 1
    assert all(len(orjson.dumps(part)) <= max_bytes for part in parts)
    assert [part["part"] for part in parts] == list(range(len(parts)))
    assert {part["parts"] for part in parts} == {len(parts)}
    whole, split = applied(message), applied(*parts)
    assert split.orders == whole.orders == 321
    assert split.products == whole.products
    assert split.pairs == whole.pairs


def test_a_part_applied_again_is_not_counted_twice_and_a_resent_message_neither() -> None:
    parts = split_message(big_message(2000, 30), 65_536)
    once = applied(*parts)
    again = applied(*parts, parts[1], *parts)  # a duplicate part, then the whole outbox resent
    assert again.to_dict() == once.to_dict()


def test_state_from_before_parts_counts_its_sequence_as_applied_whole() -> None:
    empty = SpaceSaving(10).to_dict()
    bucket = PairBucket.from_dict({"orders": 5, "applied": {"2": 9}, "products": empty, "pairs": empty})
    assert not bucket.apply({"source": 2, "sequence": 9, "part": 3, "orders": 1, "products": {}, "pairs": {}})
    assert bucket.apply({"source": 2, "sequence": 10, "orders": 1, "products": {}, "pairs": {}})


def test_a_flush_of_fifty_product_baskets_is_laid_out_in_parts_under_the_limit() -> None:
    rng = random.Random(3)
    accumulator = PairAccumulator(50)
    accumulator.add_baskets([tuple(sorted(rng.sample([f"p-{n}" for n in range(20_000)], 50))) for _ in range(300)])
    messages = outbox_messages(0, 1, {("24h", 0.0): accumulator}, partitions=4, max_bytes=200_000)
    assert all(len(orjson.dumps(m)) <= 200_000 for m in messages)
    assert len(messages) > 4
    assert sum(m["orders"] for m in messages) == 300 * 4


@pytest.mark.parametrize("max_bytes", [None, 4_096])
def test_the_outbox_kept_in_the_changelog_lays_out_the_same_messages_again(max_bytes: int | None) -> None:
    rng = random.Random(5)
    names = [f"p-{n}" for n in range(400)]

    def accumulator(orders: int) -> PairAccumulator:
        counted = PairAccumulator(50)
        counted.add_baskets([tuple(sorted(rng.sample(names, rng.randrange(1, 6)))) for _ in range(orders)])
        return counted

    shared = accumulator(300)  # two horizons' buckets holding the same orders share one
    batches = {("24h", 7200.0): shared, ("7d", 0.0): shared, ("24h", 0.0): accumulator(40),
               ("7d", 50400.0): PairAccumulator(50)}  # no orders: no messages
    sent = outbox_messages(3, 12, batches, partitions=4, max_bytes=max_bytes)
    kept = orjson.loads(orjson.dumps(outbox_state(batches, 4, max_bytes)))
    assert len(kept["groups"]) == 3  # the shared accumulator once
    assert outbox_from_state(3, 12, kept) == orjson.loads(orjson.dumps(sent))
    assert len(orjson.dumps(kept)) * 2 < len(orjson.dumps(sent))  # each count once, not per partition and horizon
