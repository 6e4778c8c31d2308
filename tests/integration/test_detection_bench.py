"""The detection benchmark's short form: collapses of the cross-sell rate through a real worker.

Half an hour of orders at 5/s, then the cross-sell rate of the total, later of
one category, falls to zero, laid out in event time and replayed as fast as
possible through one worker on the embedded broker (python -m bench.detection
--quick). Each drop must be detected within twice its limit (z = 4) plus one
evaluation interval, and nothing may alarm during the normal half hour.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench import detection


@pytest.mark.slow
def test_collapses_are_detected_in_event_time_near_their_limit(tmp_path: Path) -> None:
    output = tmp_path / "detection.json"
    assert detection.main(["--quick", "--timeout", "120", "--output", str(output)]) == 0
    rows = orjson.loads(output.read_bytes())
    normal = [row for row in rows if row["scenario"].startswith("normal")]
    drops = [row for row in rows if row["drop"] is not None]
    assert [row["false_alarms"] for row in normal] == [0], normal
    assert {(row["segment"], row["drop"]) for row in drops} == {
        ("total", 1.0), (f"primary_category={detection.CATEGORY}", 1.0)}
    for row in drops:
        assert row["detect_s"] is not None, row
        assert 0 < row["detect_s"] <= 2 * row["limit_s"] + detection.EVALUATION, row
