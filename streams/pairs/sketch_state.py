"""The stored form of a Space-Saving summary (streams.pairs.sketch), read back and checked.

A changelog holds ``{"capacity", "total", "floor", "counts": {item: count},
"errors": {item: error}}`` (errors only where not 0). State written before the
memory budget holds ``"exact"`` instead of the floor and ``"counters"``, a list
of [item, count, error]; it reads too, its floor being the smallest count once
not exact. Anything that does not fit the bounds of a summary is a ValueError
naming the field.

Nothing here knows about Kafka, Faust or Prometheus.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard


@dataclass(frozen=True, slots=True)
class State:
    capacity: int | None
    total: int
    floor: int
    entries: list[tuple[str, int, int]]  # (item, count, error)


def read_state(data: Mapping[str, Any]) -> State:
    """The state in ``data``, in either form, once it is checked against the bounds of a summary."""
    capacity = data.get("capacity")
    if capacity is not None:
        capacity = _field_int(data, "capacity", minimum=1)
    total = _field_int(data, "total", minimum=0)
    entries, floor = _current_entries(data) if "counts" in data else _earlier_entries(data)
    if capacity is not None and len(entries) > capacity:
        raise ValueError(f"SpaceSaving state: {len(entries)} counters, more than 'capacity' ({capacity})")
    counted = sum(count for _, count, _ in entries)
    certain = counted - sum(error for _, _, error in entries)
    if certain > total or (floor == 0 and counted != total):
        raise ValueError(
            f"SpaceSaving state: the counts add up to {counted} ({certain} without their errors), which does"
            f" not fit 'total' {total} (more than it without errors, or different while exact)"
        )
    if any(count < floor or error > floor for _, count, error in entries):
        raise ValueError(f"SpaceSaving state: a counter is below the floor {floor} or has an error above it")
    return State(capacity, total, floor, entries)


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _current_entries(data: Mapping[str, Any]) -> tuple[list[tuple[str, int, int]], int]:
    counts, errors = data.get("counts"), data.get("errors", {})
    if not (isinstance(counts, dict) and isinstance(errors, dict)):
        raise ValueError(f"SpaceSaving state: 'counts' and 'errors' must be objects, got {type(counts).__name__}"
                         f" and {type(errors).__name__}")
    for item, count in counts.items():
        if not (is_int(count) and count >= 1):
            raise ValueError(f"SpaceSaving state: each count must be an integer >= 1, got {item!r}: {count!r}")
    for item, error in errors.items():
        if not (is_int(error) and 1 <= error <= counts.get(item, 0)):
            raise ValueError(f"SpaceSaving state: each error must be 1 to its item's count, got {item!r}: {error!r}")
    floor = _field_int(data, "floor", minimum=0)
    return [(item, count, errors.get(item, 0)) for item, count in counts.items()], floor


def _earlier_entries(data: Mapping[str, Any]) -> tuple[list[tuple[str, int, int]], int]:
    counters = data.get("counters")
    if not isinstance(counters, list):
        raise ValueError(f"SpaceSaving state: 'counts' or 'counters' expected, got {counters!r}")
    entries: list[tuple[str, int, int]] = []
    for entry in counters:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and is_int(entry[1])
                and is_int(entry[2]) and 0 <= entry[2] <= entry[1] and entry[1] >= 1):
            raise ValueError(
                f"SpaceSaving state: each counter must be [item, count >= 1, 0 <= error <= count], got {entry!r}")
        entries.append((entry[0], entry[1], entry[2]))
    if len({item for item, _, _ in entries}) != len(entries):
        raise ValueError("SpaceSaving state: 'counters' lists an item twice")
    exact = data.get("exact")
    if not isinstance(exact, bool):
        raise ValueError(f"SpaceSaving state: 'exact' must be true or false, got {exact!r}")
    return entries, 0 if exact else min((count for _, count, _ in entries), default=0)


def _field_int(data: Mapping[str, Any], name: str, *, minimum: int) -> int:
    value = data.get(name)
    if is_int(value) and value >= minimum:
        return value
    raise ValueError(f"SpaceSaving: {name!r} must be an integer >= {minimum}, got {value!r}")
