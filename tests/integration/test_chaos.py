"""Two workers under SIGKILLs, a hostile corpus and a backlog: every count equals the offline truth.

The short form of ``python -m bench.chaos`` (``bench/chaos.py`` says what one run
does): a kill loop over two workers faster than the group rebalances, once
both at once; ordinary orders mixed with the hostile corpus of
``bench/hostile.py`` (events of 1 and 3 MiB, deep nesting, prices a double
cannot hold, clocks in 2099 and 1970, forged and huge headers, odd keys,
duplicate ids, baskets of 50 products); both workers down while a backlog is
produced. Then every worker's counters, invalid counts by reason, late and
duplicate counts and rolling-window gauges must equal the offline truth
(``bench/truth.py``) of the partitions it owns; every invalid event must have
its dead letter; no outgoing message may reach the producer's 1,000,000-byte
request limit; no worker may exit unless killed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import Scenario, run


@pytest.mark.slow
def test_kills_hostile_events_and_a_backlog_leave_every_count_equal_to_the_offline_truth(tmp_path: Path) -> None:
    report = run(Scenario.short(seed=1), tmp_path)
    if not report.passed:
        pytest.fail(report.text(), pytrace=False)
