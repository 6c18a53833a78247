"""Real Prometheus for metrics tests: promtool's linter, and a server scraping a target.

Both come from Debian's `prometheus` package (tests/system-deps.sh installs it). The server
listens on loopback, keeps its data in the test's directory, and is stopped by `stop()`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.support.servers import free_port_pair
from tests.support.wait import poll

STARTUP_TIMEOUT = 60.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} not found: run tests/system-deps.sh (Debian's prometheus)")
    return path


def promtool_check_metrics(exposition: bytes) -> None:
    """Fail unless `promtool check metrics` finds the scrape well-formed and lint-clean."""
    result = subprocess.run(
        [_tool("promtool"), "check", "metrics"], input=exposition, capture_output=True
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"promtool check metrics failed:\n{output}"


class PrometheusServer:
    """A Prometheus server scraping `targets` (host:port, path /metrics) every `interval`."""

    def __init__(self, workdir: Path, targets: Sequence[str], interval: str = "500ms") -> None:
        self.workdir = workdir
        self.port = free_port_pair()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval},
            "scrape_configs": [{"job_name": "caucased", "static_configs": [{"targets": targets}]}],
        }
        # JSON is YAML: no YAML library needed to write the configuration.
        (workdir / "prometheus.yml").write_text(json.dumps(config))
        self._log = workdir / "prometheus.log"
        with open(self._log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    _tool("prometheus"),
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
            )
        try:
            poll(self._ready, "Prometheus to be ready", STARTUP_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return self._log.read_text(errors="replace")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            status = self.process.returncode
            raise AssertionError(f"prometheus exited with {status}:\n{self.log()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _api(self, path: str, **query: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(query)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]

    def targets_up(self) -> bool:
        """Whether every target was scraped successfully at its last scrape."""
        targets = self._api("targets")["activeTargets"]
        return bool(targets) and all(target["health"] == "up" for target in targets)

    def wait_targets_up(self, timeout: float = 30.0) -> None:
        poll(self.targets_up, "Prometheus to scrape its targets", timeout)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector a PromQL query answers now, through the HTTP API."""
        data = self._api("query", query=promql)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The value of a query answering one sample, None while it answers none."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_value(self, promql: str, expected: float, timeout: float = 30.0) -> None:
        poll(lambda: self.value(promql) == expected, f"{promql} == {expected}", timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def running_prometheus(workdir: Path, targets: Sequence[str]) -> Iterator[PrometheusServer]:
    server = PrometheusServer(workdir, targets)
    try:
        yield server
    finally:
        server.stop()
