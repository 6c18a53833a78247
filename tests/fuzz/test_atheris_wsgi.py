"""Runs the atheris target on the WSGI application for a bounded time; any crash fails."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(__file__).with_name("fuzz_wsgi.py")
FUZZ_SECONDS = 60


@pytest.mark.slow
def test_wsgi_application_survives_coverage_guided_fuzzing(
    tmp_path: Path, rng: random.Random
) -> None:
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            str(TARGET),
            f"-max_total_time={FUZZ_SECONDS}",
            f"-seed={rng.randrange(1, 2**31)}",  # libFuzzer's, drawn from the test's seed
            f"-artifact_prefix={tmp_path}/",
            "-rss_limit_mb=4096",
        ],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=FUZZ_SECONDS + 120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert not list(tmp_path.glob("crash-*")), output[-4000:]
    runs = re.search(r"Done (\d+) runs", output)
    assert runs is not None and int(runs.group(1)) > 1000, output[-2000:]
