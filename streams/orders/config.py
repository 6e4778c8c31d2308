"""How a partition's ledger is configured: windows, lateness, retention, dedup and pair counting.

Read from the settings once (:func:`window_config`); the ledger and the pure
tools (the hot-path benchmark, the tests' offline truth) build it without Faust.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.orders.detection import DetectionConfig
from streams.settings import Settings, duration_label


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """What a :class:`~streams.orders.ledger.PartitionLedger` needs to know; defaults as the settings'."""


    size: float = 60.0
    grace: float = 120.0
    retention: float = 86400.0
    dedup_horizon: float = 3600.0
    max_future: float = 300.0
    max_tracked: int = 200
    potential_capacity: int = 0  # primary products counted per window (Space-Saving); 0: none
    # Frequently bought together: horizon label -> seconds, split into `pair_slots` buckets.
    pair_horizons: tuple[tuple[str, float], ...] = ()
    pair_slots: int = 12
    pair_partitions: int = 1
    max_basket: int = 50
    # Customer-level state (streams/customers/): 0 customer partitions = off.
    customer_partitions: int = 0
    customer_horizon: float = 30 * 86400.0
    customer_max_categories: int = 8
    # Pair deltas are sent in parts of at most this many bytes of JSON (room left for the record).
    max_message_bytes: int = 524_288
    # Fleet-wide drop detection (streams/orders/fleet_detection.py): each flush's orders counted per
    # tick of this many seconds of event time (0: none sent).
    detection_tick: float = 0.0


# WindowConfig field <- the setting it is read from.
_FROM_SETTINGS = (
    ("size", "window_seconds"), ("grace", "grace_seconds"), ("retention", "retention_seconds"),
    ("dedup_horizon", "dedup_horizon_seconds"), ("max_future", "max_future_seconds"),
    ("max_tracked", "max_tracked_values"), ("potential_capacity", "potential_capacity"),
    ("pair_slots", "pair_slots"), ("pair_partitions", "partitions"),
    ("max_basket", "max_basket"), ("max_message_bytes", "max_message_bytes"),
)


def window_config(settings: Settings) -> WindowConfig:
    return WindowConfig(
        customer_partitions=settings.partitions if settings.customers else 0,
        customer_horizon=settings.customer_horizon_seconds, customer_max_categories=settings.customer_max_categories,
        pair_horizons=tuple((duration_label(h), h) for h in settings.pair_horizons),
        detection_tick=DetectionConfig().tick,
        **{name: getattr(settings, setting) for name, setting in _FROM_SETTINGS},
    )


def detection_config(settings: Settings) -> DetectionConfig:
    return DetectionConfig(expected_rate=settings.expected_rate, max_values=settings.max_label_values)
