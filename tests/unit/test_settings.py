"""streams.settings: defaults, parsing of CROSSSELL_* variables, and errors a person can act on."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from streams.settings import Settings, SettingsError, duration_label, parse_duration


def test_no_variables_give_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()


def test_defaults_are_a_local_embedded_setup_with_minute_windows() -> None:
    settings = Settings.from_env({})
    assert (settings.embedded, settings.partitions, settings.log_level) == (True, 4, "info")
    assert (settings.window_seconds, settings.grace_seconds, settings.retention_seconds) == (60.0, 120.0, 86400.0)
    assert settings.rolling_views == (300.0, 3600.0, 86400.0)


def test_consumer_group_timing_defaults_move_a_dead_worker_s_partitions_within_seconds() -> None:
    # 6 s is the least session timeout a Kafka broker accepts by default (group.min.session.timeout.ms).
    settings = Settings.from_env({})
    assert (settings.session_timeout_seconds, settings.rebalance_timeout_seconds,
            settings.heartbeat_interval_seconds) == (6.0, 6.0, 2.0)
    assert Settings.from_env({"CROSSSELL_SESSION_TIMEOUT_SECONDS": "30s"}).heartbeat_interval_seconds == 3.0


def test_variables_without_the_prefix_are_ignored() -> None:
    assert Settings.from_env({"PATH": "/usr/bin", "CROSSSELLPARTITIONS": "x", "WEB_PORT": "1"}) == Settings()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("7d", 7 * 86400.0),
        ("2w", 14 * 86400.0),
        ("1.5s", 1.5),
        (" 2m ", 120.0),
        ("0", 0.0),
    ],
)
def test_parse_duration_reads_a_number_with_an_optional_unit(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "5 minutes", "-1s", "1y", "1h30m", "five"])
def test_parse_duration_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(30.0, "30s"), (90.0, "90s"), (300.0, "5m"), (3600.0, "1h"), (86400.0, "24h"), (604800.0, "7d"), (1.5, "1.5s")],
)
def test_duration_label_is_the_shortest_exact_label(seconds: float, label: str) -> None:
    assert duration_label(seconds) == label


@pytest.mark.parametrize(
    ("raw", "seconds"), [("90", 90.0), ("90s", 90.0), ("500ms", 0.5), ("5m", 300.0), ("1h", 3600.0), ("7d", 604800.0)]
)
def test_duration_variables_accept_every_unit(raw: str, seconds: float) -> None:
    assert Settings.from_env({"CROSSSELL_GRACE_SECONDS": raw}).grace_seconds == seconds


@pytest.mark.parametrize(
    ("variable", "raw", "attribute", "expected"),
    [
        ("CROSSSELL_ROLLING_VIEWS", "5m,1h", "rolling_views", (300.0, 3600.0)),
        ("CROSSSELL_ROLLING_VIEWS", " 1h, 5m ,5m,", "rolling_views", (300.0, 3600.0)),  # sorted, distinct
        ("CROSSSELL_ROLLING_VIEWS", "24h", "rolling_views", (86400.0,)),
        ("CROSSSELL_PAIR_HORIZONS", "7d,24h", "pair_horizons", (86400.0, 604800.0)),
        ("CROSSSELL_PARTITIONS", " 8 ", "partitions", 8),
        ("CROSSSELL_LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("CROSSSELL_ORDERS_TOPIC", " shop.orders ", "orders_topic", "shop.orders"),
        ("CROSSSELL_RECOMMENDATION_MIN_CHANGE", "0.5", "recommendation_min_change", 0.5),
        ("CROSSSELL_EXPECTED_RATE", "0.26", "expected_rate", 0.26),
        ("CROSSSELL_PAIR_MEMORY_MB", "512", "pair_memory_bytes", 512_000_000),
        ("CROSSSELL_PAIR_CAPACITY", "3000", "pair_capacity", 3000),  # deprecated: a cap under the budget
        ("CROSSSELL_BROKER_URL", "kafka://broker:9092", "broker_url", "kafka://broker:9092"),
        ("CROSSSELL_SESSION_TIMEOUT_SECONDS", "3s", "heartbeat_interval_seconds", 1.0),
    ],
)
def test_variables_are_parsed_into_typed_settings(variable: str, raw: str, attribute: str, expected: object) -> None:
    assert getattr(Settings.from_env({variable: raw}), attribute) == expected


def test_a_broker_url_lists_its_bootstrap_servers_and_turns_off_the_embedded_broker() -> None:
    settings = Settings.from_env({"CROSSSELL_BROKER_URL": "kafka://a:9092;b:9093"})
    assert (settings.embedded, settings.bootstrap_servers()) == (False, "a:9092,b:9093")


# (environment, variable the message must name, the rejected value, text saying what is allowed)
INVALID: list[tuple[str, dict[str, str], str, str, str]] = [
    ("port too high", {"CROSSSELL_WEB_PORT": "70000"}, "CROSSSELL_WEB_PORT", "70000", "1-65535"),
    ("port zero", {"CROSSSELL_WEB_PORT": "0"}, "CROSSSELL_WEB_PORT", "0", "1-65535"),
    ("port not a number", {"CROSSSELL_WEB_PORT": "http"}, "CROSSSELL_WEB_PORT", "http", "whole number"),
    ("zero partitions", {"CROSSSELL_PARTITIONS": "0"}, "CROSSSELL_PARTITIONS", "0", ">= 1"),
    ("message limit above the clients' requests", {"CROSSSELL_MAX_MESSAGE_BYTES": "2000000"},
     "CROSSSELL_MAX_MESSAGE_BYTES", "2000000", "16384 to 900000"),
    ("message limit too small", {"CROSSSELL_MAX_MESSAGE_BYTES": "1000"}, "CROSSSELL_MAX_MESSAGE_BYTES", "1000",
     "16384 to 900000"),
    ("events too large for a dead letter", {"CROSSSELL_MAX_MESSAGE_BYTES": "100000"}, "CROSSSELL_MAX_EVENT_BYTES",
     "65536", "at most half of CROSSSELL_MAX_MESSAGE_BYTES"),
    ("negative partitions", {"CROSSSELL_PARTITIONS": "-2"}, "CROSSSELL_PARTITIONS", "-2", ">= 1"),
    (
        "typo in a variable name",
        {"CROSSSELL_WINDOW_SECOND": "60"},
        "CROSSSELL_WINDOW_SECOND",
        "CROSSSELL_WINDOW_SECOND",
        "CROSSSELL_WINDOW_SECONDS",
    ),
    (
        "rolling view not a multiple of the window",
        {"CROSSSELL_ROLLING_VIEWS": "5m,90s"},
        "CROSSSELL_ROLLING_VIEWS",
        "90s",
        "whole multiples of the window (60s)",
    ),
    (
        "rolling view not a multiple of a custom window",
        {"CROSSSELL_WINDOW_SECONDS": "2m", "CROSSSELL_ROLLING_VIEWS": "3m"},
        "CROSSSELL_ROLLING_VIEWS",
        "3m",
        "whole multiples of the window (120s)",
    ),
    (
        "rolling view longer than retention",
        {"CROSSSELL_ROLLING_VIEWS": "2h", "CROSSSELL_RETENTION_SECONDS": "1h"},
        "CROSSSELL_ROLLING_VIEWS",
        "2h",
        "at most the retention (3600s)",
    ),
    (
        "retention smaller than the window",
        {"CROSSSELL_WINDOW_SECONDS": "5m", "CROSSSELL_RETENTION_SECONDS": "1m", "CROSSSELL_ROLLING_VIEWS": "5m"},
        "CROSSSELL_RETENTION_SECONDS",
        "60",
        ">= the window (300s)",
    ),
    ("window below a second", {"CROSSSELL_WINDOW_SECONDS": "500ms"}, "CROSSSELL_WINDOW_SECONDS", "0.5", ">= 1s"),
    ("duration in words", {"CROSSSELL_GRACE_SECONDS": "2 minutes"}, "CROSSSELL_GRACE_SECONDS", "2 minutes", "5m"),
    ("empty list", {"CROSSSELL_ROLLING_VIEWS": " , "}, "CROSSSELL_ROLLING_VIEWS", " , ", "comma-separated"),
    (
        "broker url with an http scheme",
        {"CROSSSELL_BROKER_URL": "http://broker:9092"},
        "CROSSSELL_BROKER_URL",
        "http://broker:9092",
        "kafka://host:port",
    ),
    (
        "broker url without a host",
        {"CROSSSELL_BROKER_URL": "kafka://"},
        "CROSSSELL_BROKER_URL",
        "kafka://",
        "kafka://host:port",
    ),
    (
        "bad log level",
        {"CROSSSELL_LOG_LEVEL": "verbose"},
        "CROSSSELL_LOG_LEVEL",
        "verbose",
        "debug, info, warning, error",
    ),
    (
        "topic name with a space",
        {"CROSSSELL_ORDERS_TOPIC": "shop orders"},
        "CROSSSELL_ORDERS_TOPIC",
        "shop orders",
        "A-Z a-z 0-9 . _ -",
    ),
    ("basket of one", {"CROSSSELL_MAX_BASKET": "1"}, "CROSSSELL_MAX_BASKET", "1", ">= 2"),
    ("expected rate of one", {"CROSSSELL_EXPECTED_RATE": "1"}, "CROSSSELL_EXPECTED_RATE", "1.0", "below 1"),
    ("expected rate as a percentage", {"CROSSSELL_EXPECTED_RATE": "26"}, "CROSSSELL_EXPECTED_RATE", "26",
     "between 0 and 1"),
    (
        "change threshold above one",
        {"CROSSSELL_RECOMMENDATION_MIN_CHANGE": "1.5"},
        "CROSSSELL_RECOMMENDATION_MIN_CHANGE",
        "1.5",
        "between 0 and 1",
    ),
    ("session timeout below a second", {"CROSSSELL_SESSION_TIMEOUT_SECONDS": "500ms"},
     "CROSSSELL_SESSION_TIMEOUT_SECONDS", "0.5", "group.min.session.timeout.ms"),
    ("zero rebalance timeout", {"CROSSSELL_REBALANCE_TIMEOUT_SECONDS": "0"}, "CROSSSELL_REBALANCE_TIMEOUT_SECONDS",
     "0.0", ">= 1s"),
    (
        "pair horizon shorter than the window",
        {"CROSSSELL_PAIR_HORIZONS": "30s"},
        "CROSSSELL_PAIR_HORIZONS",
        "30s",
        "at least the window (60s)",
    ),
    ("no memory for pair counts", {"CROSSSELL_PAIR_MEMORY_MB": "0"}, "CROSSSELL_PAIR_MEMORY_MB", "0", ">= 1"),
    ("negative deprecated pair capacity", {"CROSSSELL_PAIR_CAPACITY": "-1"}, "CROSSSELL_PAIR_CAPACITY", "-1",
     "0: no cap; deprecated, CROSSSELL_PAIR_MEMORY_MB bounds the pair state"),
    ("no effect to detect", {"CROSSSELL_EXPERIMENT_EFFECT": "0"}, "CROSSSELL_EXPERIMENT_EFFECT", "0.0", "above 0"),
    ("benchmark band upside down", {"CROSSSELL_BENCHMARK_RATE_LOW": "0.4"}, "CROSSSELL_BENCHMARK_RATE_LOW", "0.4",
     "at most CROSSSELL_BENCHMARK_RATE_HIGH (0.3)"),
    ("marker without an offset", {"CROSSSELL_EXPERIMENT_MARKER": "2026-11-22T18:30:00"},
     "CROSSSELL_EXPERIMENT_MARKER", "2026-11-22T18:30:00", "RFC 3339 with an offset"),
    ("marker that is no time", {"CROSSSELL_EXPERIMENT_MARKER": "launch day"}, "CROSSSELL_EXPERIMENT_MARKER",
     "launch day", "or unix seconds"),
]


@pytest.mark.parametrize(
    ("environ", "variable", "value", "allowed"),
    [
        pytest.param(environ, variable, value, allowed, id=description)
        for description, environ, variable, value, allowed in INVALID
    ],
)
def test_an_invalid_setting_names_the_variable_its_value_and_what_is_allowed(
    environ: dict[str, str], variable: str, value: str, allowed: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ)
    message = str(raised.value)
    assert (variable in message, value in message, allowed in message) == (True, True, True), message


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


def _text_of(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(f"{v:g}s" for v in value)
    return str(value)


@pytest.mark.parametrize("setting", [f for f in fields(Settings)], ids=lambda f: f.name)
def test_every_setting_reads_back_its_default_through_the_parser_of_its_type(setting: Any) -> None:
    variable = "CROSSSELL_" + setting.name.upper()
    assert getattr(Settings.from_env({variable: _text_of(setting.default)}), setting.name) == setting.default


@pytest.mark.parametrize("name", ["FLUSH_INTERVAL_SECONDS", "PAIR_FLUSH_INTERVAL_SECONDS",
                                  "RECOMMENDATION_INTERVAL_SECONDS", "DEDUP_HORIZON_SECONDS",
                                  "BROKER_CHECK_TIMEOUT_SECONDS"])
def test_an_interval_of_zero_is_refused_naming_the_variable(name: str) -> None:
    with pytest.raises(SettingsError, match=f"CROSSSELL_{name}=0.0 is not allowed: expected a duration > 0"):
        Settings.from_env({f"CROSSSELL_{name}": "0"})


def test_a_boolean_setting_names_what_it_accepts() -> None:
    with pytest.raises(SettingsError, match="CROSSSELL_FAST_PATH='maybe' is not allowed: expected true or false"):
        Settings.from_env({"CROSSSELL_FAST_PATH": "maybe"})


def test_allocation_tracing_is_off_unless_a_report_interval_is_set() -> None:
    assert Settings.from_env({}).tracemalloc_seconds == 0.0
    assert Settings.from_env({"CROSSSELL_TRACEMALLOC_SECONDS": "5m"}).tracemalloc_seconds == 300.0


def test_an_allocation_report_interval_below_a_second_names_what_is_allowed() -> None:
    with pytest.raises(SettingsError, match=r"CROSSSELL_TRACEMALLOC_SECONDS=0\.5 is not allowed: expected 0 \(off\)"):
        Settings.from_env({"CROSSSELL_TRACEMALLOC_SECONDS": "500ms"})


@pytest.mark.parametrize(("raw", "seconds"), [("2026-11-22T18:30:00Z", 1795372200.0),
                                              ("2026-11-22T19:30:00+01:00", 1795372200.0),
                                              ("1795372200", 1795372200.0), ("", None)])
def test_the_experiment_marker_is_rfc_3339_or_unix_seconds(raw: str, seconds: float | None) -> None:
    assert Settings.from_env({"CROSSSELL_EXPERIMENT_MARKER": raw}).experiment_marker_time == seconds
