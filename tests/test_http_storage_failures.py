"""A database that fails is a 503 with Retry-After, never a 500 (issue 10).

The application runs on a real SQLite file which is then taken away (replaced by a
directory) or locked by another connection past the busy timeout.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase.ca import CertificateAuthority
from caucase.http.app import Application
from caucase.storage import Database, Storage
from tests.conftest import FakeClock
from tests.support.wsgi_support import Reply, call, make_csr, name

PKCS10 = "application/pkcs10"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "caucase.sqlite"


@pytest.fixture
def deployment(
    tmp_path: Path, db_path: Path, clock: FakeClock
) -> Iterator[tuple[Application, bytes]]:
    """Both authorities on one SQLite file, and a user certificate."""
    database = Database(str(db_path))
    cau = CertificateAuthority(
        Storage(database, "cau", enforce_unique_key_id=True),
        name("Caucase CAU at test"),
        2048,
        93,
        clock=clock,
        auto_sign_csr_amount=1,
    )
    cas = CertificateAuthority(
        Storage(database, "cas"),
        name("Caucase CAS at test"),
        2048,
        93,
        clock=clock,
    )
    user_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    user_crt = cau.get_certificate(cau.append_csr(make_csr(user_key, "admin")))
    app = Application(cau, cas, str(tmp_path / "cors.key"), clock=clock)
    yield app, user_crt
    database.close()


def _new_csr() -> bytes:
    return make_csr(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def assert_unavailable(reply: Reply) -> None:
    assert (reply.status, reply.reason) == (503, "Service Unavailable"), reply.body
    assert reply.header("Retry-After") == "5"
    assert reply.body == b"Database unavailable, try again later"
    assert reply.header("Date") and reply.header("Content-Length") == str(len(reply.body))
    assert reply.errors.count("\n") == 1 and "Storage failure" in reply.errors
    assert "Traceback" not in reply.errors


def test_a_database_gone_is_503_for_writes_reads_and_authentication(
    deployment: tuple[Application, bytes], db_path: Path
) -> None:
    app, user_crt = deployment
    created = call(app, "PUT", "/cas/csr", _new_csr(), content_type=PKCS10)
    assert created.status == 201
    os.rename(db_path, db_path.with_suffix(".moved"))
    os.mkdir(db_path)
    assert_unavailable(call(app, "PUT", "/cas/csr", _new_csr(), content_type=PKCS10))
    assert_unavailable(call(app, "GET", "/cas/crl"))
    # An authenticated write: the database failed, not the user, so no 401.
    pending = "/cas/csr/" + str(created.header("Location"))
    assert_unavailable(call(app, "DELETE", pending, https=True, cert=user_crt))


@pytest.mark.slow
def test_a_database_locked_past_the_busy_timeout_is_503_and_nothing_is_lost(
    deployment: tuple[Application, bytes], db_path: Path
) -> None:
    app, user_crt = deployment
    locker = sqlite3.connect(db_path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        assert_unavailable(call(app, "PUT", "/cas/csr", _new_csr(), content_type=PKCS10))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    csr = _new_csr()
    reply = call(app, "PUT", "/cas/csr", csr, content_type=PKCS10)
    assert reply.status == 201
    listed = call(app, "GET", "/cas/csr", https=True, cert=user_crt).json()
    assert [entry["csr"].encode() for entry in listed] == [csr]
