"""The worker process logs at CROSSSELL_LOG_LEVEL: no debug record of aiokafka or Faust is even built."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from streams.ops.broker import EmbeddedBroker
from streams.ops.cli import make_worker
from streams.runtime.app import create_app
from streams.settings import Settings


@pytest.fixture
def root_logging() -> Iterator[None]:
    """The worker configures the process's root logger: put it back afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("level", ["warning", "info"])
def test_the_worker_sets_up_logging_at_the_configured_level_and_keeps_it(
        broker: EmbeddedBroker, tmp_path: Any, root_logging: None, level: str) -> None:
    settings = Settings(broker_url=broker.url, data_dir=str(tmp_path), log_level=level)
    app, _ = create_app(settings)
    worker = make_worker(app, settings)
    worker._setup_logging()  # what execute_from_commandline does first
    expected = logging.getLevelName(level.upper())
    assert logging.getLogger().getEffectiveLevel() == expected
    for name in ("aiokafka", "aiokafka.consumer.fetcher", "faust.topics"):
        assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), f"{name} builds debug records"
    worker._on_startup_end_spinner()  # startup done: the level stays
    assert logging.getLogger().getEffectiveLevel() == expected
