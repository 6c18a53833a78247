"""Fixtures shared by every test module: an injectable clock, a replayable random
generator, the reference peer, and the storage engines (a PostgreSQL server shared by the
session, a fresh database per test)."""

from __future__ import annotations

import datetime
import os
import random
import subprocess
import sys
import threading
from collections.abc import Generator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer, running_server

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_VERSION = "0.9.17"
SEED_VARIABLE = "CAUCASE_TEST_SEED"
_SEED_PROPERTY = "random seed"


class FakeClock:
    """A clock that only moves when told to: lets tests cross years without sleeping."""

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self._now = start or datetime.datetime(2026, 11, 27, 12, 0, tzinfo=datetime.timezone.utc)
        self._lock = threading.Lock()

    def __call__(self) -> datetime.datetime:
        with self._lock:
            return self._now

    def advance(self, **kw: float) -> datetime.datetime:
        with self._lock:
            self._now += datetime.timedelta(**kw)
            return self._now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """This test's random generator, seeded from $CAUCASE_TEST_SEED when it is set and at
    random otherwise; a failing test's report gives the seed, to replay the same run."""
    given = os.environ.get(SEED_VARIABLE)
    seed = int(given) if given else random.randrange(2**32)
    request.node.user_properties.append((_SEED_PROPERTY, seed))
    return random.Random(seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for key, value in item.user_properties:
            if key == _SEED_PROPERTY:
                report.sections.append((_SEED_PROPERTY, f"replay with {SEED_VARIABLE}={value}"))
    return report


def _reference_venv() -> Path:
    return Path(os.environ.get("CAUCASE_REFERENCE_VENV", ROOT / ".reference-venv"))


_reference_lock = threading.Lock()


@pytest.fixture(scope="session")
def reference_bin() -> Path:
    """Directory holding the reference caucase 0.9.17 commands, in their own venv.

    Installed from PyPI on first use; never into the project's environment, since the
    package names collide."""
    venv = _reference_venv()
    bin_dir = venv / "bin"
    with _reference_lock:
        if not (bin_dir / "caucased").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(bin_dir / "pip"), "install", "-q", f"caucase=={REFERENCE_VERSION}"],
                check=True,
            )
    version = subprocess.run(
        [str(bin_dir / "caucase"), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert version == REFERENCE_VERSION
    return bin_dir


@pytest.fixture(scope="session")
def postgres_server() -> Generator[PostgresServer, None, None]:
    """One PostgreSQL server for the whole session, started on first use."""
    with running_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Generator[str, None, None]:
    """A fresh, empty PostgreSQL database for this test; dropped after it."""
    url = postgres_server.new_database()
    yield url
    postgres_server.drop_database(url)


# The storage engines a parametrised test runs on: ids "sqlite" and "postgresql".
ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_location(engine: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where this test's database is: an SQLite path, or a fresh PostgreSQL database."""
    if engine == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "caucase.sqlite")


@pytest.fixture
def caucased_db(engine: str, request: pytest.FixtureRequest) -> str | None:
    """The --db of a caucased this test starts: None for its own SQLite file in its working
    directory, else a fresh PostgreSQL database."""
    if engine == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    return None


@pytest.fixture(scope="module", params=ENGINES)
def module_caucased_db(request: pytest.FixtureRequest) -> Generator[str | None, None, None]:
    """caucased_db for a caucased shared by a whole module: each module runs once per engine."""
    if request.param != "postgresql":
        yield None
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.new_database()
    yield url
    server.drop_database(url)
