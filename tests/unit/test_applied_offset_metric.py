"""crosssell_applied_offset: per owned partition, the highest orders offset applied.

Unlike the lag, which stands still with a stale highwater, it moves exactly
when the worker applies events: python -m bench.takeover times takeovers by it.
"""

from __future__ import annotations

from orders import checked_order
from prometheus_client import CollectorRegistry

from streams.orders.config import WindowConfig
from streams.orders.ledger import PartitionLedger
from streams.orders.snapshot import take_snapshot
from streams.runtime.metrics import CrossSellCollector
from streams.settings import Settings

CONFIG = WindowConfig(size=60.0, grace=120.0, retention=3600.0, dedup_horizon=600.0, max_future=300.0)


def test_each_owned_partition_exports_the_highest_offset_applied() -> None:
    settings = Settings()
    idle, busy = PartitionLedger(0, CONFIG), PartitionLedger(3, CONFIG)
    for offset in (0, 1, 7):
        busy.apply(offset, checked_order(order_id=f"o-{offset}"), 1_800_000_100.0)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(CrossSellCollector(lambda: take_snapshot([idle, busy], settings, dead_letters={}), settings))
    assert registry.get_sample_value("crosssell_applied_offset", {"partition": "3"}) == 7
    assert registry.get_sample_value("crosssell_applied_offset", {"partition": "0"}) == -1
