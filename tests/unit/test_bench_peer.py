"""The peer contender (bench/contenders/quix.py) computes what the worker computes per order."""

from __future__ import annotations

import time

import orjson
import pytest

pytest.importorskip("quixstreams", reason="the peer framework is the bench extra: pip install -e '.[bench]'")

from quixstreams.models import TimestampType, TopicConfig

from bench.contenders.quix import KAFKA_TOPIC_DEFAULTS, BrokerDefaultsAdmin, classify, event_time_ms
from bench.load import make_events, order_maker
from streams.ops.traffic import TrafficShape
from streams.orders.contract import Order, decode_order
from streams.orders.facts import order_facts, primary_item


def test_the_peer_classifies_every_order_as_the_worker_does() -> None:
    shape = TrafficShape(late_share=0.0, duplicate_share=0.0, invalid_share=0.0, categories=4,
                         products_per_category=5)  # few products: ties between lines happen
    now = time.time()
    events = make_events(order_maker(7, shape), 2000, now - 600, now)
    cross_sell = 0
    for _, value in events:
        order = decode_order(value)
        assert isinstance(order, Order)
        facts, peer = order_facts(order), classify(orjson.loads(value))
        assert peer["primary_category"] == facts.primary_category
        assert peer["primary_product"] == primary_item(order.items).product_id
        assert peer["cross_sell"] is facts.cross_sell
        assert peer["revenue"] == pytest.approx(facts.revenue)
        assert event_time_ms(orjson.loads(value), [], 0, TimestampType.TIMESTAMP_CREATE_TIME) == pytest.approx(
            order.occurred_at * 1000, abs=1)
        cross_sell += facts.cross_sell
    assert 0 < cross_sell < len(events)


def test_a_topic_description_without_retention_gets_kafkas_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    described = {"orders": TopicConfig(num_partitions=4, replication_factor=1, extra_config={}),
                 "kept": TopicConfig(num_partitions=1, replication_factor=1, extra_config={"retention.ms": "-1"}),
                 "missing": None}
    monkeypatch.setattr("quixstreams.models.TopicAdmin.inspect_topics", lambda self, names, timeout=30: described)
    admin = BrokerDefaultsAdmin(broker_address="127.0.0.1:9")  # not contacted: the description is patched
    configs = admin.inspect_topics(list(described))
    assert configs["orders"] is not None and configs["orders"].extra_config == KAFKA_TOPIC_DEFAULTS
    assert configs["kept"] is not None and configs["kept"].extra_config["retention.ms"] == "-1"
    assert configs["missing"] is None
