"""The /metrics page body: the Prometheus text format 0.0.4, byte for byte as prometheus_client writes it.

``prometheus_client.generate_latest`` formats every sample afresh: it sorts and
escapes the labels, escapes the metric name and formats the value with
``floatToGoString``; and each ``add_metric`` of a custom collector builds a
``Sample`` and a label dict first. At 20 scrapes a second that was most of the
CPU of a /metrics answer, spent on label sets and headers that are the same as
in the scrape before.

- :class:`CounterFamily` and :class:`GaugeFamily` are prometheus_client's
  ``CounterMetricFamily`` and ``GaugeMetricFamily`` that keep each
  ``add_metric`` as a row (label values, value) and build the ``Sample``
  objects only when something reads ``samples`` (``get_sample_value``,
  ``generate_latest``): to those they are the same families.
- :class:`TextExposition` renders a registry. It keeps, from one scrape to the
  next, the HELP and TYPE lines of each family, the text before the value of
  each label set, and the text of the values it formatted; the collectors still
  run on every scrape, so every number is current. The caches are dropped
  whole once they hold more entries than four times the pieces of the last
  answer (two a sample line) or 10,000, so label values that keep changing
  (top-N products, say) cannot grow them without bound.

The output is ``generate_latest(registry)``'s, checked byte for byte by
tests/unit/test_exposition.py and tests/agents/test_order_agents.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.samples import Exemplar, Sample, Timestamp
from prometheus_client.utils import floatToGoString

# generate_latest writes these samples of a family after the others, as gauge families of their own.
_OPENMETRICS_SUFFIXES = ("_created", "_gsum", "_gcount")

# The text format's type of the OpenMetrics types it lacks, and the suffix some add to the name.
_TEXT_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}
_NAME_SUFFIXES = {"counter": "_total", "info": "_info"}

Row = tuple[tuple[str, ...], float]

_go_string = cast(Callable[[Any], str], floatToGoString)  # prometheus_client's value text (untyped there)

# Values whose text is kept across scrapes: equal ones have the same text (but 0.0 and -0.0, see _value_text).
_KEPT_VALUES = frozenset((float, int))


class _RowSamples(Metric):
    """Keeps rows (label values, value) and turns them into samples, in order, when ``samples`` is read."""

    _labelnames: tuple[str, ...]
    name: str
    SAMPLE_SUFFIX = ""

    def _start_rows(self) -> None:
        self.rows: list[Row] = []
        self._samples: list[Sample] = []

    @property
    def samples(self) -> list[Sample]:
        if self.rows:
            name = self.name + self.SAMPLE_SUFFIX
            self._samples.extend(Sample(name, self._labels(values), value) for values, value in self.rows)
            self.rows.clear()
        return self._samples

    @samples.setter
    def samples(self, samples: list[Sample]) -> None:
        self._samples = samples

    def _labels(self, values: tuple[str, ...]) -> dict[str, str]:
        # zip as prometheus_client's add_metric: fewer values than names give fewer labels
        return dict(zip(self._labelnames, values, strict=False))


class CounterFamily(_RowSamples, CounterMetricFamily):
    """prometheus_client's CounterMetricFamily, with its plain samples kept as rows until read."""

    SAMPLE_SUFFIX = "_total"

    def __init__(self, name: str, documentation: str, value: float | None = None,
                 labels: Sequence[str] | None = None, created: float | None = None, unit: str = "",
                 exemplar: Exemplar | None = None) -> None:
        self._start_rows()
        super().__init__(name, documentation, value, labels, created, unit, exemplar)

    def add_metric(self, labels: Sequence[str], value: float, created: float | None = None,
                   timestamp: Timestamp | float | None = None, exemplar: Exemplar | None = None) -> None:
        if created is None and timestamp is None and exemplar is None:
            self.rows.append((tuple(labels), value))
        else:  # after the rows before it (reading samples turns them into samples first)
            super().add_metric(labels, value, created, timestamp, exemplar)


class GaugeFamily(_RowSamples, GaugeMetricFamily):
    """prometheus_client's GaugeMetricFamily, with its samples kept as rows until read."""

    def __init__(self, name: str, documentation: str, value: float | None = None,
                 labels: Sequence[str] | None = None, unit: str = "") -> None:
        self._start_rows()
        super().__init__(name, documentation, value, labels, unit)

    def add_metric(self, labels: Sequence[str], value: float, timestamp: Timestamp | float | None = None) -> None:
        if timestamp is None:
            self.rows.append((tuple(labels), value))
        else:
            super().add_metric(labels, value, timestamp)


class Collects(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class _Family:
    """What rendering a family takes besides its samples, kept across scrapes: its HELP and TYPE lines,
    its OpenMetrics sample names, and the text before the value of each label set seen."""

    __slots__ = ("header", "openmetrics", "prefixes")

    def __init__(self, name: str, kind: str, documentation: str) -> None:
        exposed = escape_metric_name(name + _NAME_SUFFIXES.get(kind, ""))
        help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
        self.header = f"# HELP {exposed} {help_text}\n# TYPE {exposed} {_TEXT_TYPES.get(kind, kind)}\n"
        self.openmetrics = {name + suffix: suffix for suffix in _OPENMETRICS_SUFFIXES}
        # label values (row families) or (sample name, label items) -> "name{labels} "
        self.prefixes: dict[Any, str] = {}


class TextExposition:
    """Renders registries in the text format; one instance per page, as its caches serve the next scrape."""

    def __init__(self, min_cached: int = 10_000) -> None:
        self.min_cached = min_cached  # entries the caches may hold whatever the size of the last answer
        self._families: dict[tuple[Any, ...], _Family] = {}
        self._values: dict[Any, str] = {}  # an int or float value -> its text and the newline
        self._pieces = 0  # strings the last answer was joined from (about two a line)

    def render(self, registry: Collects) -> bytes:
        """``prometheus_client.generate_latest(registry)``."""
        self._bound_caches()
        output: list[str] = []
        for metric in registry.collect():
            try:
                if isinstance(metric, _RowSamples) and not metric._samples:
                    self._render_rows(metric, output)
                else:
                    self._render_samples(metric, output)
            except Exception as exception:  # as generate_latest: name the family that failed
                exception.args = (exception.args or ("",)) + (metric,)
                raise
        self._pieces = len(output)
        return "".join(output).encode("utf-8")

    def _family(self, metric: Metric, labelnames: tuple[str, ...] | None) -> _Family:
        key = (metric.name, metric.type, metric.documentation, labelnames)
        family = self._families.get(key)
        if family is None:
            family = self._families[key] = _Family(metric.name, metric.type, metric.documentation)
        return family

    def _render_rows(self, metric: _RowSamples, output: list[str]) -> None:
        """A family of ours whose samples are all rows: label values are the key to their text."""
        family = self._family(metric, metric._labelnames)
        prefixes, values, append = family.prefixes, self._values, output.append
        append(family.header)
        for labels, value in metric.rows:
            prefix = prefixes.get(labels)
            if prefix is None:
                prefix = prefixes[labels] = _sample_prefix(metric.name + metric.SAMPLE_SUFFIX, metric._labels(labels))
            append(prefix)
            text = values.get(value) if value.__class__ in _KEPT_VALUES else None
            append(text if text is not None else _value_text(values, value))

    def _render_samples(self, metric: Metric, output: list[str]) -> None:
        """Any family, from its samples, as generate_latest writes them."""
        family = self._family(metric, None)
        prefixes, values, append = family.prefixes, self._values, output.append
        append(family.header)
        openmetrics: dict[str, list[str]] = {}
        for sample in metric.samples:
            name, labels, value, timestamp = sample[0], sample[1], sample[2], sample[3]
            if name in family.openmetrics:
                openmetrics.setdefault(family.openmetrics[name], []).append(_sample_line(sample))
            elif timestamp is not None:
                append(_sample_line(sample))
            else:
                key = (name, tuple(labels.items()))
                prefix = prefixes.get(key)
                if prefix is None:
                    prefix = prefixes[key] = _sample_prefix(name, labels)
                append(prefix)
                text = values.get(value) if value.__class__ in _KEPT_VALUES else None
                append(text if text is not None else _value_text(values, value))
        for suffix, lines in sorted(openmetrics.items()):
            append(_Family(metric.name + suffix, "gauge", metric.documentation).header)
            output.extend(lines)

    @property
    def cached_entries(self) -> int:
        """Families, label sets and values the caches hold."""
        return len(self._families) + len(self._values) + sum(len(f.prefixes) for f in self._families.values())

    def _bound_caches(self) -> None:
        if self.cached_entries > max(self.min_cached, 4 * self._pieces):
            self._families.clear()
            self._values.clear()


def _value_text(texts: dict[Any, str], value: Any) -> str:
    """floatToGoString(value) and a newline, kept in ``texts`` for ints and floats.

    floatToGoString is Python's repr of the float but for the infinities, NaN, and positive values of
    a million or more (Go's exponent form): those are left to it.
    """
    number = float(value)
    text = (repr(number) if -math.inf < number < 1e6 else _go_string(number)) + "\n"
    # 0.0 and -0.0 are one key with two texts; NaN is no key (it equals nothing).
    if value.__class__ in _KEPT_VALUES and value and value == value:
        texts[value] = text
    return text


def _sample_prefix(name: str, labels: dict[str, str]) -> str:
    """A sample's line up to its value: the name, the labels sorted by name, and a space."""
    if not labels:
        return escape_metric_name(name) + " "
    pairs = ",".join(f'{escape_label_name(k)}="{_escape_label_value(v)}"' for k, v in sorted(labels.items()))
    return f"{escape_metric_name(name)}{{{pairs}}} "


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample_line(sample: Sample) -> str:
    """A whole line, uncached: a sample with a timestamp (milliseconds), or one of the OpenMetrics samples."""
    timestamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
    return f"{_sample_prefix(sample.name, sample.labels)}{_go_string(sample.value)}{timestamp}\n"
