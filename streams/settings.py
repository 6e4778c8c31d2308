"""One settings object, read from the environment once and passed in.

Every setting is an environment variable named ``CROSSSELL_<NAME>``. A bad
value raises :class:`SettingsError` naming the variable, the value and what is
allowed, so that a person can fix it without reading code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, TypeVar

PREFIX = "CROSSSELL_"
# aiokafka's and confluent-kafka's default request limits are 1,048,576 and 1,000,000 bytes.
MAX_MESSAGE_BYTES = 1_000_000
MIN_MESSAGE_BYTES = 16_384

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting has a value the project cannot use."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"5m"``, ``"1h"``, ``"7d"``; raises ValueError."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def duration_label(seconds: float) -> str:
    """The shortest exact label of a duration: 300 -> "5m", 86400 -> "24h"."""
    whole = int(seconds)
    if whole != seconds or whole <= 0:
        return f"{seconds}s"
    if whole % 86400 == 0 and whole > 86400:
        return f"{whole // 86400}d"
    if whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the worker, the traffic tools and the embedded broker need."""

    # Where the broker is: empty means "start the embedded Tansu broker".
    broker_url: str = ""
    app_id: str = "crosssell"
    orders_topic: str = "orders"
    dead_letter_topic: str = "orders-dead-letters"
    pairs_topic: str = "crosssell-product-pairs"
    recommendations_topic: str = "recommendations"
    partitions: int = 4
    replication_factor: int = 1
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    data_dir: str = "var/worker"
    log_level: str = field(default="info", metadata={"parse": "lowered"})

    # Event-time windows.
    window_seconds: float = 60.0
    retention_seconds: float = 86400.0
    grace_seconds: float = 120.0
    rolling_views: tuple[float, ...] = (300.0, 3600.0, 86400.0)
    max_future_seconds: float = 300.0

    # Input limits.
    max_event_bytes: int = 65536
    max_items: int = 500
    max_quantity: int = 100_000
    # Every message the worker produces (dead letters, pair deltas, changelog records) stays
    # under this size: Kafka clients refuse requests over 1 MiB by default (aiokafka's
    # max_request_size), and a refused message would stop the worker on every restart.
    max_message_bytes: int = 524_288

    # Duplicates: the same order_id within this event-time horizon counts once.
    dedup_horizon_seconds: float = 3600.0

    # How often buffered state is written to the changelog and offsets acked.
    flush_interval_seconds: float = 0.5
    flush_max_events: int = 5000

    # Bounded label sets on metrics: top-N values plus "other".
    max_label_values: int = 20
    # Distinct categories/channels/variants kept per window before "other".
    max_tracked_values: int = 200
    top_pairs: int = 20

    # Frequently bought together: each horizon is split into `pair_slots` buckets. The
    # product and pair counts of every bucket of the partitions a worker owns share
    # `pair_memory_mb` (10^6 bytes): exact while they fit, Space-Saving beyond
    # (streams/pairs/budget.py), so memory does not grow with the catalogue.
    pair_horizons: tuple[float, ...] = (86400.0, 604800.0)
    pair_slots: int = 12
    pair_memory_mb: int = 128
    # Deprecated (the fixed capacities before the budget): caps per bucket on top of it; 0 = none.
    pair_product_capacity: int = 0
    pair_capacity: int = 0
    # A pair bucket is rewritten whole on each flush; less often than the orders' state.
    pair_flush_interval_seconds: float = 5.0
    max_basket: int = 50
    recommendation_top_k: int = 10
    min_support: int = 3
    recommendation_interval_seconds: float = 60.0
    recommendation_min_change: float = field(default=0.2, metadata={"parse": "fraction"})

    # Orders delivered in batches through the project's Faust extension (streams/runtime/fastpath.py);
    # false runs plain Faust, one message per order: slower, and independent of Faust's internals.
    fast_path: bool = True

    # Consumer group timing: Faust's defaults make the first join take ~30 s.
    session_timeout_seconds: float = 10.0
    rebalance_timeout_seconds: float = 10.0
    broker_check_timeout_seconds: float = 10.0


    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def pair_memory_bytes(self) -> int:
        return self.pair_memory_mb * 1_000_000

    @property
    def horizon_labels(self) -> tuple[str, ...]:
        return tuple(duration_label(h) for h in self.pair_horizons)

    def recommendations_topic_for(self, horizon: str) -> str:
        """One compacted topic per horizon, keyed by product_id: ``recommendations.24h``."""
        return f"{self.recommendations_topic}.{horizon}"

    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` from ``kafka://host:port[;host:port]``."""
        url = self.broker_url
        if "://" in url:
            url = url.split("://", 1)[1]
        return ",".join(part.strip() for part in re.split(r"[;,]", url) if part.strip())

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read ``CROSSSELL_*`` variables; unknown ones are an error (typos)."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, raw in environ.items():
            if not name.startswith(PREFIX):
                continue
            key = name[len(PREFIX) :].lower()
            if key not in known:
                allowed = ", ".join(sorted(PREFIX + k.upper() for k in known))
                raise SettingsError(f"{name} is not a setting of crosssell-streams. Known settings: {allowed}")
            values[key] = _parser_of(_FIELDS[key])(name, raw)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check relations between settings; raise SettingsError naming the variable."""
        _require(self.partitions >= 1, "PARTITIONS", self.partitions, "a whole number >= 1")
        _require(self.replication_factor >= 1, "REPLICATION_FACTOR", self.replication_factor, "a whole number >= 1")
        _require(0 < self.web_port < 65536, "WEB_PORT", self.web_port, "a TCP port 1-65535")
        _require(self.window_seconds >= 1, "WINDOW_SECONDS", self.window_seconds, "a duration >= 1s, e.g. 60s or 1m")
        _require(
            self.retention_seconds >= self.window_seconds,
            "RETENTION_SECONDS",
            self.retention_seconds,
            f"a duration >= the window ({self.window_seconds:g}s)",
        )
        _require(self.grace_seconds >= 0, "GRACE_SECONDS", self.grace_seconds, "a duration >= 0")
        for view in self.rolling_views:
            _require(
                self.window_seconds <= view <= self.retention_seconds and view % self.window_seconds == 0,
                "ROLLING_VIEWS",
                duration_label(view),
                f"durations that are whole multiples of the window ({self.window_seconds:g}s) "
                f"and at most the retention ({self.retention_seconds:g}s)",
            )
        _require(self.log_level in _LOG_LEVELS, "LOG_LEVEL", self.log_level, "one of " + ", ".join(_LOG_LEVELS))
        for name in ("orders_topic", "dead_letter_topic", "pairs_topic", "recommendations_topic", "app_id"):
            value = getattr(self, name)
            _require(bool(_TOPIC_NAME.match(value)), name.upper(), value, "1-249 characters of A-Z a-z 0-9 . _ -")
        for name in ("max_event_bytes", "max_items", "max_quantity", "flush_max_events", "max_label_values",
                     "max_tracked_values", "top_pairs", "pair_slots", "pair_memory_mb", "max_basket",
                     "recommendation_top_k", "min_support"):
            _require(getattr(self, name) >= 1, name.upper(), getattr(self, name), "a whole number >= 1")
        for name in ("pair_product_capacity", "pair_capacity"):
            _require(getattr(self, name) >= 0, name.upper(), getattr(self, name),
                     "a whole number >= 0 (0: no cap; deprecated, CROSSSELL_PAIR_MEMORY_MB bounds the pair state)")
        _require(
            MIN_MESSAGE_BYTES <= self.max_message_bytes <= MAX_MESSAGE_BYTES,
            "MAX_MESSAGE_BYTES", self.max_message_bytes,
            f"a whole number of bytes from {MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES} "
            "(the Kafka clients' request limit)")
        _require(
            self.max_event_bytes * 2 <= self.max_message_bytes,
            "MAX_EVENT_BYTES", self.max_event_bytes,
            f"at most half of CROSSSELL_MAX_MESSAGE_BYTES ({self.max_message_bytes}), so that a dead letter "
            "carries a rejected event whole with its headers")
        # Intervals and timeouts of zero would spin, time out at once or keep nothing.
        for name in ("flush_interval_seconds", "pair_flush_interval_seconds", "recommendation_interval_seconds",
                     "dedup_horizon_seconds", "session_timeout_seconds", "rebalance_timeout_seconds",
                     "broker_check_timeout_seconds"):
            _require(getattr(self, name) > 0, name.upper(), getattr(self, name), "a duration > 0")
        _require(self.max_future_seconds >= 0, "MAX_FUTURE_SECONDS", self.max_future_seconds, "a duration >= 0")
        _require(self.max_basket >= 2, "MAX_BASKET", self.max_basket, "a whole number >= 2 (a pair needs two)")
        for horizon in self.pair_horizons:
            _require(horizon >= self.window_seconds, "PAIR_HORIZONS", duration_label(horizon),
                     f"durations of at least the window ({self.window_seconds:g}s), e.g. 24h,7d")
        if self.broker_url:
            _require(self.broker_url.startswith("kafka://") and bool(self.bootstrap_servers()), "BROKER_URL",
                     self.broker_url, "kafka://host:port[;host:port], or empty for the embedded broker")


def _require(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise SettingsError(f"{PREFIX}{name}={value!r} is not allowed: expected {allowed}.")


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _integer(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not allowed: expected a whole number.") from None


def _seconds(name: str, raw: str) -> float:
    try:
        return parse_duration(raw)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not allowed: expected a duration such as 30, 30s, 500ms, 5m, 1h or 7d."
        ) from None


def _fraction(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise SettingsError(f"{name}={raw!r} is not allowed: expected a number between 0 and 1.")
    return value


def _durations(name: str, raw: str) -> tuple[float, ...]:
    parts = [p for p in raw.split(",") if p.strip()]
    if not parts:
        raise SettingsError(f"{name}={raw!r} is not allowed: expected a comma-separated list such as 5m,1h,24h.")
    return tuple(sorted({_seconds(name, p) for p in parts}))


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _boolean(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in _TRUE + _FALSE:
        raise SettingsError(f"{name}={raw!r} is not allowed: expected true or false.")
    return value in _TRUE


def _lowered(parse: Callable[[str, str], T]) -> Callable[[str, str], T]:
    return lambda name, raw: parse(name, raw.lower())


def _parser_of(setting: Field[Any]) -> Callable[[str, str], Any]:
    """How a variable's text becomes the field's value: by the field's type, or its ``parse`` metadata."""
    special = setting.metadata.get("parse")
    if special is not None:
        return _SPECIAL_PARSERS[special]
    return _PARSERS_BY_TYPE[str(setting.type)]


_PARSERS_BY_TYPE: dict[str, Callable[[str, str], Any]] = {
    "str": _text,
    "int": _integer,
    "float": _seconds,  # every plain float setting is a duration
    "bool": _boolean,
    "tuple[float, ...]": _durations,
}
_SPECIAL_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "lowered": _lowered(_text),
    "fraction": _fraction,
}

_FIELDS: dict[str, Field[Any]] = {f.name: f for f in fields(Settings)}
