"""Fixtures of the ACME tests: a real DNS server with an API for its records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.challtestsrv import ChallTestSrv, running_challtestsrv


@pytest.fixture
def challtestsrv(tmp_path: Path) -> Iterator[ChallTestSrv]:
    with running_challtestsrv(tmp_path / "challtestsrv.log") as server:
        yield server
