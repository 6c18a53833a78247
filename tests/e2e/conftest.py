"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import IMPLEMENTATIONS, OUR_BIN, RunningServer, start_caucased


@pytest.fixture(scope="module", params=IMPLEMENTATIONS)
def caucased(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One caucased per test module: ours, then the reference release's."""
    if request.param == "reference":
        command = request.getfixturevalue("reference_bin") / "caucased"
    else:
        command = OUR_BIN / "caucased"
    server = start_caucased([command], tmp_path_factory.mktemp(f"caucased-{request.param}"))
    yield server
    server.stop()
