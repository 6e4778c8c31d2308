"""The monitoring files against the running system: a real worker scraped by a real Prometheus.

``python -m streams run`` starts the embedded broker, one worker and demo
traffic with invalid, late and duplicate events; Debian's Prometheus scrapes
the worker every second under the project's job name and evaluates the
project's rule files every second. Then:

- the rule groups load and evaluate without error,
- every recording rule and every Grafana query (panels, panels in rows,
  template variables) returns data, except the few that need week-old history,
- the worker's /metrics and tests/integration/metric_names.py name the same
  metrics with the same labels, so the contract cannot drift from the product.

The fixture polls until all of that holds (normally 30-45 s after the start)
or a deadline passes; the tests then say precisely what is missing.

Dashboard variables are substituted the way Grafana would (see
``variable_options``): the constant ``$job``; every option of the custom
variables ``$window`` and ``$horizon``; for ``$channel`` and ``$variant``,
their "All" value (``allValue``, ``.*``) and each value their own
``label_values`` query returns from this Prometheus; Grafana's built-ins as
Grafana computes them for the dashboard's default range (see
``BUILTIN_VARIABLES``). Every query is run as an instant query at "now".
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streams.ops.broker import LOOPBACK, free_port
from streams.ops.supervisor import spawn, stop
from tests.harness.prometheus import Prometheus, PromQLError
from tests.harness.prometheus import get as _get
from tests.harness.prometheus import log_tail as _log_tail

from .metric_names import EXPORTED_METRICS, METRIC_LABELS

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
DASHBOARD_FILES = sorted((REPO / "grafana" / "dashboards").glob("*.json"))

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.timeout(240)

# The scrape job of prometheus/prometheus.yml: the rules select raw metrics by it
# and the dashboard's constant $job variable holds it.
WORKER_JOB = "crosssell-worker"

# 60 events/s with shares of invalid, late and duplicate events large enough that
# their counters and the pipeline-health panels are non-zero within seconds.
TRAFFIC_FLAGS = ("--rate", "60", "--duration", "0",
                 "--invalid-share", "0.05", "--late-share", "0.05", "--duplicate-share", "0.02")
SYSTEM_SETTINGS = {
    # Product-pair metrics come from the recommender's views, refreshed on this timer (60 s by default).
    "CROSSSELL_RECOMMENDATION_INTERVAL_SECONDS": "2",
    "CROSSSELL_MIN_SUPPORT": "2",
    # A before/after marker, so that the period sums and their panels exist (the orders all come after it).
    "CROSSSELL_EXPERIMENT_MARKER": "2026-01-01T00:00:00Z",
    # The top primary products (off by default).
    "CROSSSELL_POTENTIAL_CAPACITY": "32",
    # Customer-level cross-sell (off by default), so that its metrics and panels exist.
    "CROSSSELL_CUSTOMERS": "true",
}

STARTUP_TIMEOUT = 90.0  # until the worker serves /metrics
SETTLE_TIMEOUT = 90.0  # until every query has data, counted from the worker's first answer
POLL_INTERVAL = 2.0

# Grafana's built-in variables for this dashboard's default range (now-6h) and the
# provisioned datasource's timeInterval (15s, grafana/provisioning/datasources):
# $__interval is the range over the panel's ~1000 points, rounded (20s);
# $__rate_interval is max($__interval + timeInterval, 4 * timeInterval) = 1m.
BUILTIN_VARIABLES = {
    "__interval": ["20s"],
    "__interval_ms": ["20000"],
    "__rate_interval": ["1m"],
    "__range": ["6h"],
    "__range_s": ["21600"],
    "__range_ms": ["21600000"],
}

# Dashboard targets that cannot have data in a Prometheus younger than a week:
# (dashboard file, panel id, refId) -> why. They are still run and must be valid PromQL.
NEEDS_HISTORY_TARGETS: dict[tuple[str, int, str], str] = {
    ("crosssell.json", 3, "B"): "the 1h cross-sell rate one week ago (offset 1w)",
    ("crosssell.json", 16, "B"): "the rate by channel one week ago (offset 1w)",
    ("crosssell.json", 17, "B"): "the rate by experiment variant one week ago (offset 1w)",
}

# Recording rules that cannot produce a series without older history: none. The
# baseline rule reads `... offset 1w` only as the `or` alternative to the 24h view.
NEEDS_HISTORY_RULES: dict[str, str] = {}

# Contract metrics the worker may legitimately leave out under this traffic: none.
# (The watermark appears with the first event, the lag with the first fetch, the
# product pairs with the first recommender run, all within seconds.)
MAY_BE_ABSENT_METRICS: dict[str, str] = {
    "crosssell_drop_baseline_ratio": "a baseline needs 1000 orders of a segment at least 15 minutes old",
    "crosssell_drop_since_seconds": "present only while a segment shows evidence of a drop",
    "crosssell_drop_alarm_started_seconds": "present only during an alarm",
}


# ---------------------------------------------------------------- processes






@dataclass
class System:
    """One ``python -m streams run`` process group: embedded broker, worker, traffic generator."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/metrics"

    def metrics_text(self) -> str:
        return _get(self.metrics_url).decode()

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"`streams run` exited with {self.process.returncode}:\n{_log_tail(self.log_path)}")
            with contextlib.suppress(OSError):
                self.metrics_text()
                return
            time.sleep(0.5)
        pytest.fail(f"the worker did not serve {self.metrics_url} within {timeout:g}s:\n{_log_tail(self.log_path)}")






@dataclass
class Running:
    system: System
    prometheus: Prometheus


def prometheus_config(worker_port: int) -> dict[str, Any]:
    """The project's job and rule files, scraped and evaluated every second, against one local worker."""
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in RULE_FILES],
        "scrape_configs": [{
            "job_name": WORKER_JOB,
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [f"{LOOPBACK}:{worker_port}"]}],
        }],
    }


def start_system(workdir: Path) -> System:
    port = free_port()
    # Only the settings meant here: Settings rejects unknown CROSSSELL_* names, and a
    # CROSSSELL_BROKER_URL from the caller's shell would skip the embedded broker.
    env = {name: value for name, value in os.environ.items() if not name.startswith("CROSSSELL_")}
    env.update(SYSTEM_SETTINGS, CROSSSELL_WEB_HOST=LOOPBACK, CROSSSELL_WEB_PORT=str(port),
               CROSSSELL_DATA_DIR=str(workdir / "data"), CROSSSELL_LOG_LEVEL="warning", PYTHONUNBUFFERED="1")
    log_path = workdir / "run.log"
    with open(log_path, "wb") as log:
        process = spawn([sys.executable, "-m", "streams", "run", *TRAFFIC_FLAGS], env, log=log, cwd=workdir)
    return System(process, port, log_path)


def start_prometheus(workdir: Path, worker_port: int) -> Prometheus:
    assert PROMETHEUS is not None and PROMTOOL is not None
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps(prometheus_config(worker_port), indent=2))  # JSON is YAML
    check = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True, timeout=60,
                           check=False)
    assert check.returncode == 0, f"promtool rejects the test's config:\n{check.stdout}\n{check.stderr}"
    port = free_port()
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        process = spawn(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address={LOOPBACK}:{port}", "--log.level=warn"], log=log, cwd=workdir)
    return Prometheus(process, port, log_path)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    # Skipped here rather than by a mark, so the checks that need no server still run.
    for tool in ("prometheus", "promtool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not on PATH (Debian package: prometheus; apt-get install prometheus)")
    workdir = tmp_path_factory.mktemp("prometheus-live")
    system = start_system(workdir)
    try:
        # Prometheus starts while the worker is still joining: its first failed scrapes cost nothing.
        prometheus = start_prometheus(workdir, system.port)
        try:
            prometheus.wait_ready(timeout=60)
            system.wait_serving(timeout=STARTUP_TIMEOUT)
            live = Running(system, prometheus)
            settle(live, timeout=SETTLE_TIMEOUT)
            yield live
        finally:
            stop(prometheus.process, timeout=30)
    finally:
        stop(system.process, timeout=60)


def settle(running: Running, timeout: float) -> None:
    """Poll until every check below finds nothing missing, or until ``timeout``; the tests report what is."""
    checks: list[Callable[[Running], object]] = [
        missing_worker_metrics, missing_recorded_series, missing_variable_values, missing_dashboard_data,
        missing_fault_counts,
    ]

    def missing(check: Callable[[Running], object]) -> bool:
        try:
            return bool(check(running))
        except AssertionError:  # e.g. an unknown dashboard variable: the test says so
            return True

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(missing(check) for check in checks):
            return
        time.sleep(POLL_INTERVAL)


# ---------------------------------------------------------------- the worker's /metrics


def promql_name(family_name: str, family_type: str) -> str:
    # prometheus_client's parser names a counter family without the `_total` PromQL sees.
    return family_name + "_total" if family_type == "counter" else family_name


def worker_families(running: Running) -> dict[str, list[dict[str, str]]]:
    """crosssell_ metric (PromQL name) -> the label sets of its samples on the worker's /metrics."""
    families: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(running.system.metrics_text()):
        name = promql_name(family.name, family.type)
        if name.startswith("crosssell_"):
            families[name] = [dict(s.labels) for s in family.samples if not s.name.endswith("_created")]
    return families


def missing_worker_metrics(running: Running) -> list[str]:
    with contextlib.suppress(OSError):
        exported = {name for name, samples in worker_families(running).items() if samples}
        return sorted(EXPORTED_METRICS - exported - MAY_BE_ABSENT_METRICS.keys())
    return ["/metrics did not answer"]


# ---------------------------------------------------------------- rules


def rule_groups() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, group) for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]]


def recording_rules() -> list[str]:
    return [rule["record"] for _, group in rule_groups() for rule in group["rules"] if "record" in rule]


def has_data(prometheus: Prometheus, expr: str) -> tuple[bool, str]:
    try:
        return bool(prometheus.query(expr)), "no data"
    except PromQLError as exc:
        return False, str(exc)
    except OSError as exc:
        return False, f"prometheus did not answer: {exc}"


def missing_recorded_series(running: Running) -> list[str]:
    missing = []
    for record in recording_rules():
        if record not in NEEDS_HISTORY_RULES:
            ok, why = has_data(running.prometheus, record)
            if not ok:
                missing.append(f"{record}: {why}")
    return missing


# ---------------------------------------------------------------- the dashboard

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::\w+)?\}|(?P<plain>\w+))")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.*),\s*)?(?P<label>\w+)\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.DOTALL)
# Characters Grafana escapes in a value it puts into a Prometheus regex matcher.
_REGEX_SPECIAL = re.compile(r"([$^*{}\[\]'+?.()|\\])")


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str

    @property
    def key(self) -> tuple[str, int, str]:
        return self.dashboard, self.panel_id, self.ref_id

    def __str__(self) -> str:
        return f"{self.dashboard} panel {self.panel_id} {self.panel_title!r} target {self.ref_id}"


def load_dashboard(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_targets() -> list[Target]:
    return [
        Target(path.name, panel["id"], panel.get("title", ""), target.get("refId", "?"), target["expr"])
        for path in DASHBOARD_FILES
        for panel in iter_panels(load_dashboard(path)["panels"])
        for target in panel.get("targets", [])
    ]


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return str(query["query"] if isinstance(query, dict) else query)


def interpolate(text: str, values: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: values[m["braced"] or m["plain"]], text)


def variables_in(text: str) -> list[str]:
    return sorted({m["braced"] or m["plain"] for m in _VARIABLE.finditer(text)})


def grafana_regex_escape(value: str) -> str:
    # Inside a PromQL string a regex backslash is written twice.
    return _REGEX_SPECIAL.sub(r"\\\\\1", value)


def variable_values(prometheus: Prometheus, query: str, context: dict[str, str]) -> list[str]:
    """What Grafana's Prometheus datasource lists for a query variable (the label values API, as Grafana uses it)."""
    query = interpolate(query, context)
    now = time.time()
    window = {"start": f"{now - 6 * 3600:.3f}", "end": f"{now:.3f}"}  # the dashboard's default range, now-6h
    match = _LABEL_VALUES.match(query)
    if match:
        params: dict[str, str | list[str]] = dict(window)
        if match["selector"]:
            params["match[]"] = [match["selector"]]
        return sorted(prometheus.api(f"label/{match['label']}/values", **params))
    match = _QUERY_RESULT.match(query)
    if match:
        return [json.dumps(sample) for sample in prometheus.query(match["expr"])]
    raise AssertionError(f"variable query {query!r}: this test knows label_values() and query_result() only")


def variable_options(prometheus: Prometheus, dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """Every value each variable can take: built-ins, constants, custom options, and query results plus "All"."""
    options: dict[str, list[str]] = dict(BUILTIN_VARIABLES)
    for variable in dashboard.get("templating", {}).get("list", []):
        name, kind = variable["name"], variable["type"]
        if kind == "constant":
            options[name] = [variable_query(variable)]
        elif kind == "custom":
            options[name] = [str(o["value"]) for o in variable.get("options", [])] or [
                v.strip() for v in variable_query(variable).split(",")]
        elif kind == "query":
            context = {n: values[0] for n, values in options.items() if values}
            found = variable_values(prometheus, variable_query(variable), context)
            escaped = [grafana_regex_escape(v) for v in found] if variable.get("multi") or variable.get(
                "includeAll") else found
            all_value = variable.get("allValue") or "(" + "|".join(escaped) + ")"
            options[name] = ([all_value] if variable.get("includeAll") else []) + escaped
        else:
            raise AssertionError(f"dashboard variable ${name} has type {kind!r}: teach this test its values")
    return options


def expanded_queries(prometheus: Prometheus, targets: list[Target]) -> list[tuple[Target, str, str]]:
    """(target, substitution, PromQL) for every combination of the values of the variables a target uses."""
    queries = []
    by_dashboard = {path.name: load_dashboard(path) for path in DASHBOARD_FILES}
    options_of = {name: variable_options(prometheus, dashboard) for name, dashboard in by_dashboard.items()}
    for target in targets:
        options = options_of[target.dashboard]
        used = variables_in(target.expr)
        unknown = [name for name in used if name not in options]
        assert not unknown, f"{target}: unknown dashboard variables {unknown} in {target.expr!r}"
        for combination in itertools.product(*(options[name] for name in used)):
            values = dict(zip(used, combination, strict=True))
            shown = ", ".join(f"${k}={v}" for k, v in values.items() if not k.startswith("__"))
            queries.append((target, shown, interpolate(target.expr, values)))
    return queries


def missing_variable_values(running: Running) -> list[str]:
    missing = []
    for path in DASHBOARD_FILES:
        dashboard = load_dashboard(path)
        try:
            options = variable_options(running.prometheus, dashboard)
        except (PromQLError, OSError) as exc:
            return [f"{path.name}: {exc}"]
        for variable in dashboard.get("templating", {}).get("list", []):
            name = variable["name"]
            real = [v for v in options[name] if v != variable.get("allValue")]
            if variable["type"] == "query" and not real:
                missing.append(f"{path.name} ${name}: {variable_query(variable)!r} lists no value")
    return missing


def missing_dashboard_data(running: Running) -> list[str]:
    prometheus = running.prometheus
    try:
        queries = expanded_queries(prometheus, [t for t in dashboard_targets() if t.key not in NEEDS_HISTORY_TARGETS])
    except (PromQLError, OSError) as exc:
        return [f"variable values: {exc}"]
    missing = []
    for target, shown, expr in queries:
        ok, why = has_data(prometheus, expr)
        if not ok:
            missing.append(f"{target} [{shown}]: {why}\n    {expr}")
    return missing


# ---------------------------------------------------------------- traffic faults

FAULT_COUNTERS = ("crosssell_events_invalid_total", "crosssell_events_late_total", "crosssell_events_duplicate_total")


def missing_fault_counts(running: Running) -> list[str]:
    missing = []
    for counter in FAULT_COUNTERS:
        ok, why = has_data(running.prometheus, f'sum(increase({counter}{{job="{WORKER_JOB}"}}[1m])) > 0')
        if not ok:
            missing.append(f"{counter}: {why}")
    return missing


# ---------------------------------------------------------------- tests: rules


def test_prometheus_loads_every_rule_group_healthy(running: Running) -> None:
    loaded = {(g["file"], g["name"]): g for g in running.prometheus.api("rules")["groups"]}
    expected = {(str(path), group["name"]): group for path, group in rule_groups()}
    assert sorted(loaded) == sorted(expected)
    unhealthy = [
        f"{name} / {rule['name']}: health {rule.get('health')!r}, lastError {rule.get('lastError')!r}"
        for (_, name), group in loaded.items()
        for rule in group["rules"]
        if rule.get("health") != "ok" or rule.get("lastError")
    ]
    assert unhealthy == []
    counts = {key: len(group["rules"]) for key, group in loaded.items()}
    assert counts == {key: len(group["rules"]) for key, group in expected.items()}


def test_every_recording_rule_produces_a_series(running: Running) -> None:
    assert set(NEEDS_HISTORY_RULES) <= set(recording_rules()), "an exclusion names no recording rule"
    missing = missing_recorded_series(running)
    assert missing == [], "recording rules without a series:\n" + "\n".join(missing)


def test_pipeline_alerts_stay_inactive_while_orders_flow(running: Running) -> None:
    alerts = running.prometheus.api("alerts")["alerts"]
    watching_the_pipeline = {"CrossSellNoWorkerUp", "CrossSellWorkerDown", "CrossSellStreamStalled"}
    assert [a for a in alerts if a["labels"]["alertname"] in watching_the_pipeline] == []


# ---------------------------------------------------------------- tests: dashboard


def test_history_exclusions_name_existing_week_old_queries() -> None:
    targets = {target.key: target for target in dashboard_targets()}
    for key, reason in NEEDS_HISTORY_TARGETS.items():
        assert key in targets, f"excluded target {key} ({reason}) is not in the dashboards"
        assert "offset 1w" in targets[key].expr, f"{targets[key]} is excluded as {reason!r} but reads no offset 1w"


def test_every_dashboard_variable_query_lists_values(running: Running) -> None:
    missing = missing_variable_values(running)
    assert missing == [], "\n".join(missing)


def test_every_dashboard_query_returns_data(running: Running) -> None:
    missing = missing_dashboard_data(running)
    assert missing == [], "dashboard queries without data:\n" + "\n".join(missing)


def test_week_old_dashboard_queries_are_valid_promql(running: Running) -> None:
    # They have no data yet (see NEEDS_HISTORY_TARGETS), but must not be errors.
    excluded = [t for t in dashboard_targets() if t.key in NEEDS_HISTORY_TARGETS]
    errors = []
    for target, shown, expr in expanded_queries(running.prometheus, excluded):
        try:
            running.prometheus.query(expr)
        except PromQLError as exc:
            errors.append(f"{target} [{shown}]: {exc}")
    assert errors == []


# ---------------------------------------------------------------- tests: the metric contract


def test_worker_exports_every_contract_metric(running: Running) -> None:
    assert set(MAY_BE_ABSENT_METRICS) <= EXPORTED_METRICS, "an exclusion names no contract metric"
    assert missing_worker_metrics(running) == []


def test_worker_exports_no_crosssell_metric_outside_the_contract(running: Running) -> None:
    assert set(worker_families(running)) - EXPORTED_METRICS == set()


def test_worker_series_carry_exactly_the_contract_labels(running: Running) -> None:
    wrong = {
        name: sorted({tuple(sorted(labels)) for labels in samples} - {tuple(sorted(METRIC_LABELS[name]))})
        for name, samples in worker_families(running).items()
        if name in METRIC_LABELS and any(set(labels) != METRIC_LABELS[name] for labels in samples)
    }
    assert wrong == {}


def test_prometheus_stores_every_contract_metric_under_the_worker_job(running: Running) -> None:
    stored = running.prometheus.api("label/__name__/values", **{"match[]": [f'{{job="{WORKER_JOB}"}}']})
    assert EXPORTED_METRICS - MAY_BE_ABSENT_METRICS.keys() - set(stored) == set()


def test_prometheus_counts_the_injected_invalid_late_and_duplicate_events(running: Running) -> None:
    assert missing_fault_counts(running) == []
