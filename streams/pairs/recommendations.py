"""From a product's companion summary to a "frequently bought together" message.

A horizon view of the pairs ledger ranks a product's top k :class:`Companion` s
(with :func:`confidence` and :func:`lift`); :class:`RecommendationThrottle` decides
whether that list is worth a message now (publish, tombstone or skip); and
:func:`recommendation_message` builds the value the recommendations topic
carries, as ``schemas/recommendation.schema.json`` describes it (key: the
product id; a tombstone is a null value).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

HORIZONS: Final = ("24h", "7d")  # the default horizons
HORIZON_LABEL: Final = re.compile(r"[1-9][0-9]*(s|m|h|d)")  # the schema's "horizon" pattern
MAX_COMPANIONS: Final = 100  # the schema's maxItems for "companions"
_DIGITS: Final = 6  # confidence and lift are rounded so messages are short and stable


# Association metrics. Zero denominators give 0.0, never an exception or NaN:
# with no orders (or no orders of A or B) there is no evidence, and 0.0 keeps
# such a pair at the bottom of every ranking. Note that for lift this "no
# evidence" 0.0 is not the "independent" 1.0.


def confidence(n_ab: float, n_a: float) -> float:
    """P(B | A) for the rule A -> B: share of the orders with A that also have B; 0.0 when ``n_a`` is 0."""
    return n_ab / n_a if n_a > 0 else 0.0


def lift(n_ab: float, n_a: float, n_b: float, n: float) -> float:
    """confidence(A -> B) / support(B) = n_ab * n / (n_a * n_b); 0.0 when n, n_a or n_b is 0.

    Above 1, A and B are bought together more often than if they were
    independent; below 1, less often.
    """
    if n <= 0 or n_a <= 0 or n_b <= 0:
        return 0.0
    return (n_ab * n) / (n_a * n_b)


@dataclass(frozen=True, slots=True)
class Companion:
    """A product bought with the recommended one.

    ``count`` is the guaranteed number of orders containing both: the true
    count while counting is exact, and never above it once it is not (then at
    most the view's error bound below it). Confidence and lift are computed
    from it.
    """

    product_id: str
    count: int
    confidence: float
    lift: float


def changed_materially(
    old: Sequence[Companion] | None,
    new: Sequence[Companion],
    *,
    min_rank_change: int = 1,
    min_relative_count_change: float = 0.2,
) -> bool:
    """Whether ``new`` differs enough from ``old`` (the last *published* list) to be worth a message.

    True when a companion entered or left the list, when a companion moved by at
    least ``min_rank_change`` places (1: any change of order), or when a count
    changed by more than ``min_relative_count_change`` of its old value (0.2:
    more than 20 %). False otherwise, including for equal lists. Confidence and
    lift are not compared: they move with every order of A or B, while the
    counts are the evidence. ``old`` None (nothing published) counts as empty.
    Comparing with the last published list, not the last computed one, lets
    slow drifts add up until they cross a threshold.
    """
    if min_rank_change < 1:
        raise ValueError(f"min_rank_change must be >= 1 (places), got {min_rank_change!r}")
    if min_relative_count_change < 0:
        raise ValueError(f"min_relative_count_change must be >= 0, got {min_relative_count_change!r}")
    before = {companion.product_id: (rank, companion.count) for rank, companion in enumerate(old or ())}
    after = {companion.product_id: (rank, companion.count) for rank, companion in enumerate(new)}
    if before.keys() != after.keys():
        return True
    for product_id, (new_rank, new_count) in after.items():
        old_rank, old_count = before[product_id]
        if abs(new_rank - old_rank) >= min_rank_change:
            return True
        if abs(new_count - old_count) > min_relative_count_change * max(old_count, 1):
            return True
    return False


def recommendation_message(
    product: str,
    horizon: str,
    computed_at: datetime,
    companions: Sequence[Companion],
    *,
    orders_with_product: int,
    total_orders: int,
    exact: bool,
    error_bound: int,
) -> dict[str, Any]:
    """The value of a recommendations-topic message for ``product`` (schemas/recommendation.schema.json).

    ``computed_at`` must carry a time zone; it is written in UTC, RFC 3339.
    ``exact`` and ``error_bound`` describe the counts: exact, or guaranteed
    (never above the truth) and at most ``error_bound`` below it.
    """
    if HORIZON_LABEL.fullmatch(horizon) is None:
        raise ValueError(f"recommendation horizon must be a duration label such as 24h or 7d, got {horizon!r}")
    if computed_at.tzinfo is None or computed_at.utcoffset() is None:
        raise ValueError(f"computed_at must be time-zone aware (e.g. datetime.now(UTC)), got {computed_at!r}")
    if error_bound < 0 or (exact and error_bound):
        raise ValueError(f"error_bound must be >= 0, and 0 when exact, got {error_bound!r} (exact={exact!r})")
    if len(companions) > MAX_COMPANIONS:
        raise ValueError(
            f"a recommendation holds at most {MAX_COMPANIONS} companions, got {len(companions)} for {product!r}:"
            " lower k"
        )
    return {
        "product_id": product,
        "horizon": horizon,
        "computed_at": _rfc3339(computed_at),
        "orders_with_product": orders_with_product,
        "total_orders": total_orders,
        "exact": exact,
        "error_bound": error_bound,
        "companions": [
            {
                "product_id": companion.product_id,
                "count": companion.count,
                "confidence": round(companion.confidence, _DIGITS),
                "lift": round(companion.lift, _DIGITS),
            }
            for companion in companions
        ],
    }


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- when to publish --------------------------------------------------------


class Decision(enum.Enum):
    PUBLISH = "publish"  # send recommendation_message(...)
    TOMBSTONE = "tombstone"  # send a null value: the product has no companions any more
    SKIP = "skip"  # send nothing


@dataclass(frozen=True, slots=True)
class PublishedState:
    """What was last sent for a product, and when; empty ``companions`` means a tombstone."""

    companions: tuple[Companion, ...]
    published_at: datetime


@dataclass(frozen=True, slots=True)
class RecommendationThrottle:
    """Decides per product whether a new companion list is sent now, pure: the caller passes ``now``.

    * nothing above min support now, but companions were published last: TOMBSTONE;
    * nothing above min support and nothing (or a tombstone) published: SKIP;
    * never published anything: PUBLISH;
    * less than ``min_interval_seconds`` since the last message (publish or
      tombstone): SKIP, so a flapping product sends at most one message per
      interval;
    * otherwise PUBLISH when :func:`changed_materially` against the last
      published list, else SKIP.

    A SKIP is not remembered: the caller asks again at its next flush, and gets
    the deferred message once the interval has passed.
    """

    min_interval_seconds: float
    min_rank_change: int = 1
    min_relative_count_change: float = 0.2

    def __post_init__(self) -> None:
        if self.min_interval_seconds < 0:
            raise ValueError(f"min_interval_seconds must be >= 0, got {self.min_interval_seconds!r}")
        if self.min_rank_change < 1:
            raise ValueError(f"min_rank_change must be >= 1 (places), got {self.min_rank_change!r}")
        if self.min_relative_count_change < 0:
            raise ValueError(f"min_relative_count_change must be >= 0, got {self.min_relative_count_change!r}")

    def decide(self, new: Sequence[Companion], last: PublishedState | None, now: datetime) -> Decision:
        """What to send for a product whose current list is ``new``; ``last`` None: never sent anything."""
        published_any = last is not None and len(last.companions) > 0
        if not new and not published_any:
            return Decision.SKIP
        if last is None:
            return Decision.PUBLISH
        if (now - last.published_at).total_seconds() < self.min_interval_seconds:
            return Decision.SKIP
        if not new:
            return Decision.TOMBSTONE
        changed = changed_materially(
            last.companions,
            new,
            min_rank_change=self.min_rank_change,
            min_relative_count_change=self.min_relative_count_change,
        )
        return Decision.PUBLISH if changed else Decision.SKIP

    def forgettable(self, state: PublishedState, now: datetime) -> bool:
        """Whether ``state`` may be dropped: it decides as if nothing had been published.

        True for a tombstone at least ``min_interval_seconds`` old. Keeping such
        states would keep one for every product that ever had companions.
        """
        return not state.companions and (now - state.published_at).total_seconds() >= self.min_interval_seconds

    @staticmethod
    def state_after(
        decision: Decision, new: Sequence[Companion], last: PublishedState | None, now: datetime
    ) -> PublishedState | None:
        """The state to keep once ``decision`` has been carried out (tombstones are remembered too)."""
        if decision is Decision.PUBLISH:
            return PublishedState(tuple(new), now)
        if decision is Decision.TOMBSTONE:
            return PublishedState((), now)
        return last
