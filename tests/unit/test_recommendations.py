"""streams.pairs.recommendations: ranking, change detection, the message contract and the throttle."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from streams.pairs.recommendations import (
    HORIZON_LABEL,
    HORIZONS,
    MAX_COMPANIONS,
    Companion,
    Decision,
    PublishedState,
    RecommendationThrottle,
    changed_materially,
    recommendation_message,
)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "recommendation.schema.json"
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
NOW = datetime(2026, 11, 22, 18, 30, tzinfo=UTC)


def _format_checker() -> FormatChecker:
    """jsonschema's checker, with an RFC 3339 date-time check when rfc3339-validator is not installed."""
    checker = FormatChecker()
    if "date-time" not in checker.checkers:

        @checker.checks("date-time", raises=ValueError)
        def is_rfc3339(instance: object) -> bool:
            if not isinstance(instance, str):
                return True
            if not _RFC3339.fullmatch(instance):
                return False
            datetime.fromisoformat(instance)  # ValueError on 2026-13-40 and the like
            return True

    return checker


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=_format_checker())


def _companion(product_id: str, count: int, conf: float = 0.5, lift: float = 1.0) -> Companion:
    return Companion(product_id=product_id, count=count, confidence=conf, lift=lift)


# Orders containing "a" (10 of them), given as a's companions; n_B and N below.
_A_ORDERS = [["b", "c", "d"]] * 4 + [["b", "c"]] * 2 + [["e"]] * 2 + [["d"]] + [[]]
_N_B = {"a": 10, "b": 30, "c": 6, "d": 5, "e": 2}
_N = 100


# --- changed_materially -----------------------------------------------------

_B10, _C5, _D2 = _companion("b", 10), _companion("c", 5), _companion("d", 2)


@pytest.mark.parametrize(
    ("old", "new", "options", "expected"),
    [
        pytest.param(None, [], {}, False, id="nothing-before-nothing-now"),
        pytest.param(None, [_B10], {}, True, id="first-list"),
        pytest.param([_B10, _C5], [_B10, _C5], {}, False, id="equal"),
        pytest.param([_B10, _C5], [_B10], {}, True, id="companion-left"),
        pytest.param([_B10], [_B10, _C5], {}, True, id="companion-entered"),
        pytest.param([_B10], [_companion("d", 10)], {}, True, id="companion-replaced"),
        pytest.param([_B10, _C5], [_C5, _B10], {}, True, id="order-changed"),
        pytest.param([_B10, _C5], [_C5, _B10], {"min_rank_change": 2}, False, id="swap-below-rank-threshold"),
        pytest.param(
            [_B10, _C5, _D2], [_D2, _C5, _B10], {"min_rank_change": 2}, True, id="move-reaching-rank-threshold"
        ),
        pytest.param([_B10, _C5], [_companion("b", 12), _C5], {}, False, id="count-up-exactly-20-percent"),
        pytest.param([_B10, _C5], [_companion("b", 13), _C5], {}, True, id="count-up-30-percent"),
        pytest.param([_B10, _C5], [_B10, _companion("c", 3)], {}, True, id="count-down-40-percent"),
        pytest.param(
            [_B10, _C5], [_companion("b", 13), _C5], {"min_relative_count_change": 0.5}, False, id="count-within-custom"
        ),
        pytest.param([_B10], [_companion("b", 10, conf=0.9, lift=7.0)], {}, False, id="only-confidence-and-lift-moved"),
    ],
)
def test_changed_materially(
    old: list[Companion] | None, new: list[Companion], options: dict[str, Any], expected: bool
) -> None:
    assert changed_materially(old, new, **options) is expected


@pytest.mark.parametrize(
    ("options", "message"),
    [({"min_rank_change": 0}, "min_rank_change"), ({"min_relative_count_change": -0.1}, "min_relative_count_change")],
)
def test_changed_materially_rejects_meaningless_thresholds(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        changed_materially([], [], **options)


# --- recommendation_message and the schema ----------------------------------


def test_schema_horizons_and_max_companions_agree_with_the_code(schema: dict[str, Any]) -> None:
    pattern = re.compile(schema["properties"]["horizon"]["pattern"])
    assert all(pattern.fullmatch(h) for h in HORIZONS)
    assert HORIZON_LABEL.pattern.strip("^$") in pattern.pattern
    assert schema["properties"]["companions"]["maxItems"] == MAX_COMPANIONS


def test_schema_describes_every_field(schema: dict[str, Any]) -> None:
    item = schema["properties"]["companions"]["items"]
    for properties in (schema["properties"], item["properties"]):
        assert all(field.get("description") for field in properties.values())


def test_recommendation_message_follows_the_schema(validator: Draft202012Validator) -> None:
    companions = [Companion("b", 6, 0.6, 2.0), Companion("c", 3, 1 / 3, 4.123456789)]
    computed_at = datetime(2026, 11, 22, 19, 30, 0, 123456, tzinfo=timezone(timedelta(hours=1)))
    message = recommendation_message("a", "24h", computed_at, companions, orders_with_product=10, total_orders=100,
                                     exact=False, error_bound=2)
    assert message == {
        "product_id": "a",
        "horizon": "24h",
        "computed_at": "2026-11-22T18:30:00.123Z",
        "orders_with_product": 10,
        "total_orders": 100,
        "exact": False,
        "error_bound": 2,
        "companions": [
            {"product_id": "b", "count": 6, "confidence": 0.6, "lift": 2.0},
            {"product_id": "c", "count": 3, "confidence": 0.333333, "lift": 4.123457},
        ],
    }
    assert list(validator.iter_errors(message)) == []


def test_empty_companion_list_is_a_valid_message(validator: Draft202012Validator) -> None:
    message = recommendation_message("a", "7d", NOW, [], orders_with_product=0, total_orders=0, exact=True,
                                     error_bound=0)
    assert list(validator.iter_errors(message)) == []


_VALID: dict[str, Any] = {
    "product_id": "a",
    "horizon": "7d",
    "computed_at": "2026-11-22T18:30:00.000Z",
    "orders_with_product": 3,
    "total_orders": 9,
    "exact": True,
    "error_bound": 0,
    "companions": [{"product_id": "b", "count": 2, "confidence": 0.5, "lift": 1.5}],
}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"extra": 1}, id="unknown-field"),
        pytest.param({"horizon": "one day"}, id="horizon-not-a-duration"),
        pytest.param({"computed_at": "2026-11-22 18:30"}, id="not-rfc3339"),
        pytest.param({"computed_at": "2026-13-40T18:30:00Z"}, id="impossible-date"),
        pytest.param({"orders_with_product": -1}, id="negative-orders"),
        pytest.param({"total_orders": 1.5}, id="fractional-total"),
        pytest.param({"companions": [{"product_id": "b", "count": 0, "confidence": 0.5, "lift": 1}]}, id="count-0"),
        pytest.param({"companions": [{"product_id": "b", "count": 1, "confidence": 1.1, "lift": 1}]}, id="conf>1"),
        pytest.param({"companions": [{"product_id": "b", "count": 1, "confidence": 0.1, "lift": -1}]}, id="lift<0"),
        pytest.param({"companions": [{"product_id": "b", "count": 1, "confidence": 0.1}]}, id="no-lift"),
        pytest.param({"companions": [_VALID["companions"][0] | {"error": 1}]}, id="unknown-companion-field"),
        pytest.param({"companions": _VALID["companions"] * 101}, id="too-many-companions"),
        pytest.param({"exact": "yes"}, id="exact-not-a-boolean"),
        pytest.param({"error_bound": -1}, id="negative-error-bound"),
        pytest.param({"error_bound": 0.5}, id="fractional-error-bound"),
    ],
)
def test_schema_rejects_a_message_outside_the_contract(validator: Draft202012Validator, change: dict[str, Any]) -> None:
    assert list(validator.iter_errors(_VALID)) == []
    assert list(validator.iter_errors(_VALID | change)) != []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"horizon": "one day"}, "horizon must be a duration label"),
        ({"computed_at": datetime(2026, 11, 22, 18, 30)}, "time-zone aware"),  # naive: the case under test
        ({"companions": [_companion("b", 1)] * 101}, "at most 100 companions"),
        ({"error_bound": -1}, "error_bound must be >= 0"),
        ({"exact": True, "error_bound": 3}, "0 when exact"),
    ],
)
def test_recommendation_message_rejects_what_the_schema_would(arguments: dict[str, Any], message: str) -> None:
    call: dict[str, Any] = {"product": "a", "horizon": "24h", "computed_at": NOW, "companions": [], "exact": False,
                            "error_bound": 0}
    with pytest.raises(ValueError, match=message):
        recommendation_message(**(call | arguments), orders_with_product=1, total_orders=1)


def test_every_message_field_is_required_by_the_schema(schema: dict[str, Any]) -> None:
    message = recommendation_message("a", "24h", NOW, [_companion("b", 2)], orders_with_product=3, total_orders=9,
                                     exact=True, error_bound=0)
    assert set(schema["required"]) == set(message) == set(schema["properties"])


# --- RecommendationThrottle -------------------------------------------------

_THROTTLE = RecommendationThrottle(min_interval_seconds=300)
_LIST = (_B10, _C5)
_MOVED = [_companion("c", 11), _B10]
_PUBLISHED = PublishedState(_LIST, NOW)
_TOMBSTONED = PublishedState((), NOW)
_SOON = NOW + timedelta(seconds=299)
_LATER = NOW + timedelta(seconds=300)


@pytest.mark.parametrize(
    ("new", "last", "now", "expected"),
    [
        pytest.param(list(_LIST), None, NOW, Decision.PUBLISH, id="first-list-publishes-at-once"),
        pytest.param([], None, NOW, Decision.SKIP, id="nothing-to-say"),
        pytest.param(_MOVED, _PUBLISHED, _SOON, Decision.SKIP, id="changed-within-interval-skips"),
        pytest.param(_MOVED, _PUBLISHED, _LATER, Decision.PUBLISH, id="changed-after-interval-publishes"),
        pytest.param(list(_LIST), _PUBLISHED, _LATER, Decision.SKIP, id="unchanged-skips"),
        pytest.param([_companion("b", 11), _C5], _PUBLISHED, _LATER, Decision.SKIP, id="within-threshold-skips"),
        pytest.param([], _PUBLISHED, _LATER, Decision.TOMBSTONE, id="companions-gone-tombstones"),
        pytest.param([], _PUBLISHED, _SOON, Decision.SKIP, id="companions-gone-within-interval-waits"),
        pytest.param([], _TOMBSTONED, _LATER, Decision.SKIP, id="already-tombstoned-skips"),
        pytest.param(list(_LIST), _TOMBSTONED, _SOON, Decision.SKIP, id="back-within-interval-waits"),
        pytest.param(list(_LIST), _TOMBSTONED, _LATER, Decision.PUBLISH, id="back-after-interval-publishes"),
    ],
)
def test_throttle_decision(
    new: list[Companion], last: PublishedState | None, now: datetime, expected: Decision
) -> None:
    assert _THROTTLE.decide(new, last, now) is expected


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        (Decision.PUBLISH, PublishedState(tuple(_MOVED), _LATER)),
        (Decision.TOMBSTONE, PublishedState((), _LATER)),
        (Decision.SKIP, _PUBLISHED),
    ],
)
def test_throttle_state_after_remembers_what_was_sent(decision: Decision, expected: PublishedState) -> None:
    assert RecommendationThrottle.state_after(decision, _MOVED, _PUBLISHED, _LATER) == expected


@pytest.mark.parametrize(
    ("state", "now", "expected"),
    [
        pytest.param(_TOMBSTONED, _LATER, True, id="tombstone-after-interval"),
        pytest.param(_TOMBSTONED, _SOON, False, id="tombstone-within-interval"),
        pytest.param(_PUBLISHED, _LATER + timedelta(days=30), False, id="published-list"),
    ],
)
def test_throttle_forgets_only_states_that_decide_as_nothing_published(
    state: PublishedState, now: datetime, expected: bool
) -> None:
    assert _THROTTLE.forgettable(state, now) is expected
    same_decisions = all(_THROTTLE.decide(new, state, now) is _THROTTLE.decide(new, None, now)
                         for new in ([], list(_LIST), _MOVED))
    assert same_decisions or not expected


def test_throttle_uses_its_change_thresholds() -> None:
    lenient = RecommendationThrottle(min_interval_seconds=0, min_relative_count_change=0.5)
    assert lenient.decide([_companion("b", 13), _C5], _PUBLISHED, NOW) is Decision.SKIP
    assert lenient.decide([_companion("b", 16), _C5], _PUBLISHED, NOW) is Decision.PUBLISH


@pytest.mark.parametrize(
    "options",
    [
        {"min_interval_seconds": -1},
        {"min_interval_seconds": 1, "min_rank_change": 0},
        {"min_interval_seconds": 1, "min_relative_count_change": -1},
    ],
)
def test_throttle_rejects_meaningless_settings(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be >= "):
        RecommendationThrottle(**options)


