"""A bad setting or an unreachable broker stops a command at once, with a message a person can act on.

Each case runs ``python -m streams COMMAND`` as a person would, with only the
CROSSSELL_ variables of the case: exit code 2 for a bad setting (naming the
variable and what is allowed), 3 for a broker that does not answer (naming
the address and CROSSSELL_BROKER_URL), never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from streams.ops.broker import free_port
from tests.harness import REPO

COMMANDS = ["worker", "generate", "run"]
EXIT_CONFIG = 2
EXIT_BROKER = 3


@dataclass
class Result:
    returncode: int
    stderr: str
    seconds: float


def streams(command: str, env: dict[str, str], timeout: float = 60.0) -> Result:
    """``python -m streams command`` with ``env`` as its only CROSSSELL_ settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CROSSSELL_")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "streams", command, *(["--duration", "5"] if command != "worker"
                                                                       else [])],
                          env={**clean, **env}, cwd=REPO, capture_output=True, timeout=timeout, check=False)
    return Result(done.returncode, done.stderr.decode(errors="replace"), time.monotonic() - started)


def closed_port_url() -> str:
    return f"kafka://127.0.0.1:{free_port()}"  # nothing listens there


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_broker_exits_3_naming_the_address_and_the_setting(command: str) -> None:
    url = closed_port_url()
    result = streams(command, {"CROSSSELL_BROKER_URL": url, "CROSSSELL_BROKER_CHECK_TIMEOUT_SECONDS": "3"})
    assert result.returncode == EXIT_BROKER, result.stderr
    assert result.seconds < 30
    message = [line for line in result.stderr.splitlines() if line.startswith("crosssell:")]
    assert message, result.stderr[-2000:]
    assert url.removeprefix("kafka://") in message[-1]
    assert "CROSSSELL_BROKER_URL" in message[-1]
    assert_no_traceback(result)


def test_an_unreachable_broker_is_reported_without_client_noise() -> None:
    result = streams("worker", {"CROSSSELL_BROKER_URL": closed_port_url(),
                                "CROSSSELL_BROKER_CHECK_TIMEOUT_SECONDS": "3"})
    assert result.returncode == EXIT_BROKER
    assert len(result.stderr.splitlines()) <= 5, result.stderr[:500]


# (environment, the variable the message must name, a phrase of the allowed values)
BAD_SETTINGS = {
    "zero partitions": ({"CROSSSELL_PARTITIONS": "0"}, "CROSSSELL_PARTITIONS", "whole number >= 1"),
    "port not a number": ({"CROSSSELL_WEB_PORT": "abc"}, "CROSSSELL_WEB_PORT", "whole number"),
    "port out of range": ({"CROSSSELL_WEB_PORT": "70000"}, "CROSSSELL_WEB_PORT", "TCP port 1-65535"),
    "window not a duration": ({"CROSSSELL_WINDOW_SECONDS": "banana"}, "CROSSSELL_WINDOW_SECONDS",
                              "duration such as 30, 30s, 500ms, 5m, 1h or 7d"),
    # 7m is a whole number of 60 s windows (allowed); it is not of 2-minute windows.
    "view not a multiple of the window": ({"CROSSSELL_WINDOW_SECONDS": "2m", "CROSSSELL_ROLLING_VIEWS": "7m"},
                                          "CROSSSELL_ROLLING_VIEWS", "whole multiples of the window (120s)"),
    "view shorter than a window": ({"CROSSSELL_ROLLING_VIEWS": "90s,5m"}, "CROSSSELL_ROLLING_VIEWS",
                                   "whole multiples of the window (60s)"),
    "view longer than the retention": ({"CROSSSELL_ROLLING_VIEWS": "5m,48h"}, "CROSSSELL_ROLLING_VIEWS",
                                       "at most the retention (86400s)"),
    "unknown variable": ({"CROSSSELL_FOO": "1"}, "CROSSSELL_FOO", "Known settings: CROSSSELL_APP_ID"),
    "broker url without scheme": ({"CROSSSELL_BROKER_URL": "127.0.0.1:9092"}, "CROSSSELL_BROKER_URL",
                                  "kafka://host:port"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_a_bad_setting_exits_2_naming_the_variable_and_the_allowed_values(command: str, case: str) -> None:
    env, variable, allowed = BAD_SETTINGS[case]
    # A reachable-looking broker URL, so that only the bad setting can stop the command.
    result = streams(command, {"CROSSSELL_BROKER_URL": closed_port_url(), **env})
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert result.seconds < 30
    assert variable in result.stderr
    assert allowed in result.stderr
    assert_no_traceback(result)


@pytest.mark.parametrize("command", ["generate", "worker"])
def test_an_empty_broker_url_explains_what_to_do(command: str) -> None:
    result = streams(command, {"CROSSSELL_BROKER_URL": ""})
    assert result.returncode == EXIT_CONFIG, result.stderr
    assert "CROSSSELL_BROKER_URL is empty" in result.stderr
    assert "kafka://host:port" in result.stderr
    assert "python -m streams run" in result.stderr
    assert_no_traceback(result)
