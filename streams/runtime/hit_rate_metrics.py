"""The recommendation hit rate on /metrics (streams/orders/hit_rate.py), and the top primary products' best
companions (streams/orders/potential.py). The hit rate as sums, so Prometheus can add workers.

The hit rate of the fleet is ``sum(crosssell_recommendation_hit_orders) /
sum(crosssell_recommendation_listed_orders)``; the mean promise likewise
divides ``crosssell_recommendation_promised`` (or ``_best_confidence``) by the
listed orders.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import Metric

from streams.orders.hit_rate import HIT_FIGURES
from streams.orders.snapshot import Snapshot
from streams.orders.windows import bounded_labels

# prometheus_client's families, keeping their samples as rows for the /metrics page (exposition.py):
from streams.runtime.exposition import CounterFamily as CounterMetricFamily
from streams.runtime.exposition import GaugeFamily as GaugeMetricFamily
from streams.settings import Settings

PREFIX = "crosssell_recommendation_"
_DOCS = {
    "listed_orders": "Orders whose primary product had a published recommendation list at the order's event time",
    "hit_orders": "Of those, orders holding at least one listed companion",
    "promised": "Sum over those orders of what the list promised offline, P(at least one companion) = "
                "1 - prod(1 - confidence) (companions taken as independent)",
    "best_confidence": "Sum over those orders of the list's highest confidence (a lower bound of the offline "
                       "P(at least one companion))",
}


def recommendation_hits(snap: Snapshot, settings: Settings) -> Iterator[Metric]:
    if snap.lists_held is None:
        return
    families = [GaugeMetricFamily(PREFIX + name, f"{_DOCS[name]}, in the rolling view by variant (top "
                                  f"{settings.max_label_values} plus other).", labels=["window", "variant"])
                for name in HIT_FIGURES]
    for window, totals in snap.views.items():
        for variant, figures in bounded_labels(totals.recommendation_hits, settings.max_label_values).items():
            for family, value in zip(families, figures, strict=True):
                family.add_metric([window, variant], value)
    yield from families
    yield GaugeMetricFamily(PREFIX + "lists_held", "Products whose published recommendation lists this worker "
                            "holds for the hit rate (at most CROSSSELL_HIT_RATE_PRODUCTS).", value=snap.lists_held)
    yield CounterMetricFamily(PREFIX + "lists_evicted", "Products whose lists this worker dropped, least recently "
                              "used first, to stay within CROSSSELL_HIT_RATE_PRODUCTS (their orders count as "
                              "unlisted until the list is published again).", value=snap.lists_evicted)


def potential_companions(snap: Snapshot) -> Iterator[Metric]:
    """The best companion by lift of each top primary product (streams/orders/potential.py), from its list."""
    labels = ["product", "companion"]
    lift = GaugeMetricFamily("crosssell_primary_product_companion_lift", "Lift of the top primary product's best "
                             "companion (the highest lift in its published list).", labels=labels)
    confidence = GaugeMetricFamily("crosssell_primary_product_companion_confidence", "Confidence (share of the "
                                   "product's orders that hold it) of the top primary product's best companion.",
                                   labels=labels)
    for product, best in sorted(snap.companions.items()):
        lift.add_metric([product, best.product], best.lift)
        confidence.add_metric([product, best.product], best.confidence)
    yield lift
    yield confidence
