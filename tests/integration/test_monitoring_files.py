"""Checks of the monitoring files: Prometheus config and rules, Alertmanager
routing, Grafana provisioning and dashboards, and the compose stack.

The checks that need a tool run the real tool (promtool, amtool,
docker-compose) and skip, saying which package provides it, when it is not on
PATH. Nothing here starts a container or a server.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .metric_names import CLIENT_METRIC_PREFIXES, EXPORTED_METRICS, PROMETHEUS_METRICS

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_CONFIG = REPO / "prometheus" / "prometheus.yml"
RULE_FILES = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = REPO / "prometheus" / "tests" / "crosssell.test.yml"
ALERTMANAGER_CONFIG = REPO / "alertmanager" / "alertmanager.yml"
DATASOURCE_FILE = REPO / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_FILES = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
COMPOSE_FILE = REPO / "docker-compose.yml"

DATASOURCE_UID = "prometheus"
WORKER_JOB = "crosssell-worker"

PROMTOOL = shutil.which("promtool")
AMTOOL = shutil.which("amtool")
DOCKER_COMPOSE = shutil.which("docker-compose")

needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not on PATH (Debian package: prometheus)")
needs_amtool = pytest.mark.skipif(
    AMTOOL is None, reason="amtool is not on PATH (Debian package: prometheus-alertmanager)"
)
needs_docker_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None, reason="docker-compose is not on PATH (Debian package: docker-compose)"
)


def run_tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run a tool from the repository root; fail the test with its output if it fails."""
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def load_yaml(path: Path) -> Any:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed (pip install pyyaml)")
    return yaml.safe_load(path.read_text())


# --- PromQL metric names ---------------------------------------------------

# Word lists are easier to keep in step with the PromQL docs than list literals.
PROMQL_FUNCTIONS = frozenset(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time
    ceil changes clamp clamp_max clamp_min cos cosh count_over_time day_of_month
    day_of_week day_of_year days_in_month deg delta deriv
    double_exponential_smoothing exp floor histogram_avg histogram_count
    histogram_fraction histogram_quantile histogram_stddev histogram_stdvar
    histogram_sum holt_winters hour idelta increase irate label_join
    label_replace last_over_time ln log10 log2 mad_over_time max_over_time
    min_over_time minute month pi predict_linear present_over_time
    quantile_over_time rad rate resets round scalar sgn sin sinh sort
    sort_by_label sort_by_label_desc sort_desc sqrt stddev_over_time
    stdvar_over_time sum_over_time tan tanh time timestamp vector year
    """.split()  # noqa: SIM905
)
PROMQL_KEYWORDS = frozenset(
    """
    sum min max avg group stddev stdvar count count_values bottomk topk quantile
    limitk limit_ratio by without on ignoring group_left group_right offset bool
    and or unless atan2 start end inf nan
    """.split()  # noqa: SIM905
)

_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABEL_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE_OR_SUBQUERY = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# An identifier (not part of a number, a $variable or a longer name) followed by
# `{`, `[`, `)`, `,`, whitespace or the end: a metric name unless it is a keyword.
_IDENTIFIER = re.compile(r"(?<![\w:$.])([A-Za-z_:][\w:]*)(?=[{\[),\s]|$)")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.*),\s*\w+\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\((?P<expr>.*)\)\s*$", re.DOTALL)


def metric_names_in(promql: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = _STRING_LITERAL.sub('""', promql)
    text = _LABEL_MATCHERS.sub("{}", text)
    text = _RANGE_OR_SUBQUERY.sub("[]", text)
    text = _LABEL_LIST.sub(" ", text)
    return {
        name
        for name in _IDENTIFIER.findall(text)
        if name.lower() not in PROMQL_KEYWORDS and name not in PROMQL_FUNCTIONS
    }


def metric_names_in_variable_query(query: str) -> set[str]:
    """The metric names a Grafana Prometheus variable query selects."""
    for form in (_LABEL_VALUES, _QUERY_RESULT):
        match = form.match(query)
        if match:
            return metric_names_in(match["expr"])
    return set()  # label_values(label), label_names(), metrics(regex): no selector


@pytest.mark.parametrize(
    ("promql", "names"),
    [
        ('sum by (job, window) (crosssell_window_orders{job="a"})', {"crosssell_window_orders"}),
        ("rate(crosssell_orders_total[5m])", {"crosssell_orders_total"}),
        ("a / on (job) group_left (instance) b", {"a", "b"}),
        ('job:x:ratio{window="1h"} offset 1w', {"job:x:ratio"}),
        ('time() - w{job="$job"}', {"w"}),
        ('topk(20, sum by (p, c) (x{h="$horizon"}))', {"x"}),
        ('up == 0 or absent(up{job="a"})', {"up"}),
        ("vector(-3)", set()),
        ("histogram_quantile(0.9, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
        ("clamp_min(m, 0) > bool 1e3", {"m"}),
        ('label_replace(m, "dst", "$1", "src", "(by)")', {"m"}),
        ("sum without (window) (\n  a\n  or\n  b offset 1w\n)", {"a", "b"}),
    ],
)
def test_metric_name_parser_finds_selected_metrics_only(promql: str, names: set[str]) -> None:
    assert metric_names_in(promql) == names


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ('label_values(m{job="$job"}, channel)', {"m"}),
        ("label_values(channel)", set()),
        ("query_result(topk(5, m))", {"m"}),
    ],
)
def test_variable_query_parser_finds_the_selector_metric(query: str, names: set[str]) -> None:
    assert metric_names_in_variable_query(query) == names


# --- Prometheus --------------------------------------------------------------

_RECORD = re.compile(r"^\s*-?\s*record:\s*(\S+)\s*$", re.MULTILINE)
_ALERT = re.compile(r"^\s*-?\s*alert:\s*(\S+)\s*$", re.MULTILINE)
_TESTED_ALERT = re.compile(r"^\s*-?\s*alertname:\s*(\S+)\s*$", re.MULTILINE)


def recording_rule_names() -> set[str]:
    return {name for path in RULE_FILES for name in _RECORD.findall(path.read_text())}


def alert_names() -> set[str]:
    return {name for path in RULE_FILES for name in _ALERT.findall(path.read_text())}


def is_known_metric(name: str) -> bool:
    return (
        name in EXPORTED_METRICS
        or name in PROMETHEUS_METRICS
        or name.startswith(CLIENT_METRIC_PREFIXES)
        or name in recording_rule_names()
    )


@needs_promtool
def test_prometheus_config_is_valid() -> None:
    # Full check, not --syntax-only: it also loads the rule files. It does not
    # resolve the compose host names, so it works outside the stack.
    assert PROMTOOL is not None
    run_tool(PROMTOOL, "check", "config", PROMETHEUS_CONFIG)


@needs_promtool
def test_rule_files_are_valid() -> None:
    assert PROMTOOL is not None
    assert RULE_FILES, "no rule files in prometheus/rules"
    run_tool(PROMTOOL, "check", "rules", *RULE_FILES)


@needs_promtool
def test_rule_unit_tests_pass() -> None:
    assert PROMTOOL is not None
    run_tool(PROMTOOL, "test", "rules", RULE_TESTS)


def test_every_alert_is_exercised_by_a_rule_unit_test() -> None:
    tested = set(_TESTED_ALERT.findall(RULE_TESTS.read_text()))
    assert alert_names() - tested == set()


def test_recording_rules_are_named_level_metric_operation() -> None:
    misnamed = {name for name in recording_rule_names() if not re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", name)}
    assert misnamed == set()


def test_every_alert_has_expr_for_severity_summary_and_description() -> None:
    incomplete = {}
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                if "alert" not in rule:
                    continue
                missing = [key for key in ("expr", "for") if not rule.get(key)]
                if rule.get("labels", {}).get("severity") not in {"critical", "warning"}:
                    missing.append("severity label (critical or warning)")
                annotations = rule.get("annotations", {})
                missing += [key for key in ("summary", "description") if not annotations.get(key)]
                if missing:
                    incomplete[rule["alert"]] = missing
    assert incomplete == {}


def test_every_metric_in_the_rules_is_exported_or_recorded() -> None:
    unknown = {}
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                names = {n for n in metric_names_in(rule["expr"]) if not is_known_metric(n)}
                if names:
                    unknown[rule.get("record") or rule["alert"]] = names
    assert unknown == {}


def test_rules_select_raw_worker_metrics_by_the_scrape_job() -> None:
    # A raw metric without {job="crosssell-worker"} would also match other jobs.
    raw_selector = re.compile(r"(?<![\w:])(crosssell_\w+|up)(?![\w:])\s*(\{[^}]*\})?")
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                for name, matchers in raw_selector.findall(rule["expr"]):
                    assert f'job="{WORKER_JOB}"' in matchers, (
                        f'{rule.get("record") or rule["alert"]}: {name} is not selected by job="{WORKER_JOB}"'
                    )


def test_prometheus_discovers_workers_by_dns_on_port_6066() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == WORKER_JOB]
    assert job["dns_sd_configs"] == [{"names": ["worker"], "type": "A", "port": 6066, "refresh_interval": "15s"}]


# --- Alertmanager ------------------------------------------------------------


RUNBOOK = REPO / "docs" / "runbook.md"


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's second-level headings (an alert name, lower-cased)."""
    return {line[3:].strip().lower() for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}


def alert_rules() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for path in RULE_FILES for group in load_yaml(path)["groups"]
            for rule in group["rules"] if "alert" in rule}


def test_every_alert_links_its_runbook_section_and_the_dashboard() -> None:
    uids = {load_dashboard(path)["uid"] for path in DASHBOARD_FILES}
    anchors = runbook_anchors()
    broken = {}
    for name, rule in alert_rules().items():
        annotations = rule.get("annotations", {})
        runbook = annotations.get("runbook_url", "")
        dashboard = annotations.get("dashboard_url", "")
        if runbook != f"docs/runbook.md#{name.lower()}" or name.lower() not in anchors:
            broken[name] = f"runbook_url {runbook!r}"
        elif dashboard.rsplit("/d/", 1)[-1] not in uids:
            broken[name] = f"dashboard_url {dashboard!r}"
    assert broken == {}


def test_the_runbook_has_a_section_for_every_alert_and_no_other() -> None:
    assert runbook_anchors() == {name.lower() for name in alert_rules()}


@needs_amtool
def test_alertmanager_config_is_valid() -> None:
    assert AMTOOL is not None
    run_tool(AMTOOL, "check-config", ALERTMANAGER_CONFIG)


@needs_amtool
@pytest.mark.parametrize(("severity", "receiver"), [("critical", "pager"), ("warning", "chat")])
def test_alertmanager_routes_each_severity_to_its_receiver(severity: str, receiver: str) -> None:
    assert AMTOOL is not None
    result = run_tool(
        AMTOOL,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        "alertname=CrossSellRateDropped",
        f"severity={severity}",
    )
    assert result.stdout.split() == [receiver]


# --- Grafana -----------------------------------------------------------------


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in iter_panels(dashboard["panels"]) if panel.get("targets")]


def panel_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in query_panels(dashboard) for target in panel["targets"]]


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return str(query["query"] if isinstance(query, dict) else query)


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard["templating"]["list"]}


def load_dashboard(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


dashboard_files = pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda path: path.name)


def test_grafana_has_at_least_one_dashboard() -> None:
    assert DASHBOARD_FILES


def test_provisioned_datasource_has_the_uid_dashboards_use() -> None:
    text = DATASOURCE_FILE.read_text()
    assert re.search(rf"^\s*uid:\s*{DATASOURCE_UID}\s*$", text, re.MULTILINE)
    assert re.search(r"^\s*url:\s*http://prometheus:9090\s*$", text, re.MULTILINE)


@dashboard_files
def test_dashboard_is_json_with_uid_title_and_unique_panel_ids(path: Path) -> None:
    dashboard = load_dashboard(path)
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in iter_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_dashboard_uids_are_unique() -> None:
    uids = [load_dashboard(path)["uid"] for path in DASHBOARD_FILES]
    assert len(uids) == len(set(uids))


@dashboard_files
def test_every_panel_queries_the_provisioned_datasource(path: Path) -> None:
    dashboard = load_dashboard(path)
    wrong = [
        panel["title"]
        for panel in query_panels(dashboard)
        if panel.get("datasource", {}).get("uid") != DATASOURCE_UID
        or any(
            target.get("datasource", {"uid": DATASOURCE_UID}).get("uid") != DATASOURCE_UID
            for target in panel["targets"]
        )
    ]
    wrong += [
        f"variable {name}"
        for name, variable in variables(dashboard).items()
        if variable["type"] == "query" and variable["datasource"]["uid"] != DATASOURCE_UID
    ]
    assert wrong == []


@dashboard_files
def test_every_panel_target_has_an_expr(path: Path) -> None:
    dashboard = load_dashboard(path)
    empty = [
        panel["title"]
        for panel in query_panels(dashboard)
        for target in panel["targets"]
        if not target.get("expr", "").strip()
    ]
    assert empty == []


def test_channel_and_variant_variables_query_label_values() -> None:
    found = {}
    for path in DASHBOARD_FILES:
        for name, variable in variables(load_dashboard(path)).items():
            if name in {"channel", "variant"} and variable["type"] == "query":
                found[name] = variable_query(variable)
    assert set(found) == {"channel", "variant"}
    for name, query in found.items():
        assert re.fullmatch(rf"label_values\(crosssell_window_orders_by_{name}\{{.*\}}, {name}\)", query)


def test_channel_and_variant_panels_filter_by_their_variables() -> None:
    exprs = [expr for path in DASHBOARD_FILES for expr in panel_exprs(load_dashboard(path))]
    assert any('channel=~"$channel"' in expr for expr in exprs)
    assert any('variant=~"$variant"' in expr for expr in exprs)


@dashboard_files
def test_every_metric_in_the_dashboard_is_exported_or_recorded(path: Path) -> None:
    dashboard = load_dashboard(path)
    used = {name for expr in panel_exprs(dashboard) for name in metric_names_in(expr)}
    used |= {
        name
        for variable in variables(dashboard).values()
        if variable["type"] == "query"
        for name in metric_names_in_variable_query(variable_query(variable))
    }
    assert used, "no metric found: is the parser broken?"
    assert {name for name in used if not is_known_metric(name)} == set()


# Values that stand in for the dashboard variables when promtool parses the
# queries; a variable missing here fails the test below.
VARIABLE_SAMPLES = {
    "job": WORKER_JOB,
    "window": "1h",
    "horizon": "24h",
    "channel": ".*",
    "variant": ".*",
    "control": "control",
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
}


def substitute_variables(expr: str) -> str:
    def sample(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        assert name in VARIABLE_SAMPLES, f"unknown dashboard variable ${name} in {expr!r}"
        return VARIABLE_SAMPLES[name]

    return re.sub(r"\$(?:\{(?P<braced>\w+)\}|(?P<plain>\w+))", sample, expr)


@needs_promtool
@dashboard_files
def test_every_dashboard_query_is_valid_promql(path: Path, tmp_path: Path) -> None:
    # promtool parses every recording-rule expr; JSON is valid YAML.
    assert PROMTOOL is not None
    rules = [
        {
            # The record name tells which panel and target a parse error is in.
            "record": f"dashboard:panel_{panel['id']}_target_{target['refId']}:check",
            "expr": substitute_variables(target["expr"]),
        }
        for panel in query_panels(load_dashboard(path))
        for target in panel["targets"]
    ] + [
        {"record": f"dashboard:annotation_{index}:check", "expr": substitute_variables(annotation["expr"])}
        for index, annotation in enumerate(load_dashboard(path)["annotations"]["list"]) if "expr" in annotation
    ]
    rule_file = tmp_path / "dashboard-queries.yml"
    rule_file.write_text(json.dumps({"groups": [{"name": path.stem, "rules": rules}]}))
    run_tool(PROMTOOL, "check", "rules", rule_file)


def test_the_dashboard_marks_firing_alerts_and_lists_them() -> None:
    dashboard = load_dashboard(REPO / "grafana" / "dashboards" / "crosssell.json")
    exprs = [a.get("expr", "") for a in dashboard["annotations"]["list"] if a.get("enable")]
    assert any("ALERTS{" in expr and 'alertstate="firing"' in expr for expr in exprs)
    lists = [p for p in iter_panels(dashboard["panels"]) if p["type"] == "alertlist"]
    assert lists and lists[0]["options"]["alertName"] == "CrossSell"
    assert lists[0]["options"]["datasource"] == re.search(r"name:\s*(\S+)", DATASOURCE_FILE.read_text())[1]


# --- docker-compose ------------------------------------------------------------


@needs_docker_compose
def test_compose_file_is_valid() -> None:
    assert DOCKER_COMPOSE is not None
    run_tool(DOCKER_COMPOSE, "-f", COMPOSE_FILE, "config", "-q")


def test_compose_worker_can_scale_without_name_or_port_conflicts() -> None:
    worker = load_yaml(COMPOSE_FILE)["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert [str(port) for port in worker["expose"]] == ["6066"]
    assert worker["environment"] == {
        "CROSSSELL_BROKER_URL": "kafka://kafka:9092",
        "CROSSSELL_WEB_HOST": "0.0.0.0",
        "CROSSSELL_PARTITIONS": "8",
    }


def test_compose_workers_start_after_topics_are_created() -> None:
    services = load_yaml(COMPOSE_FILE)["services"]
    assert services["topics"]["command"] == ["python", "-m", "streams", "create-topics"]
    for name in ("worker", "generator"):
        assert services[name]["depends_on"] == {"topics": {"condition": "service_completed_successfully"}}


def test_compose_images_are_pinned() -> None:
    services = load_yaml(COMPOSE_FILE)["services"]
    unpinned = {
        name: service["image"]
        for name, service in services.items()
        if "build" not in service and (":" not in service["image"] or service["image"].endswith(":latest"))
    }
    assert unpinned == {}
