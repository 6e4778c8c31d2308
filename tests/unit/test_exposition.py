"""streams.runtime.exposition: the /metrics body is generate_latest's, byte for byte, scrape after scrape.

Every test renders with one TextExposition over several scrapes (its caches
carry over) and compares with prometheus_client.generate_latest of the same
families. Families are built afresh for each scrape, as our collectors build
them; where a test renders families it also hands to generate_latest, ours
renders first (generate_latest reading ``samples`` turns rows into samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Timestamp

from streams.runtime.exposition import CounterFamily, GaugeFamily, TextExposition

AWKWARD_VALUES = [0, 0.0, -0.0, 1, 1.0, True, False, -1, 3, 3.0, 0.5, -2.5, 1e-7, 5e-324, 123456.7, 999999.0,
                  1e6, 1234567.0, 1.5e16, 1e22, 1.7976931348623157e308, -1e6, -1234567.0, 10**20, 2**53 + 1,
                  math.nan, math.inf, -math.inf]
AWKWARD_LABELS = ["", "plain", 'a "quoted" value', "back\\slash", "new\nline", "all \\ \" \n three", "ünïcödé ✓",
                  "日本語", "emoji 🛒", "trailing\\"]


class Families:
    """A collector yielding what ``build`` returns, built afresh on every scrape."""

    def __init__(self, build: Callable[[], Iterable[Metric]]) -> None:
        self.build = build

    def collect(self) -> Iterator[Metric]:
        yield from self.build()


class Frozen:
    """A collector yielding the same families every time (what one collection of a registry returned)."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics


def assert_same_bytes(exposition: TextExposition, registry: Any) -> bytes:
    """One collection, rendered by ours and then by generate_latest: the same bytes."""
    frozen = Frozen(registry.collect())
    ours = exposition.render(frozen)
    assert ours == generate_latest(frozen)  # type: ignore[arg-type]
    return ours


def awkward_families(shift: float = 0.0) -> list[Metric]:
    """Our families and prometheus_client's, with every awkward value and label value."""
    families: list[Metric] = []
    for kind in (CounterFamily, GaugeFamily, CounterMetricFamily, GaugeMetricFamily):
        family = kind(f"awkward_{kind.__name__.lower()}", "Help with a back\\slash,\na newline and \"quotes\".",
                      labels=["value", "label"])
        for n, value in enumerate(AWKWARD_VALUES):
            family.add_metric([str(n), AWKWARD_LABELS[n % len(AWKWARD_LABELS)]], value + shift
                              if isinstance(value, float) and value == value else value)
        families.append(family)
        families.append(kind(f"unlabelled_{kind.__name__.lower()}", "", value=42.0 + shift))
    return families


def test_awkward_values_labels_and_help_render_as_generate_latest_does_scrape_after_scrape() -> None:
    exposition = TextExposition()
    for shift in (0.0, 0.0, 1.0, 0.0):  # the same again (caches hit), new values, back again
        body = assert_same_bytes(exposition, Families(lambda shift=shift: awkward_families(shift)))
    assert b'label="all \\\\ \\" \\n three"' in body  # escaped, not raw
    assert b"NaN\n" in body and b"+Inf\n" in body and b"-Inf\n" in body and b"1.234567e+06\n" in body


def test_zero_and_negative_zero_keep_their_own_texts_whichever_comes_first() -> None:
    exposition = TextExposition()
    for values in ([0.0, -0.0], [-0.0, 0.0], [0, -0.0, 0.0]):
        def zeros(values: list[float] = values) -> list[Metric]:
            family = GaugeFamily("zeros", "Signed zeros.", labels=["n"])
            for n, value in enumerate(values):
                family.add_metric([str(n)], value)
            return [family]
        assert_same_bytes(exposition, Families(zeros))


def every_kind_of_family() -> list[Metric]:
    created = CounterMetricFamily("with_created", "A counter with created samples.", labels=["a"])
    created.add_metric(["x"], 3, created=1_700_000_000.5)
    created.add_metric(["y"], 4, created=1_700_000_001.0)
    ours_created = CounterFamily("ours_with_created", "Ours, rows then a created sample.", labels=["a"])
    ours_created.add_metric(["x"], 1)
    ours_created.add_metric(["y"], 2, created=1_700_000_000.0)
    ours_created.add_metric(["z"], 3)
    stamped = GaugeFamily("stamped", "Samples with timestamps.", labels=["a"])
    stamped.add_metric(["row"], 1.0)
    stamped.add_metric(["ts"], 2.0, timestamp=1_700_000_000.123)
    stamped.add_metric(["ts2"], 3.0, timestamp=Timestamp(1_700_000_000, 500_000_000))
    stamped.add_metric(["row2"], 4.0)
    summary = SummaryMetricFamily("latency_seconds", "A summary.", labels=["path"])
    summary.add_metric(["/"], count_value=3, sum_value=1.5)
    histogram = HistogramMetricFamily("size_bytes", "A histogram.", labels=["path"])
    histogram.add_metric(["/"], buckets=[("0.5", 1), ("1.0", 2), ("+Inf", 3)], sum_value=2.25)
    gauge_histogram = GaugeHistogramMetricFamily("queue_bytes", "A gauge histogram.", labels=["q"])
    gauge_histogram.add_metric(["a"], buckets=[("1.0", 4), ("+Inf", 5)], gsum_value=3.5)
    info = InfoMetricFamily("build", "An info family.", labels=["host"])
    info.add_metric(["h1"], {"version": "1.2", "commit": "abc\"def"})
    stateset = StateSetMetricFamily("mode", "A state set.", labels=["worker"])
    stateset.add_metric(["w1"], {"on": True, "off": False})
    unknown = UnknownMetricFamily("mystery", "An unknown family.", value=7)
    utf8 = GaugeFamily("name.with.dots", "A UTF-8 metric name.", labels=["label.with.dots", "ok"])
    utf8.add_metric(["a", "b"], 1.0)
    plain_utf8 = GaugeMetricFamily("other.dotted", "Dotted, prometheus_client's family.", labels=["x.y"])
    plain_utf8.add_metric(["v"], 2.0)
    empty = GaugeFamily("no_samples", "A family without samples.", labels=["a"])
    unsorted = GaugeFamily("labels_out_of_order", "Label names not in order.", labels=["zeta", "alpha", "mid"])
    unsorted.add_metric(["z", "a", "m"], 1.0)
    short = GaugeFamily("fewer_values", "Fewer label values than names: zip stops early.", labels=["a", "b"])
    short.add_metric(["only a"], 1.0)
    return [created, ours_created, stamped, summary, histogram, gauge_histogram, info, stateset, unknown, utf8,
            plain_utf8, empty, unsorted, short]


def test_every_kind_of_family_timestamps_created_samples_and_utf8_names_render_as_generate_latest_does() -> None:
    exposition = TextExposition()
    for _ in range(3):
        body = assert_same_bytes(exposition, Families(every_kind_of_family))
    assert b"# TYPE ours_with_created_created gauge\n" in body and b"# TYPE build_info gauge\n" in body


def test_the_instrumented_metrics_and_standard_collectors_render_as_generate_latest_does() -> None:
    registry = CollectorRegistry(auto_describe=True)
    counter = Counter("requests", "Requests.", ["path"], registry=registry)
    gauge = Gauge("in_flight", "In flight.", registry=registry)
    histogram = Histogram("duration_seconds", "Duration.", registry=registry)
    summary = Summary("size_bytes", "Size.", ["kind"], registry=registry)
    Info("release", "Release.", registry=registry).info({"version": "0.1"})
    for standard in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
        registry.register(standard)
    exposition = TextExposition()
    for n in range(4):
        counter.labels(path=f"/p{n % 2}").inc(n + 0.5)
        gauge.set(n - 1.5)
        histogram.observe(0.01 * n)
        summary.labels(kind="a\"b").observe(n * 1000.0)
        body = assert_same_bytes(exposition, registry)
    assert b"process_" in body or b"python_gc_" in body


def test_our_families_hold_the_samples_prometheus_clients_families_hold() -> None:
    for ours in awkward_families():
        if not isinstance(ours, CounterFamily | GaugeFamily):
            continue
        twin = (CounterMetricFamily if isinstance(ours, CounterFamily) else GaugeMetricFamily)(
            ours.name, ours.documentation, labels=list(ours._labelnames))
        for labels, value in ours.rows:
            twin.add_metric(list(labels), value)
        assert repr(ours.samples) == repr(twin.samples)  # repr: a NaN equals no NaN
        assert ours.rows == []  # read once, kept as samples
    registry = CollectorRegistry()
    registry.register(Families(awkward_families))
    assert registry.get_sample_value("awkward_gaugefamily", {"value": "3", "label": "back\\slash"}) == 1
    assert registry.get_sample_value("unlabelled_counterfamily_total") == 42.0


def test_a_family_read_before_rendering_renders_from_its_samples() -> None:
    family = GaugeFamily("read_first", "Read by get_sample_value first.", labels=["a"])
    family.add_metric(["x"], 1.0)
    assert len(family.samples) == 1
    family.add_metric(["y"], 2.0)  # after the samples: still in order
    assert TextExposition().render(Frozen([family])) == generate_latest(Frozen([family]))  # type: ignore[arg-type]
    assert [s.labels["a"] for s in family.samples] == ["x", "y"]


def test_a_family_whose_label_names_change_between_scrapes_renders_its_new_names() -> None:
    exposition = TextExposition()
    for names in (["a"], ["b"], ["a"], ["b", "a"]):
        def family(names: list[str] = names) -> list[Metric]:
            gauge = GaugeFamily("same_name", "Same name, type and help.", labels=names)
            gauge.add_metric(["v", "w"][:len(names)], 1.0)
            return [gauge]
        assert_same_bytes(exposition, Families(family))


def test_label_values_that_keep_changing_do_not_grow_the_caches_past_their_bound() -> None:
    exposition = TextExposition(min_cached=500)

    def churning(scrape: int) -> list[Metric]:
        family = GaugeFamily("top_products", "Top products: new ones every scrape.", labels=["product"])
        for n in range(50):
            family.add_metric([f"p-{scrape}-{n}"], scrape * 100.0 + n + 0.25)
        return [family]

    held = []
    for scrape in range(200):
        assert_same_bytes(exposition, Families(lambda scrape=scrape: churning(scrape)))
        held.append(exposition.cached_entries)
    assert max(held) <= 500 + 2 * 50 + 1  # the bound, and what one scrape adds above it
    assert held[-1] < 200 * 50  # not everything seen


def test_an_error_in_a_family_names_the_family_as_generate_latest_does() -> None:
    broken = GaugeFamily("broken", "A label value that is no string.", labels=["a"])
    broken.add_metric([7], 1.0)  # type: ignore[list-item]
    with pytest.raises(AttributeError) as raised:
        TextExposition().render(Frozen([broken]))
    assert raised.value.args[-1] is broken


# Randomized families: names, help, labels and values of every sort, rendered with one TextExposition over
# all examples (so each example also meets the caches the examples before it left).
NAMES = st.one_of(st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True),
                  st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8))
LABEL_NAMES = st.one_of(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True),
                        st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6))
LABEL_VALUES = st.one_of(st.sampled_from(AWKWARD_LABELS), st.text(st.characters(blacklist_categories=("Cs",)),
                                                                   max_size=10))
VALUES = st.one_of(st.sampled_from(AWKWARD_VALUES), st.floats(), st.integers(-2**64, 2**64), st.booleans())
TIMESTAMPS = st.one_of(st.none(), st.floats(0, 4e9), st.builds(Timestamp, st.integers(0, 4 * 10**9),
                                                               st.integers(0, 999_999_999)))


@st.composite
def family_specs(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(["counter", "gauge", "prometheus_counter", "prometheus_gauge"]))
    names = draw(st.lists(LABEL_NAMES, max_size=3, unique=True))
    samples = draw(st.lists(st.tuples(st.lists(LABEL_VALUES, min_size=len(names), max_size=len(names)), VALUES,
                                      TIMESTAMPS, st.one_of(st.none(), st.floats(0, 2e9))), max_size=6))
    return kind, draw(NAMES), draw(st.text(max_size=20)), names, samples


def build(spec: tuple[Any, ...]) -> Metric:
    kind, name, documentation, names, samples = spec
    family_class = {"counter": CounterFamily, "gauge": GaugeFamily, "prometheus_counter": CounterMetricFamily,
                    "prometheus_gauge": GaugeMetricFamily}[kind]
    family = family_class(name, documentation, labels=names)
    for labels, value, timestamp, created in samples:
        if kind.endswith("counter"):
            family.add_metric(labels, value, created=created, timestamp=timestamp)
        else:
            family.add_metric(labels, value, timestamp=timestamp)
    return family


SHARED = TextExposition(min_cached=50)  # small: the examples also clear the caches now and then


@settings(max_examples=400, deadline=None)
@given(st.lists(family_specs(), max_size=5))
def test_random_families_render_as_generate_latest_does(specs: list[tuple[Any, ...]]) -> None:
    def families() -> list[Metric]:
        return [build(spec) for spec in specs]
    try:
        expected = generate_latest(Families(families))  # type: ignore[arg-type]
    except (ValueError, OverflowError) as error:  # a name prometheus_client refuses, a value no float holds
        with pytest.raises(type(error)):
            SHARED.render(Families(families))
        return
    assert SHARED.render(Families(families)) == expected
    assert SHARED.render(Families(families)) == expected  # again, from the caches
