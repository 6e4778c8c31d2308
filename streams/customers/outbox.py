"""The repartition by customer: a flush's applied orders, one summary per customer, per customer partition.

An orders partition sends, per flush, one message per customer partition that
owns a customer of the flush (:func:`customer_partition`), holding for each of
its customers the state of the customer's orders in that flush
(:func:`~streams.customers.state.merge` of them: pre-aggregated). A message
carries its source partition, the outbox sequence number of the flush and its
part number, so the receiving ledger applies it once. Nothing here knows about
Kafka or Faust.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Any

import orjson

from streams.customers.state import CustomerState, merge, order_state

KIND = "customers"


def customer_partition(customer_id: str, partitions: int) -> int:
    """The customers-topic partition that owns ``customer_id`` (stable across processes and versions)."""
    return zlib.crc32(customer_id.encode()) % partitions


def customer_messages(source: int, sequence: int, orders: Iterable[tuple[str, float, str, tuple[str, ...]]],
                      partitions: int, horizon: float, max_categories: int,
                      max_bytes: int) -> list[dict[str, Any]]:
    """The messages of one flush: ``orders`` are (customer, event time, primary category, categories)."""
    by_customer: dict[str, CustomerState] = {}
    for customer, at, primary, categories in orders:
        by_customer[customer] = merge(by_customer.get(customer), order_state(at, primary, categories),
                                      horizon, max_categories)
    by_owner: dict[int, list[tuple[str, list[object]]]] = {}
    for customer, state in sorted(by_customer.items()):
        by_owner.setdefault(customer_partition(customer, partitions), []).append((customer, state.to_json()))
    messages: list[dict[str, Any]] = []
    for q, customers in sorted(by_owner.items()):
        chunks = _chunks(customers, max_bytes)
        messages.extend({"kind": KIND, "partition": q, "source": source, "sequence": sequence, "part": i,
                         "parts": len(chunks), "customers": dict(chunk)} for i, chunk in enumerate(chunks))
    return messages


def _chunks(customers: list[tuple[str, list[object]]], max_bytes: int) -> list[list[tuple[str, list[object]]]]:
    """``customers`` dealt into runs whose JSON takes at most ``max_bytes`` (with room for the header)."""
    room = max_bytes - 256
    chunks: list[list[tuple[str, list[object]]]] = [[]]
    used = 0
    for customer, state in customers:
        size = len(orjson.dumps(customer)) + len(orjson.dumps(state)) + 2
        if size > room:
            raise ValueError(f"customer {customer!r} alone takes {size} bytes, over {room}")
        if used + size > room and chunks[-1]:
            chunks.append([])
            used = 0
        chunks[-1].append((customer, state))
        used += size
    return chunks
