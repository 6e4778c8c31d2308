"""Before/after markers: "launched AI assistant" at an event time, written once, read by every worker.

``python -m streams mark TEXT [--at TIME]`` writes a :class:`Marker` to the
markers topic (streams/ops/markers.py); every worker reads the whole topic
(streams/runtime/follower.py), not a consumer group's share of it, so each one
compares the same before and after. Which marker the comparison uses:

1. ``CROSSSELL_EXPERIMENT_MARKER`` when set: the setting pins the comparison
   (an override, e.g. to look at an older launch again);
2. otherwise the marker with the newest event time (ties: the one written last).

The key of a marker's message is its event time and text, so writing the same
marker twice leaves one on a compacted topic.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

MAX_TEXT = 200
# A marker may be stamped this far ahead of the writer's clock (clocks of two machines differ).
FUTURE_SKEW_SECONDS = 60.0


class MarkerError(ValueError):
    """A marker that cannot be written: the message says what is wrong and what to do."""


@dataclass(frozen=True, slots=True)
class Marker:
    text: str
    at: float  # event time, unix seconds
    written_at: float  # the writer's clock
    source: str = "topic"  # "topic" (written by `mark`) or "setting" (CROSSSELL_EXPERIMENT_MARKER)

    def key(self) -> bytes:
        digest = hashlib.sha256(self.text.encode()).hexdigest()[:16]
        return f"{self.at:.3f}/{digest}".encode()

    def value(self) -> bytes:
        return orjson.dumps({"text": self.text, "at": iso(self.at), "at_seconds": self.at,
                             "written_at": iso(self.written_at)})

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "at": iso(self.at), "at_seconds": self.at, "written_at": iso(self.written_at),
                "source": self.source}


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def new_marker(text: str, at: float | None, now: float) -> Marker:
    """The marker ``mark`` writes: ``text`` at event time ``at`` (None: now); refuses what it cannot mean."""
    text = text.strip()
    if not text:
        raise MarkerError("the marker's text is empty: say what happened, e.g. \"launched AI assistant\"")
    if len(text) > MAX_TEXT:
        raise MarkerError(f"the marker's text has {len(text)} characters; at most {MAX_TEXT}")
    when = now if at is None else at
    if when > now + FUTURE_SKEW_SECONDS:
        raise MarkerError(f"--at {iso(when)} is {when - now:.0f}s in the future (at most {FUTURE_SKEW_SECONDS:g}s "
                          "ahead of this machine's clock): a marker records something that happened")
    return Marker(text, when, now)


def decode_marker(value: bytes | None) -> Marker | None:
    """A marker read from the topic; None for a tombstone or a message that is not one (it is ignored)."""
    if not value:
        return None
    try:
        data = orjson.loads(value)
        text, at = data["text"], float(data["at_seconds"])
        written = data.get("written_at")
        written_at = datetime.fromisoformat(written).timestamp() if isinstance(written, str) else at
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(text, str) or not text.strip():
        return None
    return Marker(text, at, written_at)


def latest(markers: Iterable[Marker]) -> Marker | None:
    """The marker with the newest event time; ties go to the one written last."""
    return max(markers, key=lambda m: (m.at, m.written_at), default=None)


def current_marker(markers: Iterable[Marker], setting: str, setting_time: float | None) -> Marker | None:
    """The marker the before/after comparison uses: the setting when set, else the latest written marker."""
    if setting_time is not None:
        return Marker(setting, setting_time, setting_time, source="setting")
    return latest(markers)


def listed(markers: Iterable[Marker]) -> list[dict[str, Any]]:
    """Every marker, oldest event time first, as the API lists them."""
    return [m.as_json() for m in sorted(markers, key=lambda m: (m.at, m.written_at))]
