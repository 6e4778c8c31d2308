"""A customers flush the broker fails loses nothing: the next flush writes what it took, whole.

As in tests/agents/test_failed_flush.py, the failure is injected at the producer
boundary (the broker's answer to the changelog writes), and everything else is
the real wiring: Faust's test driver, the customers agent, the RocksDB table, the
embedded broker. The counts are checked as a restarted worker would see them: a
ledger restored from what the changelog topic holds, plus the replay of the
customer messages its meta key does not cover.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from streams.customers.ledger import CustomerLedger, bucket_key
from streams.customers.outbox import customer_messages, customer_partition
from streams.customers.state import bucket_of
from streams.ops.broker import EmbeddedBroker
from streams.runtime.customers import CustomerProcessor
from tests.agents.test_failed_flush import FailingBroker, recorded_events, stored_state
from tests.agents.test_order_agents import PARTITIONS, built_pipeline

HOUR = 3600.0


def customers_of(partition: int, n: int) -> list[str]:
    return [c for c in (f"c-{i}" for i in range(100)) if customer_partition(c, PARTITIONS) == partition][:n]


def restarted(broker: EmbeddedBroker, customers: CustomerProcessor, events: list[Any]) -> CustomerLedger:
    """What a worker restarted now holds for partition 0: the changelog, then the messages replayed."""
    held = dict(stored_state(broker, customers.table))
    ledger = CustomerLedger.restore(0, customers.config, held.get)
    for event in events:
        if event.message.partition == 0:
            ledger.apply(orjson.loads(event.value))  # a message the meta key covers changes nothing
    return ledger


def assert_same(restored: CustomerLedger, live: CustomerLedger, names: list[str]) -> None:
    assert restored.view() == live.view()
    assert {c: restored.state(c) for c in names} == {c: live.state(c) for c in names}


@pytest.mark.parametrize("fault", ["customer", "bucket", "meta", "meta_stored", "burned meta"])
async def test_a_customers_flush_the_broker_fails_is_written_whole_by_the_next_one(
        broker: EmbeddedBroker, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    async with built_pipeline(broker, tmp_path, customers=True) as pipeline:
        customers = pipeline.customers
        assert customers is not None
        customers.restore(set(range(PARTITIONS)))
        failing = FailingBroker(pipeline, customers.table, monkeypatch)
        events = recorded_events(customers, monkeypatch)
        a, b, c = customers_of(0, 3)
        (other,) = customers_of(1, 1)
        now = time.time()
        hour_a, hour_b = now - 3 * HOUR, now - HOUR
        sequence = 0

        async def put(agent: Any, orders: list[tuple[str, float, str, tuple[str, ...]]]) -> None:
            nonlocal sequence
            sequence += 1
            for message in customer_messages(0, sequence, orders, PARTITIONS, customers.config.horizon,
                                             customers.config.max_categories, 10_000):
                await agent.put(orjson.dumps(message), partition=message["partition"])

        async with pipeline.app.agents["customers"].test_context() as agent:
            await put(agent, [(a, hour_a, "tv", ("tv",)), (b, hour_a, "tv", ("tv",)), (other, hour_a, "tv", ("tv",))])
            if fault == "burned meta":  # the first flush after a restore: its burned meta key is refused
                failing.refused = lambda key: key == b"0/meta"
            else:
                await customers.flush()
                assert failing.failures == 0
            # The flush the broker fails: a and b become repeat, cross-sell customers in bucket b.
            first = len(events) if fault != "burned meta" else 0
            await put(agent, [(a, hour_b, "cables", ("cables", "tv")), (b, hour_b, "pens", ("pens",))])
            if fault == "customer":  # the flush's other keys land
                failing.refused = lambda key: key == f"0/c/{a}".encode()
            elif fault == "bucket":
                failing.refused = lambda key: key == bucket_key(0, bucket_of(hour_b, HOUR)).encode()
            elif fault == "meta":  # every other key landed
                failing.refused = lambda key: key == b"0/meta"
            elif fault == "meta_stored":
                failing.answer_lost = lambda key: key == b"0/meta"
            await customers.flush()  # given back, not raised: the agent's timer goes on
            failing.heal()
            assert failing.failures == 1
            assert not any(e.message.acked for e in events[first:]), "messages of a failed flush were acked"
            # A crash now: the changelog holds what a crash could leave, exact after the replay.
            assert_same(restarted(broker, customers, events), customers.ledgers[0], [a, b, c])
            await customers.revoke({1})

            await put(agent, [(c, hour_a, "tv", ("tv",))])  # a, b and bucket b do not change again
            await customers.flush()

        live = customers.ledgers[0]
        assert live.view().totals["customers"] == 3, "the live counts are wrong"
        state_a = live.state(a)
        assert state_a is not None and state_a.orders == 2
        # A restart now replays nothing: what the changelog holds is every count and every customer.
        assert_same(restarted(broker, customers, []), live, [a, b, c])
        assert all(e.message.acked for e in events if e.message.partition == 0)
        assert customers.flush_failures == 1
