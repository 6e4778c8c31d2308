"""The repository's Alertmanager configuration in a real Alertmanager: routing to receivers and inhibitions.

Alerts are posted to Alertmanager's API the way Prometheus sends them; the
receivers are pointed at a webhook on loopback that this test owns.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.alertmanager import ALERTMANAGER, Alertmanager, Webhook, alertmanager, repository_config, webhook

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(ALERTMANAGER is None, reason="needs Debian's prometheus-alertmanager")]

JOB = "crosssell-worker"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Alertmanager, Webhook]]:
    with webhook() as hook, alertmanager(tmp_path, repository_config(hook)) as manager:
        yield manager, hook


def alert(name: str, severity: str, job: str = JOB, **labels: str) -> dict[str, Any]:
    return {"labels": {"alertname": name, "severity": severity, "job": job, **labels},
            "annotations": {"summary": name}}


def states(manager: Alertmanager, suppressed: int, timeout: float = 10.0) -> dict[tuple[str, str], dict[str, Any]]:
    """(alertname, job) -> status, once every alert is processed and ``suppressed`` of them are suppressed
    (or after ``timeout``, for the assertions to say what is not). Alertmanager's inhibitor learns of a
    source alert from a subscription of its own, so an alert posted with its source may read as active
    (processed) for a moment before it reads as suppressed."""
    deadline = time.monotonic() + timeout
    while True:
        found = {(a["labels"]["alertname"], a["labels"]["job"]): a["status"] for a in manager.alerts()}
        settled = all(status["state"] != "unprocessed" for status in found.values()) and \
            sum(status["state"] == "suppressed" for status in found.values()) >= suppressed
        if settled or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_a_stalled_stream_inhibits_the_rate_alert_of_its_job_only(running: tuple[Alertmanager, Webhook]) -> None:
    manager, _ = running
    manager.post_alerts([alert("CrossSellStreamStalled", "critical"),
                         alert("CrossSellRateDropped", "critical"),
                         alert("CrossSellRateDropped", "critical", job="other-shop")])
    found = states(manager, suppressed=1)
    assert found[("CrossSellRateDropped", JOB)]["state"] == "suppressed"
    assert found[("CrossSellRateDropped", JOB)]["inhibitedBy"]
    assert found[("CrossSellRateDropped", "other-shop")]["state"] == "active"
    assert found[("CrossSellStreamStalled", JOB)]["state"] == "active"


def test_event_time_behind_inhibits_the_rate_alert(running: tuple[Alertmanager, Webhook]) -> None:
    manager, _ = running
    manager.post_alerts([alert("CrossSellEventTimeBehind", "warning"), alert("CrossSellRateDropped", "critical")])
    assert states(manager, suppressed=1)[("CrossSellRateDropped", JOB)]["state"] == "suppressed"


def test_no_worker_up_inhibits_the_alerts_about_single_workers(running: tuple[Alertmanager, Webhook]) -> None:
    manager, _ = running
    manager.post_alerts([alert("CrossSellNoWorkerUp", "critical"), alert("CrossSellWorkerMissing", "warning"),
                         alert("CrossSellPartitionsUnowned", "critical"),
                         alert("CrossSellWorkerDown", "warning", instance="w1")])
    found = states(manager, suppressed=3)
    assert {name for (name, _), status in found.items() if status["state"] == "suppressed"} == {
        "CrossSellWorkerMissing", "CrossSellPartitionsUnowned", "CrossSellWorkerDown"}


def test_a_rate_drop_alone_pages_and_a_warning_goes_to_chat(running: tuple[Alertmanager, Webhook]) -> None:
    manager, hook = running
    manager.post_alerts([alert("CrossSellRateDropped", "critical"), alert("CrossSellLateEventShareHigh", "warning")])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len({n.receiver for n in hook.notifications}) < 2:
        time.sleep(0.2)
    received = {(n.receiver, name) for n in hook.notifications for name in n.alert_names()}
    assert received == {("pager", "CrossSellRateDropped"), ("chat", "CrossSellLateEventShareHigh")}
