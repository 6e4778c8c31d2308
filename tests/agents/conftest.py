"""The agents tests' embedded broker: one per test module, shared by its tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams.ops.broker import EmbeddedBroker


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as running:
        yield running
