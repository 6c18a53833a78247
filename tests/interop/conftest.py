"""Fixtures of the interoperability tests: which implementation's commands to run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.acme_clients import install_certbot
from tests.support.servers import IMPLEMENTATIONS, OUR_BIN


@pytest.fixture(params=IMPLEMENTATIONS)
def tools_bin(request: pytest.FixtureRequest) -> Path:
    """Directory of the caucase commands under test: ours, or the reference release's."""
    if request.param == "ours":
        return OUR_BIN
    return Path(request.getfixturevalue("reference_bin"))


@pytest.fixture(scope="session")
def certbot_bin() -> Path:
    """certbot's own venv (.acme-venv at the repository root), installed on first use."""
    return install_certbot()
