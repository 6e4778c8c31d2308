"""bench.takeover: what a run's scrapes say about a restart or a death, and the metric they read.

The figures are computed from scrapes of ``crosssell_applied_offset{partition}``:
a process counts a partition when its offset is above what the same process
reported at its previous scrape. Each case here is a small timeline.
"""

from __future__ import annotations

import pytest

from bench.takeover import Change, Scrape, applied_offsets, counting, first_count, pauses, settled, summarize


def test_the_applied_offsets_are_read_from_the_metrics_text() -> None:
    text = (b'crosssell_applied_offset{partition="3"} 7.0\nother{partition="1"} 2.0\n'
            b'crosssell_applied_offset{partition="0"} -1.0\n')
    assert applied_offsets(text) == {3: 7, 0: -1}


def scrapes(process: str, *points: tuple[float, dict[int, int]]) -> list[Scrape]:
    return [Scrape(t, process, offsets) for t, offsets in points]


def test_a_process_counts_a_partition_when_its_offset_rises_above_its_own_previous_scrape() -> None:
    timeline = scrapes("a1", (0.0, {0: 5}), (0.2, {0: 5}), (0.4, {0: 9, 1: 40}), (0.6, {0: 9, 1: 41}))
    # 1 arrived at 0.4 with restored state: counting only once it moves.
    assert counting(timeline, "a1") == [(0.4, frozenset({0})), (0.6, frozenset({1}))]


def test_the_first_count_after_a_change_is_looked_for_on_any_of_the_given_processes() -> None:
    timeline = [*scrapes("a1", (-0.2, {0: 1}), (0.0, {0: 2}), (5.0, {0: 2, 1: 10}), (5.2, {0: 3, 1: 11})),
                *scrapes("b2", (3.0, {2: 10}), (3.2, {2: 12}))]
    assert first_count(timeline, ["a1", "b2"]) == 3.2
    assert first_count(timeline, ["a1", "b2"], partition=1) == 5.2
    assert first_count(timeline, ["b2"], partition=1) is None


@pytest.mark.parametrize(
    ("counts", "end", "expected"),
    [
        ([-0.2, 0.2, 0.4, 4.4, 4.6], 5.0, [0.4, 0.2, 4.0, 0.2, 0.4]),  # one 4 s pause
        ([-0.4, 3.6, 3.8, 7.8], 8.0, [4.0, 0.2, 4.0, 0.2]),  # two pauses (a restart: leave, then join)
        ([-0.2, 0.2], 6.0, [0.4, 5.8]),  # a pause still open at the end counts up to the end
    ],
)
def test_pauses_are_the_stretches_between_counts_from_the_last_one_before_the_change(
        counts: list[float], end: float, expected: list[float]) -> None:
    timeline = scrapes("a1", *[(t, {0: i + 1}) for i, t in enumerate([-1.0, *counts])])
    assert pauses(timeline, "a1", end) == pytest.approx(expected)


def test_a_kill_s_figures_time_the_dead_worker_s_partitions_and_the_survivor_s_pause() -> None:
    # The survivor counts until 6 s (the session timeout), owns all at 9 s with restored state, counts from 9.2 s.
    survivor = scrapes("a1", *[(t / 5, {0: t + 10}) for t in range(-2, 31)], (6.2, {}), (9.0, {0: 40, 1: 2, 2: 2}),
                       (9.2, {0: 41, 1: 3, 2: 2}), (9.4, {0: 42, 1: 4, 2: 3}), (11.0, {0: 43, 1: 5, 2: 4}))
    dead = scrapes("b1", (-0.4, {1: 1, 2: 1}), (-0.2, {1: 2, 2: 2}))
    change = Change("kill", "b", "b1", None, ["a1"], [1, 2], end=11.0, settled=True)
    figures = change.figures([*survivor, *dead], pause_gap=1.0)
    assert figures["partitions_count_s"] == 9.4  # partition 2 moved only at 9.4
    assert figures["partitions"] == {"1": 9.2, "2": 9.4}
    assert figures["other_longest_pause_s"] == pytest.approx(3.2)  # 6.0 -> 9.2
    assert figures["restarted_counts_s"] is None


def test_a_restart_s_figures_time_the_new_process_and_sum_the_other_worker_s_pauses() -> None:
    timeline = [*scrapes("a1", (-0.2, {0: 1}), (1.0, {0: 2}), (3.0, {0: 3}), (7.0, {0: 4}), (7.2, {0: 5})),
                *scrapes("b1", (-0.2, {1: 1})), *scrapes("b2", (5.0, {1: 1}), (5.6, {1: 2}))]
    change = Change("restart", "b", "b1", "b2", ["a1"], [1], end=7.2, settled=True)
    figures = change.figures(timeline, pause_gap=1.0)
    assert (figures["restarted_counts_s"], figures["partitions_count_s"]) == (5.6, 5.6)
    assert figures["other_longest_pause_s"] == pytest.approx(4.0)
    assert figures["other_paused_total_s"] == pytest.approx(2.0 + 4.0)  # stretches over 1 s: 1.0->3.0, 3.0->7.0


def test_a_fleet_has_settled_when_every_process_and_partition_counted_at_every_recent_scrape() -> None:
    steady = [*scrapes("a1", *[(t / 5, {0: t, 1: t}) for t in range(31)]),
              *scrapes("b1", *[(t / 5, {2: t, 3: t}) for t in range(31)])]
    assert settled(steady, ["a1", "b1"], partitions=4, now=6.0, settle=5.0, every=0.2)
    stalled = [s for s in steady if not (s.process == "b1" and 3.0 < s.t < 4.5)]
    assert not settled(stalled, ["a1", "b1"], partitions=4, now=6.0, settle=5.0, every=0.2)
    assert not settled(steady, ["a1", "b1"], partitions=5, now=6.0, settle=5.0, every=0.2)


def test_the_summary_gives_the_median_and_the_worst_round_and_none_for_a_round_that_never_got_there() -> None:
    def change(kind: str, seconds: float | None) -> dict[str, object]:
        return {"kind": kind, "figures": {"partitions_count_s": seconds, "other_longest_pause_s": 1.0,
                                          "other_paused_total_s": 1.0, "restarted_counts_s": seconds}}

    summary = summarize([change("kill", 4.0), change("kill", 6.0), change("kill", 5.0), change("rejoin", None)])
    assert summary["kill"]["partitions_count_s"] == {"median": 5.0, "worst": 6.0}
    assert summary["rejoin"]["restarted_counts_s"] == {"median": None, "worst": None}
    assert "restart" not in summary
