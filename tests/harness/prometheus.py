"""A Prometheus server of a test's own (Debian's prometheus binary), and its HTTP API."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams.ops.broker import LOOPBACK, free_port
from streams.ops.supervisor import spawn

PROMETHEUS = shutil.which("prometheus")


def log_tail(path: Path, lines: int = 40) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""

def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return bytes(response.read())

@dataclass
class Server:
    """A Prometheus-family server this test started: its process, loopback port and log."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def wait_ready(self, timeout: float) -> None:
        """Until ``/-/ready`` answers; fails with the log's tail if the server exits or the time runs out."""
        name = type(self).__name__.lower()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{name} exited with {self.process.returncode}:\n{log_tail(self.log_path)}")
            with contextlib.suppress(OSError):
                get(self.base_url + "/-/ready", timeout=2)
                return
            time.sleep(0.3)
        pytest.fail(f"{name} was not ready within {timeout:g}s:\n{log_tail(self.log_path)}")


@dataclass
class Prometheus(Server):
    def api(self, path: str, **params: str | list[str]) -> Any:
        """The ``data`` of a successful /api/v1 answer; raises PromQLError with Prometheus' message otherwise."""
        url = f"{self.base_url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            body = json.loads(get(url, timeout=10))
        except urllib.error.HTTPError as exc:  # 400/422 carry the error as JSON
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[Any]:
        """The samples of an instant query at now; a scalar or string result counts as one sample."""
        data = self.api("query", query=expr)
        result = data["result"]
        return list(result) if data["resultType"] in ("vector", "matrix") else [result]

class PromQLError(Exception):
    pass


def start_prometheus(workdir: Path, config: dict[str, Any]) -> Prometheus:
    """Prometheus with ``config`` (a dict, written as JSON, which is YAML), on a free port; ready."""
    assert PROMETHEUS is not None
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))
    port = free_port()
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        process = spawn([PROMETHEUS, f"--config.file={path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                         f"--web.listen-address={LOOPBACK}:{port}", "--log.level=warn"], log=log, cwd=workdir)
    prometheus = Prometheus(process, port, log_path)
    prometheus.wait_ready(60)
    return prometheus
