"""Every event of the hostile corpus gets the contract verdict the corpus declares for it."""

from __future__ import annotations

import random
import time

import pytest

from bench.hostile import (
    BASKET_SIZE,
    DECIDED_BY_CONTRACT,
    MIB,
    TIME_REASONS,
    VALID,
    Hostile,
    hostile_corpus,
)
from streams.orders.contract import REASONS, Limits, Order, Rejection, decode_order

LIMITS = Limits()
CORPUS = hostile_corpus(random.Random(5), max_event_bytes=LIMITS.max_event_bytes, baskets=2)


@pytest.mark.parametrize("case", CORPUS, ids=[case.case for case in CORPUS])
def test_the_contract_gives_each_hostile_event_its_declared_verdict(case: Hostile) -> None:
    decoded = decode_order(case.build(time.time()).value, LIMITS)
    if case.expect == DECIDED_BY_CONTRACT:
        return
    if case.expect == VALID or case.expect in TIME_REASONS:  # time verdicts come after the contract
        assert isinstance(decoded, Order), decoded
    else:
        assert isinstance(decoded, Rejection) and decoded.reason == case.expect, decoded


def test_every_declared_reason_is_one_the_worker_counts() -> None:
    assert {c.expect for c in CORPUS} - {VALID, DECIDED_BY_CONTRACT} <= set(REASONS)


def test_the_corpus_has_the_sizes_it_promises() -> None:
    events = {case.case: case.build(time.time()) for case in CORPUS}
    assert len(events["valid JSON of 3 MiB"].value or b"") == 3 * MIB
    assert len(events["an order of exactly CROSSSELL_MAX_EVENT_BYTES"].value or b"") == LIMITS.max_event_bytes
    basket = decode_order(events[f"a basket of {BASKET_SIZE} distinct products #0"].value, LIMITS)
    assert isinstance(basket, Order) and len({i.product_id for i in basket.items}) == BASKET_SIZE
