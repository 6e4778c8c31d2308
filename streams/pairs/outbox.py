"""The repartition by product: a flush's pair counts, laid out per owning pairs partition.

Orders are partitioned by order, but a product's companions must be counted
over all orders. So each orders partition pre-aggregates what a flush applied
into one :class:`~streams.pairs.basket.PairAccumulator` per (horizon, time
bucket) and sends one message per pairs-topic partition *q* and bucket
(:func:`outbox_messages`):

* ``pairs``: for the products that *q* owns (:func:`owner_partition`), their
  companions and co-occurrence counts in the batch;
* ``products`` and ``orders``: the batch's order count per product and in all,
  sent to every *q*, because support and lift of A→B need n_B and N, and B may
  be owned elsewhere.

A message carries its source partition and the outbox sequence number of the
flush that produced it. Until they are delivered, the orders changelog keeps
what they were laid out from, each accumulator once (:func:`outbox_state`), not
the messages: those repeat every product count for every pairs partition and
horizon. :func:`outbox_from_state` lays out the same messages again. A message too large for Kafka is sent in parts
(:func:`split_message`), each with its part number. The receiving side is
streams.pairs.ledger. Nothing here knows about Kafka or Faust.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import orjson

from streams.pairs.basket import PairAccumulator


def owner_partition(product_id: str, partitions: int) -> int:
    """The pairs-topic partition that owns ``product_id`` (stable across processes and versions)."""
    return zlib.crc32(product_id.encode()) % partitions


def outbox_messages(source: int, sequence: int, batches: Mapping[tuple[str, float], PairAccumulator],
                    partitions: int, max_bytes: int | None = None) -> list[dict[str, Any]]:
    """The messages of one flush of source partition ``source``: one per (q, horizon, bucket).

    An accumulator that stands for several keys (the ledger shares one between
    horizons whose buckets hold the same orders) is laid out once. With
    ``max_bytes``, a message whose JSON is larger is sent as parts that each fit.
    """
    messages: list[dict[str, Any]] = []
    laid_out: dict[int, tuple[dict[str, int], dict[int, dict[str, dict[str, int]]]]] = {}
    for (horizon, bucket), accumulator in sorted(batches.items()):
        if not accumulator.total_orders:
            continue
        known = laid_out.get(id(accumulator))
        if known is None:
            known = laid_out[id(accumulator)] = _message_contents(accumulator, partitions)
        products, pairs_by_owner = known
        for q in range(partitions):
            message = {
                "partition": q, "source": source, "sequence": sequence, "horizon": horizon, "bucket": bucket,
                "orders": accumulator.total_orders, "products": products, "pairs": pairs_by_owner.get(q, {}),
            }
            if max_bytes is None:
                messages.append(message)
            else:
                messages.extend(split_message(message, max_bytes))
    return messages


def outbox_state(batches: Mapping[tuple[str, float], PairAccumulator], partitions: int,
                 max_bytes: int | None = None) -> dict[str, Any]:
    """What :func:`outbox_messages` lays out, as JSON: an accumulator shared by several buckets once."""
    groups: list[dict[str, Any]] = []
    numbered: dict[int, int] = {}
    buckets = []
    for (horizon, bucket), accumulator in sorted(batches.items()):
        number = numbered.get(id(accumulator))
        if number is None:
            number = numbered[id(accumulator)] = len(groups)
            groups.append(accumulator.to_state())
        buckets.append([horizon, bucket, number])
    return {"partitions": partitions, "max_bytes": max_bytes, "groups": groups, "buckets": buckets}


def outbox_from_state(source: int, sequence: int, state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The messages :func:`outbox_messages` laid out from what :func:`outbox_state` kept: the same ones."""
    groups = [PairAccumulator.from_state(group) for group in state["groups"]]
    batches = {(horizon, float(bucket)): groups[number] for horizon, bucket, number in state["buckets"]}
    return outbox_messages(source, sequence, batches, state["partitions"], state["max_bytes"])


def split_message(message: dict[str, Any], max_bytes: int) -> list[dict[str, Any]]:
    """``message`` alone when its JSON takes at most ``max_bytes``, else parts that each do.

    The parts share the message's header; its product and pair counts are dealt
    out among them (a product's companions may span parts), and its order count
    goes with part 0. Applied in order, the parts add up to the message.
    """
    if len(orjson.dumps(message)) <= max_bytes:
        return [message]
    header = {k: v for k, v in message.items() if k not in ("orders", "products", "pairs")}
    empty = {**header, "orders": message["orders"], "part": 10**9, "parts": 10**9, "products": {}, "pairs": {}}
    # 256: a product key that starts a new part after being counted in the previous one.
    budget = max_bytes - len(orjson.dumps(empty)) - 256
    if budget < 1024:
        raise ValueError(f"max_bytes={max_bytes} leaves no room for the counts of a pairs message")
    chunks: list[tuple[dict[str, int], dict[str, dict[str, int]]]] = [({}, {})]
    used = 0

    def room_for(size: int) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        nonlocal used
        if used + size > budget:
            chunks.append(({}, {}))
            used = 0
        used += size
        return chunks[-1]

    for product, count in message["products"].items():
        room_for(len(orjson.dumps(product)) + len(str(count)) + 2)[0][product] = count
    for product, companions in message["pairs"].items():
        head = len(orjson.dumps(product)) + 4
        for companion, count in companions.items():
            size = len(orjson.dumps(companion)) + len(str(count)) + 2
            pairs = room_for(size if product in chunks[-1][1] else size + head)[1]
            pairs.setdefault(product, {})[companion] = count
    return [{**header, "orders": message["orders"] if i == 0 else 0, "part": i, "parts": len(chunks),
             "products": products, "pairs": pairs} for i, (products, pairs) in enumerate(chunks)]


def _message_contents(accumulator: PairAccumulator,
                      partitions: int) -> tuple[dict[str, int], dict[int, dict[str, dict[str, int]]]]:
    """The "products" of the accumulator's messages, and their "pairs" by pairs partition."""
    pairs_by_owner: dict[int, dict[str, dict[str, int]]] = {}
    for product, companions in accumulator.companion_counts().items():
        owner = owner_partition(product, partitions)
        of_owner = pairs_by_owner.get(owner)
        if of_owner is None:
            pairs_by_owner[owner] = {product: companions}
        else:
            of_owner[product] = companions
    return accumulator.product_counts(), pairs_by_owner
