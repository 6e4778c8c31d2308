"""One settings object, read from the environment once and passed in.

Every setting is an environment variable named ``CROSSSELL_<NAME>``. A bad
value raises :class:`SettingsError` naming the variable, the value and what is
allowed, so that a person can fix it without reading code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, TypeVar

PREFIX = "CROSSSELL_"

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
    log_level: str = "info"

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

    # Frequently bought together: each horizon is split into `pair_slots` buckets;
    # per pairs partition and bucket, at most `pair_product_capacity` products and
    # `pair_capacity` pairs are counted (Space-Saving): memory does not grow with the catalogue.
    pair_horizons: tuple[float, ...] = (86400.0, 604800.0)
    pair_slots: int = 12
    pair_product_capacity: int = 1000
    pair_capacity: int = 3000
    # A pair bucket is rewritten whole on each flush; less often than the orders' state.
    pair_flush_interval_seconds: float = 5.0
    max_basket: int = 50
    recommendation_top_k: int = 10
    min_support: int = 3
    recommendation_interval_seconds: float = 60.0
    recommendation_min_change: float = 0.2

    # Consumer group timing (python -m bench.takeover measures it): a dead worker's partitions
    # move after the session timeout plus up to one heartbeat (a third of it, at most 3 s), and
    # the embedded broker holds every join for half the session timeout. 6 s is the least a
    # Kafka broker accepts by default (group.min.session.timeout.ms); Faust's defaults make
    # the first join take ~30 s.
    session_timeout_seconds: float = 6.0
    rebalance_timeout_seconds: float = 6.0
    broker_check_timeout_seconds: float = 10.0


    @property
    def heartbeat_interval_seconds(self) -> float:
        """A third of the session timeout, at most 3 s: a lost heartbeat or two costs no partitions.

        Not shorter for now: with a 1 s heartbeat (6 s session) the kill case of
        tests/integration/test_rebalance.py once double counted an invalid event (1 run of 6);
        at 2 s, what the fault tests have always run with, none of 8 did.
        """
        return min(3.0, self.session_timeout_seconds / 3)

    @property
    def embedded(self) -> bool:
        return not self.broker_url

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
            values[key] = _PARSERS.get(key, _text)(name, raw)
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
                     "max_tracked_values", "top_pairs", "pair_slots", "pair_product_capacity", "pair_capacity",
                     "max_basket",
                     "recommendation_top_k", "min_support"):
            _require(getattr(self, name) >= 1, name.upper(), getattr(self, name), "a whole number >= 1")
        _require(self.flush_interval_seconds > 0, "FLUSH_INTERVAL_SECONDS", self.flush_interval_seconds,
                 "a duration > 0")
        _require(self.pair_flush_interval_seconds > 0, "PAIR_FLUSH_INTERVAL_SECONDS",
                 self.pair_flush_interval_seconds, "a duration > 0")
        _require(self.max_basket >= 2, "MAX_BASKET", self.max_basket, "a whole number >= 2 (a pair needs two)")
        for horizon in self.pair_horizons:
            _require(horizon >= self.window_seconds, "PAIR_HORIZONS", duration_label(horizon),
                     f"durations of at least the window ({self.window_seconds:g}s), e.g. 24h,7d")
        _require(self.session_timeout_seconds >= 1, "SESSION_TIMEOUT_SECONDS", self.session_timeout_seconds,
                 "a duration >= 1s (a Kafka broker accepts 6s and more by default: group.min.session.timeout.ms)")
        _require(self.rebalance_timeout_seconds >= 1, "REBALANCE_TIMEOUT_SECONDS", self.rebalance_timeout_seconds,
                 "a duration >= 1s")
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


def _lowered(parse: Callable[[str, str], T]) -> Callable[[str, str], T]:
    return lambda name, raw: parse(name, raw.lower())


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "partitions": _integer,
    "replication_factor": _integer,
    "web_port": _integer,
    "log_level": _lowered(_text),
    "window_seconds": _seconds,
    "retention_seconds": _seconds,
    "grace_seconds": _seconds,
    "rolling_views": _durations,
    "max_future_seconds": _seconds,
    "max_event_bytes": _integer,
    "max_items": _integer,
    "max_quantity": _integer,
    "dedup_horizon_seconds": _seconds,
    "flush_interval_seconds": _seconds,
    "flush_max_events": _integer,
    "max_label_values": _integer,
    "max_tracked_values": _integer,
    "top_pairs": _integer,
    "pair_horizons": _durations,
    "pair_slots": _integer,
    "pair_product_capacity": _integer,
    "pair_capacity": _integer,
    "pair_flush_interval_seconds": _seconds,
    "max_basket": _integer,
    "recommendation_top_k": _integer,
    "min_support": _integer,
    "recommendation_interval_seconds": _seconds,
    "recommendation_min_change": _fraction,
    "session_timeout_seconds": _seconds,
    "rebalance_timeout_seconds": _seconds,
    "broker_check_timeout_seconds": _seconds,
}
