"""bench.report: a span too short to time is reported as such, never as 0 events/s."""

from __future__ import annotations

import pytest

from bench.report import MIN_TIMED_SECONDS, UNTIMED, Result, ratios, table


@pytest.mark.parametrize(
    ("events", "seconds", "timed"),
    [
        (5000, 0.0, False),  # everything counted in the first poll
        (0, 3.0, False),
        (40, MIN_TIMED_SECONDS / 2, False),
        (20000, MIN_TIMED_SECONDS, True),
        (200000, 5.0, True),
    ],
)
def test_a_result_is_timed_only_with_events_over_a_long_enough_span(events: int, seconds: float, timed: bool) -> None:
    assert Result("pipeline", events, seconds, 1.0, 100.0).timed is timed


def test_an_untimed_result_says_too_few_events_in_the_table_and_json() -> None:
    result = Result("pipeline", 5000, 0.0, 0.0, 120.0)
    line = table({"pipeline": result}).splitlines()[-1]
    assert UNTIMED in line
    assert " 0 " not in line.split(UNTIMED)[0]  # no rate of 0 before it
    assert UNTIMED in result.rate_text()
    document = result.as_json()
    assert document["timed"] is False
    assert document["events_per_second"] is None
    assert document["cpu_seconds_per_million_events"] is None


def test_a_timed_result_has_its_rate_and_cpu_per_event() -> None:
    result = Result("pipeline", 30000, 2.0, 0.6, 120.0)
    assert result.events_per_second == 15000
    assert result.cpu_seconds_per_million == pytest.approx(20.0)
    assert "15,000" in table({"pipeline": result})
    assert result.as_json()["events_per_second"] == 15000


def test_ratios_leave_out_untimed_contenders() -> None:
    results = {"raw": Result("raw", 5000, 0.01, 0.0, 50.0), "bare": Result("bare", 4000, 1.0, 0.5, 60.0),
               "pipeline": Result("pipeline", 8000, 1.0, 0.2, 100.0)}
    assert ratios(results) == {"4/2": 2.0}


def test_asking_for_the_peer_without_its_package_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    import bench.__main__ as bench_main

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "quixstreams" else real_find_spec(name, *a))
    assert bench_main.main(["--contenders", "quix,pipeline"]) == 2
    assert "quixstreams is not installed" in capsys.readouterr().err
    assert bench_main.main(["--latency-rate", "0"]) == 2
    assert "--latency-rate" in capsys.readouterr().err
