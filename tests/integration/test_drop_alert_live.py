"""A total collapse of the cross-sell rate reaches Alertmanager in real time, through the repository's own files.

Two hours of normal orders at 5 orders/s are laid out in event time before now
(``generate --simulate``), so the worker has a baseline of its own; then orders
go on in real time at 5 orders/s with no cross-sell at all. A real Prometheus
evaluates prometheus/rules/crosssell.rules.yml (scrape and evaluation every
second) and sends to a real Alertmanager with alertmanager/alertmanager.yml,
whose receivers post to a webhook on loopback that this test owns.

The bound: the statistical limit (z = 4 against the baseline after n orders),
twice, plus the alert's ``for`` and the production evaluation interval (15 s),
counted from the start of the real-time traffic.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

from streams.ops.broker import LOOPBACK
from streams.ops.supervisor import spawn, stop
from tests.harness import REPO, cluster, wait_until
from tests.harness.alertmanager import ALERTMANAGER, alertmanager, repository_config, webhook
from tests.harness.prometheus import PROMETHEUS, start_prometheus
from tests.integration.test_replay_and_read import command

RULES = REPO / "prometheus" / "rules" / "crosssell.rules.yml"
JOB = "crosssell-worker"  # the rules select raw metrics by the scrape job
RATE = 5.0
PRODUCTION_EVALUATION = 15.0
NO_NOISE = ("--late-share", "0", "--invalid-share", "0", "--duplicate-share", "0")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(PROMETHEUS is None or ALERTMANAGER is None,
                       reason="needs Debian's prometheus and prometheus-alertmanager"),
]


def rate_drop_for() -> float:
    """The ``for`` of CrossSellRateDropped in the rules file, in seconds."""
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "CrossSellRateDropped":
                text = str(rule["for"])
                return float(text[:-1]) * {"s": 1, "m": 60}[text[-1]]
    raise AssertionError("no CrossSellRateDropped in the rules")


def collapse_limit(baseline: float, rate: float) -> float:
    """Seconds of orders at ``rate`` after which a collapse from ``baseline`` to 0 reaches z = 4."""
    orders = 16 * (1 - baseline) / baseline  # (p0 - 0) / sqrt(p0 (1 - p0) / n) = 4
    return math.ceil(orders) / rate


def test_a_total_collapse_at_5_orders_per_second_reaches_alertmanager_within_the_limit(tmp_path: Path) -> None:
    with cluster(tmp_path, {"CROSSSELL_PARTITIONS": "1"}) as running, webhook() as hook:
        history = command(running, "generate", "--simulate", "2h", "--rate", str(RATE), "--seed", "8", *NO_NOISE)
        assert history.returncode == 0, history.stderr
        worker = running.worker().start().wait_serving()
        wait_until(lambda: (worker.sample("crosssell_drop_baseline_ratio", segment="total", value="all") or 0) > 0,
                   120, "the worker's baseline from the simulated history")
        with alertmanager(tmp_path, repository_config(hook)) as manager:
            prometheus = start_prometheus(tmp_path, {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{LOOPBACK}:{manager.port}"]}]}]},
                "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"{LOOPBACK}:{worker.port}"]}]}],
            })
            generator = None
            try:
                wait_until(lambda: prometheus.query(f'up{{job="{JOB}"}} == 1'), 60, "Prometheus scraping the worker")
                baseline = worker.sample("crosssell_drop_baseline_ratio", segment="total", value="all")
                assert baseline is not None and 0.05 < baseline < 0.95, baseline
                assert hook.first("CrossSellRateDropped") is None, "paged before the collapse"
                env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSSELL_")}
                env.update(running.base_env)
                started = time.monotonic()
                with open(tmp_path / "generate.log", "wb") as log:
                    generator = spawn([sys.executable, "-m", "streams", "generate", "--rate", str(RATE),
                                       "--duration", "300", "--seed", "9", "--scenario", "drop=total:all:100%@0s+1h",
                                       *NO_NOISE], env, log=log, cwd=REPO)
                bound = 2 * collapse_limit(baseline, RATE) + rate_drop_for() + PRODUCTION_EVALUATION
                wait_until(lambda: hook.first("CrossSellRateDropped") is not None, bound + 60,
                           f"CrossSellRateDropped at Alertmanager's receiver (bound {bound:.0f} s)")
                notification = hook.first("CrossSellRateDropped")
                assert notification is not None
                took = notification.received - started
            finally:
                if generator is not None:
                    stop(generator, 10)
                stop(prometheus.process, 10)
    assert notification.receiver == "pager"
    alert = next(a for a in notification.body["alerts"] if a["labels"]["alertname"] == "CrossSellRateDropped")
    assert alert["labels"]["segment"] == "total" and alert["labels"]["value"] == "all"
    print(f"CrossSellRateDropped reached the receiver {took:.1f} s after the collapse began (bound {bound:.1f} s)")
    assert took <= bound, f"paged after {took:.1f} s, bound {bound:.1f} s (baseline {baseline:.3f})"
    # The text names the rate since the drop began (the change point of the CUSUM that holds the alarm:
    # a collapse reads near 0 %, not the run of a CUSUM for smaller drops that began on normal orders)
    # against the baseline.
    description = alert["annotations"]["description"]
    found = re.search(r"total all is ([\d.]+)% over the (\d+) orders since .* a baseline of ([\d.]+)%", description)
    assert found, description
    rate, orders, shown_baseline = float(found[1]), int(found[2]), float(found[3])
    assert rate <= shown_baseline / 4 and orders > 0, description
    assert shown_baseline == pytest.approx(baseline * 100, abs=1), description  # it trails the clock
