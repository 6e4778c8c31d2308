"""One settings object, read from the environment once and passed in.

Every setting is an environment variable named ``CROSSSELL_<NAME>``. A bad
value raises :class:`SettingsError` naming the variable, the value and what is
allowed, so that a person can fix it without reading code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from datetime import datetime
from typing import Any, TypeVar

PREFIX = "CROSSSELL_"
# Faust's producer refuses requests over 1,000,000 bytes (producer_max_request_size; aiokafka's
# own default is 1,048,576): a message needs room for its batch's framing under that.
MAX_MESSAGE_BYTES = 900_000
MIN_MESSAGE_BYTES = 16_384

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting has a value the project cannot use."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_LOG_LEVELS = ("debug", "info", "warning", "error")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Settings that may come from a file instead (CROSSSELL_<NAME>_FILE), for secrets mounted as files.
FROM_FILE = ("sasl_username", "sasl_password", "ssl_key_password")
FILE_SUFFIX = "_file"


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"5m"``, ``"1h"``, ``"7d"``; raises ValueError."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_instant(text: str) -> float:
    """Unix seconds from ``"1764000000"`` or RFC 3339 with an offset (``"2026-11-22T18:30:00Z"``); ValueError."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no offset")
    return moment.timestamp()


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
    customers_topic: str = "crosssell-customers"
    # The one-partition topic of the fleet's drop test (streams/orders/fleet_detection.py);
    # empty: <app_id>-drop-detection.
    detection_topic: str = ""
    recommendations_topic: str = "recommendations"
    # Before/after markers (`python -m streams mark`), read whole by every worker.
    markers_topic: str = "crosssell-markers"
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
    # The live page says "no orders since" once the newest event time is this far
    # behind the worker's clock (the stall alert's threshold in the rules is the same).
    stale_after_seconds: float = 300.0

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
    # Potential: primary products counted per window and partition (Space-Saving beyond); 0: none.
    # About 2.5 us of CPU per event and 5.5 kB per window and partition at 32 (streams/orders/potential.py).
    potential_capacity: int = 32
    # Recommendation hit rate: the published lists (of the first pair horizon) of at most this many
    # products are held per worker, least recently used evicted (streams/orders/hit_rate.py); 0: off.
    hit_rate_products: int = 10_000

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

    # Customer-level cross-sell (streams/customers/), off by default: it costs the worker about six
    # times the CPU per event (python -m bench.customers: 133 against 21 CPU s per million events).
    # Applied orders re-keyed by customer, one state per customer over the horizon in a RocksDB
    # table on disk (CROSSSELL_DATA_DIR), counts
    # in event-time buckets of `customer_bucket_seconds`. `customer_cache_mb` is RocksDB's block
    # cache per customer partition (its write buffers take half as much again): the memory bound.
    customers: bool = False
    customer_horizon_seconds: float = 30 * 86400.0
    customer_bucket_seconds: float = 3600.0
    customer_max_categories: int = 8
    customer_cache_mb: int = 16
    # Stored customers examined per flush for expiry (deleted once their last order is more than
    # a horizon older than the oldest bucket of the horizon); 0 = never expire.
    customer_expiry_keys: int = 2_000

    # Experiments (streams/orders/experiments.py): every variant is compared with the control
    # (when no order carries it, the variant with most orders); `experiment_effect` is the rise in the
    # cross-sell rate (absolute, 0.02 = 2 points) whose detection the orders-needed figure plans for.
    experiment_control: str = "control"
    experiment_effect: float = field(default=0.02, metadata={"parse": "fraction"})
    # Before/after: empty, or the moment something launched (RFC 3339 or unix seconds); the orders of
    # the windows before it are compared with those from its window on.
    experiment_marker: str = ""
    # The reference band of a strong cross-sell programme (ecommerce benchmark: 15-30 %), drawn on
    # the live page and the dashboard.
    benchmark_rate_low: float = field(default=0.15, metadata={"parse": "fraction"})
    benchmark_rate_high: float = field(default=0.30, metadata={"parse": "fraction"})
    # Drop detection (streams/orders/detection.py): the cross-sell rate the total is tested
    # against until the worker holds an hour-old baseline of its own (first hour, state lost);
    # 0 = none: then the data older than 15 minutes, once it holds enough orders.
    expected_rate: float = field(default=0.0, metadata={"parse": "fraction"})

    # Orders delivered in batches through the project's Faust extension (streams/runtime/fastpath.py);
    # false runs plain Faust, one message per order: slower, and independent of Faust's internals.
    fast_path: bool = True

    # Consumer group timing (python -m bench.takeover measures it): a dead worker's partitions
    # move after the session timeout plus up to one heartbeat (a third of it, at most 3 s), and
    # the embedded broker holds every join for half the session timeout. 6 s is the least a
    # Kafka broker accepts by default (group.min.session.timeout.ms); Faust's defaults make
    # the first join take ~30 s.
    session_timeout_seconds: float = 6.0
    rebalance_timeout_seconds: float = 6.0
    broker_check_timeout_seconds: float = 10.0

    # Connecting to a secured Kafka: streams/ops/security.py turns these into every client's
    # configuration. Secrets are left out of repr (and so of any log or error that shows Settings).
    security_protocol: str = field(default="PLAINTEXT", metadata={"parse": "uppered"})
    ssl_ca_file: str = ""
    ssl_cert_file: str = ""
    ssl_key_file: str = ""
    ssl_key_password: str = field(default="", repr=False, metadata={"parse": "verbatim"})
    sasl_mechanism: str = field(default="", metadata={"parse": "uppered"})
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False, metadata={"parse": "verbatim"})

    # Diagnostics: every this many seconds, log the allocation sites that grew most
    # (streams/runtime/allocations.py). 0 (the default) traces nothing; tracing costs CPU.
    tracemalloc_seconds: float = 0.0

    @property
    def heartbeat_interval_seconds(self) -> float:
        """A third of the session timeout, at most 3 s: a lost heartbeat or two costs no partitions.

        Not shorter for now: with a 1 s heartbeat (6 s session) the kill case of
        tests/integration/test_rebalance.py once double counted an invalid event (1 run of 6);
        at 2 s, what the fault tests have always run with, none of 8 did.
        """
        return min(3.0, self.session_timeout_seconds / 3)

    @property
    def experiment_marker_time(self) -> float | None:
        """The before/after marker in unix seconds; None when not set."""
        return parse_instant(self.experiment_marker) if self.experiment_marker else None

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def pair_memory_bytes(self) -> int:
        return self.pair_memory_mb * 1_000_000

    @property
    def horizon_labels(self) -> tuple[str, ...]:
        return tuple(duration_label(h) for h in self.pair_horizons)

    @property
    def detection_topic_name(self) -> str:
        return self.detection_topic or f"{self.app_id}-drop-detection"

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
        from_files: dict[str, str] = {}
        for name, raw in environ.items():
            if not name.startswith(PREFIX):
                continue
            key = name[len(PREFIX) :].lower()
            if key not in known and key.removesuffix(FILE_SUFFIX) in FROM_FILE:
                from_files[key.removesuffix(FILE_SUFFIX)] = name
                continue
            if key not in known:
                allowed = ", ".join(sorted([PREFIX + k.upper() for k in known]
                                           + [PREFIX + (k + FILE_SUFFIX).upper() for k in FROM_FILE]))
                raise SettingsError(f"{name} is not a setting of crosssell-streams. Known settings: {allowed}")
            values[key] = _parser_of(_FIELDS[key])(name, raw)
        for key, name in from_files.items():
            if key in values:
                raise SettingsError(f"{PREFIX}{key.upper()} and {name} are both set: set one of them.")
            values[key] = _read_setting_file(name, environ[name])
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
        _require(self.expected_rate < 1, "EXPECTED_RATE", self.expected_rate,
                 "a cross-sell rate below 1, e.g. 0.26 (0: none)")
        for view in self.rolling_views:
            _require(
                self.window_seconds <= view <= self.retention_seconds and view % self.window_seconds == 0,
                "ROLLING_VIEWS",
                duration_label(view),
                f"durations that are whole multiples of the window ({self.window_seconds:g}s) "
                f"and at most the retention ({self.retention_seconds:g}s)",
            )
        _require(self.log_level in _LOG_LEVELS, "LOG_LEVEL", self.log_level, "one of " + ", ".join(_LOG_LEVELS))
        for name in ("orders_topic", "dead_letter_topic", "pairs_topic", "customers_topic", "recommendations_topic",
                     "markers_topic", "app_id"):
            value = getattr(self, name)
            _require(bool(_TOPIC_NAME.match(value)), name.upper(), value, "1-249 characters of A-Z a-z 0-9 . _ -")
        _require(not self.detection_topic or bool(_TOPIC_NAME.match(self.detection_topic)), "DETECTION_TOPIC",
                 self.detection_topic, "empty (<app_id>-drop-detection) or 1-249 characters of A-Z a-z 0-9 . _ -")
        for name in ("max_event_bytes", "max_items", "max_quantity", "flush_max_events", "max_label_values",
                     "max_tracked_values", "top_pairs", "pair_slots", "pair_memory_mb", "max_basket",
                     "recommendation_top_k", "min_support"):
            _require(getattr(self, name) >= 1, name.upper(), getattr(self, name), "a whole number >= 1")
        _require(self.potential_capacity >= 0, "POTENTIAL_CAPACITY", self.potential_capacity,
                 "a whole number >= 0 (0: no per-product counts)")
        _require(self.hit_rate_products >= 0, "HIT_RATE_PRODUCTS", self.hit_rate_products,
                 "a whole number >= 0 (0: no recommendation hit rate)")
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
        # (The consumer group timeouts have their own lower bound, below.)
        for name in ("flush_interval_seconds", "pair_flush_interval_seconds", "recommendation_interval_seconds",
                     "dedup_horizon_seconds", "broker_check_timeout_seconds"):
            _require(getattr(self, name) > 0, name.upper(), getattr(self, name), "a duration > 0")
        _require(self.max_future_seconds >= 0, "MAX_FUTURE_SECONDS", self.max_future_seconds, "a duration >= 0")
        _require(self.stale_after_seconds > 0, "STALE_AFTER_SECONDS", self.stale_after_seconds, "a duration > 0")
        _require(self.tracemalloc_seconds == 0 or self.tracemalloc_seconds >= 1, "TRACEMALLOC_SECONDS",
                 self.tracemalloc_seconds, "0 (off) or a duration >= 1s; snapshots are slow, minutes apart suit")
        _require(self.max_basket >= 2, "MAX_BASKET", self.max_basket, "a whole number >= 2 (a pair needs two)")
        for horizon in self.pair_horizons:
            _require(horizon >= self.window_seconds, "PAIR_HORIZONS", duration_label(horizon),
                     f"durations of at least the window ({self.window_seconds:g}s), e.g. 24h,7d")
        _require(self.customer_bucket_seconds >= 60 and self.customer_bucket_seconds % 60 == 0,
                 "CUSTOMER_BUCKET_SECONDS", duration_label(self.customer_bucket_seconds),
                 "a whole number of minutes, e.g. 1h")
        _require(self.customer_horizon_seconds >= self.customer_bucket_seconds
                 and self.customer_horizon_seconds % self.customer_bucket_seconds == 0,
                 "CUSTOMER_HORIZON_SECONDS", duration_label(self.customer_horizon_seconds),
                 "a whole multiple of CROSSSELL_CUSTOMER_BUCKET_SECONDS "
                 f"({duration_label(self.customer_bucket_seconds)}), e.g. 30d")
        _require(self.customer_max_categories >= 2, "CUSTOMER_MAX_CATEGORIES", self.customer_max_categories,
                 "a whole number >= 2 (a cross-sell customer has two categories)")
        _require(self.customer_cache_mb >= 1, "CUSTOMER_CACHE_MB", self.customer_cache_mb, "a whole number >= 1")
        _require(self.customer_expiry_keys >= 0, "CUSTOMER_EXPIRY_KEYS", self.customer_expiry_keys,
                 "a whole number >= 0 (0: customers never expire)")
        _require(self.session_timeout_seconds >= 1, "SESSION_TIMEOUT_SECONDS", self.session_timeout_seconds,
                 "a duration >= 1s (a Kafka broker accepts 6s and more by default: group.min.session.timeout.ms)")
        _require(self.rebalance_timeout_seconds >= 1, "REBALANCE_TIMEOUT_SECONDS", self.rebalance_timeout_seconds,
                 "a duration >= 1s")
        _require(self.experiment_effect > 0, "EXPERIMENT_EFFECT", self.experiment_effect,
                 "a rise in the cross-sell rate between 0 and 1, above 0 (0.02 = 2 percentage points)")
        _require(self.benchmark_rate_low <= self.benchmark_rate_high, "BENCHMARK_RATE_LOW", self.benchmark_rate_low,
                 f"at most CROSSSELL_BENCHMARK_RATE_HIGH ({self.benchmark_rate_high:g})")
        _require(bool(self.experiment_control), "EXPERIMENT_CONTROL", self.experiment_control, "a variant name")
        if self.experiment_marker:
            try:
                parse_instant(self.experiment_marker)
            except ValueError:
                _require(False, "EXPERIMENT_MARKER", self.experiment_marker,
                         "RFC 3339 with an offset, such as 2026-11-22T18:30:00Z, or unix seconds")
        if self.broker_url:
            _require(self.broker_url.startswith("kafka://") and bool(self.bootstrap_servers()), "BROKER_URL",
                     self.broker_url, "kafka://host:port[;host:port], or empty for the embedded broker")
        _validate_security(self)

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


_TLS_SETTINGS = ("ssl_ca_file", "ssl_cert_file", "ssl_key_file", "ssl_key_password")
_SASL_SETTINGS = ("sasl_mechanism", "sasl_username", "sasl_password")


def _validate_security(settings: Settings) -> None:
    """Security settings that fit together; no message carries a secret's value."""
    protocol = settings.security_protocol
    _require(protocol in SECURITY_PROTOCOLS, "SECURITY_PROTOCOL", protocol, "one of " + ", ".join(SECURITY_PROTOCOLS))
    if protocol != "PLAINTEXT" and settings.embedded:
        raise SettingsError(f"{PREFIX}SECURITY_PROTOCOL={protocol} needs {PREFIX}BROKER_URL: the embedded broker "
                            f"serves plaintext only. Set {PREFIX}BROKER_URL to your Kafka, or unset "
                            f"{PREFIX}SECURITY_PROTOCOL for the embedded broker.")
    unused = [name for name in _TLS_SETTINGS if getattr(settings, name) and not settings.uses_tls]
    unused += [name for name in _SASL_SETTINGS if getattr(settings, name) and not settings.uses_sasl]
    if unused:
        names = ", ".join(_variable(name) for name in unused)
        wanted = "SSL or SASL_SSL" if unused[0] in _TLS_SETTINGS else "SASL_PLAINTEXT or SASL_SSL"
        it = "it" if len(unused) == 1 else "them"
        raise SettingsError(f"{names} set, but {PREFIX}SECURITY_PROTOCOL={protocol} does not use {it}: set "
                            f"{PREFIX}SECURITY_PROTOCOL to {wanted}, or unset {it}.")
    if settings.uses_sasl:
        _require(settings.sasl_mechanism in SASL_MECHANISMS, "SASL_MECHANISM", settings.sasl_mechanism,
                 f"one of {', '.join(SASL_MECHANISMS)} (required with {PREFIX}SECURITY_PROTOCOL={protocol})")
        for name in ("sasl_username", "sasl_password"):
            if not getattr(settings, name):
                raise SettingsError(f"{_variable(name)} (or {_variable(name + FILE_SUFFIX)}) is empty: "
                                    f"{PREFIX}SECURITY_PROTOCOL={protocol} logs in with a user name and password.")
    if bool(settings.ssl_cert_file) != bool(settings.ssl_key_file):
        given, missing = ("ssl_cert_file", "ssl_key_file") if settings.ssl_cert_file else ("ssl_key_file",
                                                                                            "ssl_cert_file")
        raise SettingsError(f"{_variable(given)} is set but {_variable(missing)} is not: a client certificate "
                            "(mutual TLS) needs both the certificate and its private key.")
    if settings.ssl_key_password and not settings.ssl_key_file:
        raise SettingsError(f"{PREFIX}SSL_KEY_PASSWORD is set but {PREFIX}SSL_KEY_FILE is not: the password "
                            "decrypts the client's private key.")
    for name in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
        path = getattr(settings, name)
        if path and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            problem = "is not a readable file" if os.path.exists(path) else "does not exist"
            raise SettingsError(f"{_variable(name)}={path!r} is not allowed: the file {problem}. "
                                "Expected the path of a PEM file.")


def _variable(name: str) -> str:
    return PREFIX + name.upper()


def _read_setting_file(name: str, path: str) -> str:
    """The contents of a mounted secret, without its trailing newline; the contents are never shown."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(f"{name}={path!r}: cannot read the file ({reason}).") from None


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


def _uppered(parse: Callable[[str, str], T]) -> Callable[[str, str], T]:
    return lambda name, raw: parse(name, raw.upper())


def _verbatim(name: str, raw: str) -> str:
    # A password is taken as given: spaces at either end may be part of it.
    return raw


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
    "uppered": _uppered(_text),
    "verbatim": _verbatim,
    "fraction": _fraction,
}

_FIELDS: dict[str, Field[Any]] = {f.name: f for f in fields(Settings)}
