"""Property-based fuzzing (hypothesis) of the parsers and of the WSGI application.

Parsers may only fail with their documented error types; the application, fed random
methods, paths, headers and bodies in-process, never answers 5xx and changes nothing in
the database unless it answers with a success.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import struct
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from caucase import backup
from caucase.crypto import pemfile, x509util
from caucase.exceptions import BackupError, NotACertificateSigningRequest
from tests.conftest import FakeClock
from tests.fuzz.db_state import Rows, read_rows
from tests.support.wsgi_support import Deployment, call, deploy, make_csr, signed_body

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
LABELS = ["CERTIFICATE", "CERTIFICATE REQUEST", "X509 CRL", "RSA PRIVATE KEY", "PRIVATE KEY"]


@dataclass
class Fixtures:
    """Real documents to mutate, and a deployment to send requests to."""

    deployment: Deployment
    csr: bytes
    crt: bytes
    key: rsa.RSAPrivateKey
    rows: Rows


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    tmp_path = tmp_path_factory.mktemp("fuzz")
    clock = FakeClock(datetime.datetime.now(datetime.timezone.utc))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    dep = deploy(tmp_path, clock, key)
    csr = make_csr(rsa.generate_private_key(public_exponent=65537, key_size=2048), "fuzz")
    for authority in ("cas", "cau"):  # CRLs are built lazily: build them before the snapshot
        assert call(dep.app, "GET", f"/{authority}/crl").status == 200
        assert (
            call(dep.app, "GET", f"/{authority}/csr", https=True, cert=dep.user_crt).status == 200
        )
    return Fixtures(dep, csr, dep.user_crt, key, read_rows(tmp_path / "caucase.sqlite"))


def _mutations(document: bytes) -> st.SearchStrategy[bytes]:
    """Byte flips, truncations, insertions and duplications of a real document."""
    position = st.integers(min_value=0, max_value=len(document))
    return st.one_of(
        st.tuples(position, st.binary(min_size=1, max_size=4)).map(
            lambda p: document[: p[0]] + p[1] + document[p[0] + len(p[1]) :]
        ),
        position.map(lambda cut: document[:cut]),
        st.tuples(position, st.binary(max_size=20)).map(
            lambda p: document[: p[0]] + p[1] + document[p[0] :]
        ),
        st.integers(min_value=2, max_value=3).map(lambda n: document * n),
        st.sampled_from(LABELS).map(
            lambda label: document.replace(b"CERTIFICATE REQUEST", label.encode())
        ),
    )


def _pem_like() -> st.SearchStrategy[bytes]:
    block = st.tuples(st.sampled_from(LABELS), st.binary(max_size=64), st.booleans()).map(
        lambda t: (
            f"-----BEGIN {t[0]}-----\n".encode()
            + t[1]
            + (b"\n-----END " + t[0].encode() + b"-----\n" if t[2] else b"")
        )
    )
    return st.lists(st.one_of(block, st.binary(max_size=32)), max_size=4).map(b"".join)


# Parsers


@FUZZ
@given(data=st.data())
def test_certificate_and_csr_loaders_fail_only_cleanly(fixtures: Fixtures, data: Any) -> None:
    document = data.draw(
        st.one_of(_mutations(fixtures.csr), _mutations(fixtures.crt), _pem_like(), st.binary())
    )
    with contextlib.suppress(NotACertificateSigningRequest):
        x509util.load_certificate_request(document)
    for loader in (x509util.load_certificate, x509util.load_crl):
        with contextlib.suppress(ValueError):
            loader(document)


@FUZZ
@given(data=st.one_of(_pem_like(), _mutations(b"-----BEGIN X-----\nab\n-----END X-----\n")))
def test_pem_blocks_are_verbatim_slices_in_order(data: bytes) -> None:
    blocks = pemfile.split_blocks(data)
    offset = 0
    for block in blocks:
        found = data.find(block.text, offset)
        assert found >= 0
        offset = found + len(block.text)
        assert block.text.startswith(b"-----BEGIN ")


def _backup_header(header: object) -> bytes:
    text = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return backup.MAGIC + struct.pack("<I", len(text)) + text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["cipher", "key_list", "name", "id", "key", "parameter"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=64),
        JSON_VALUES.map(_backup_header),
        st.binary(max_size=64).map(_backup_header),
        st.integers(min_value=0, max_value=2**32 - 1).map(
            lambda n: backup.MAGIC + struct.pack("<I", n) + b"{}"
        ),
    )
)
def test_backup_header_readers_fail_only_with_backup_error(fixtures: Fixtures, raw: bytes) -> None:
    with contextlib.suppress(BackupError):
        backup.read_key_ids(io.BytesIO(raw))
    try:
        statements = backup.read_backup(io.BytesIO(raw), fixtures.key)
        list(statements)
    except BackupError:
        pass


STATEMENTS = ["BEGIN TRANSACTION;", "CREATE TABLE t (v TEXT);", "INSERT INTO t VALUES('é');"]


@pytest.fixture(scope="module")
def real_backup(fixtures: Fixtures) -> bytes:
    """A real backup (small test chunks) that the fixture key can open."""
    output = io.BytesIO()
    recipient = x509util.load_certificate(fixtures.crt)
    backup.write_backup(output, [*STATEMENTS, "COMMIT;"], [recipient], backup.TEST_CHUNK_SIZE)
    restored = list(backup.read_backup(io.BytesIO(output.getvalue()), fixtures.key))
    assert restored == [*STATEMENTS, "COMMIT;"]
    return output.getvalue()


@FUZZ
@given(data=st.data())
def test_tampered_backups_never_restore_other_statements(
    fixtures: Fixtures, real_backup: bytes, data: Any
) -> None:
    """Any change to a backup is refused with BackupError, or leaves its content intact."""
    tampered = data.draw(_mutations(real_backup))
    try:
        statements = list(backup.read_backup(io.BytesIO(tampered), fixtures.key))
    except BackupError:
        return
    assert statements == [*STATEMENTS, "COMMIT;"]


def test_deeply_nested_backup_header_is_a_backup_error() -> None:
    with pytest.raises(BackupError):
        backup.read_key_ids(io.BytesIO(_backup_header(b"[" * 100000)))


# The WSGI application in-process

PATH_SEGMENTS = st.one_of(
    st.sampled_from(
        ["cas", "cau", "crl", "csr", "crt", "ca.crt.pem", "ca.crt.json", "revoke", "renew", "cors"]
    ),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(st.characters(max_codepoint=255), max_size=12),
)
ROUTE_PATHS = [
    f"/{authority}{sub}"
    for authority in ("cas", "cau")
    for sub in (
        "",
        "/crl",
        "/csr",
        "/crt",
        "/crt/ca.crt.pem",
        "/crt/ca.crt.json",
        "/crt/revoke",
        "/crt/renew",
    )
] + ["/cors"]
HEADER_TEXT = st.text(st.characters(max_codepoint=255, blacklist_characters="\r\n"), max_size=40)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        ["application/json", "application/pkcs10", "application/x-www-form-urlencoded"]
    ),
    HEADER_TEXT,
)


def _envelopes(fixtures: Fixtures) -> st.SearchStrategy[bytes]:
    crt = fixtures.crt.decode()
    payloads = st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "crt_pem": st.one_of(st.just(crt), JSON_VALUES),
                "renew_csr_pem": st.one_of(st.just(fixtures.csr.decode()), JSON_VALUES),
                "revoke_crt_pem": st.one_of(st.just(crt.replace("M", "A", 3)), JSON_VALUES),
                "revoke_serial": JSON_VALUES.filter(
                    lambda v: not (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
                ),
            },
        ),
        JSON_VALUES,
    )
    envelope = st.fixed_dictionaries(
        {},
        optional={
            "payload": st.one_of(payloads.map(json.dumps), JSON_VALUES),
            "digest": st.one_of(
                st.sampled_from(["sha256", "sha384", "sha512", "md5"]), JSON_VALUES
            ),
            "signature": st.one_of(st.text(max_size=20), JSON_VALUES),
        },
    )
    return st.one_of(
        envelope.map(lambda e: json.dumps(e).encode()),
        JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    )


def _check_answer(fixtures: Fixtures, status: int, errors: str) -> None:
    event(f"status {status}")  # the spread shows with --hypothesis-show-statistics
    assert status < 500, errors
    db = fixtures.deployment.tmp_path / "caucase.sqlite"
    rows = read_rows(db)
    if status >= 300:
        assert rows == fixtures.rows
    fixtures.rows = rows


@FUZZ
@given(data=st.data())
def test_envelope_routes_never_fail(fixtures: Fixtures, data: Any) -> None:
    dep = fixtures.deployment
    authority = data.draw(st.sampled_from(["cas", "cau"]))
    route = data.draw(st.sampled_from(["revoke", "renew"]))
    body = data.draw(st.one_of(_envelopes(fixtures), st.binary(max_size=64)))
    https = data.draw(st.booleans())
    cert = dep.user_crt if https and data.draw(st.booleans()) else None
    reply = call(
        dep.app,
        "PUT",
        f"/{authority}/crt/{route}",
        body,
        content_type="application/json",
        https=https,
        cert=cert,
    )
    _check_answer(fixtures, reply.status, reply.errors)


@FUZZ
@given(data=st.data())
def test_signed_envelopes_with_hostile_payloads(fixtures: Fixtures, data: Any) -> None:
    """Correctly signed envelopes whose payload content is hostile (the signature passes,
    so the checks behind it are reached)."""
    dep = fixtures.deployment
    payload = data.draw(
        st.fixed_dictionaries(
            {"crt_pem": st.one_of(st.just(fixtures.crt.decode()), JSON_VALUES)},
            optional={
                "renew_csr_pem": st.one_of(
                    _mutations(fixtures.csr).map(lambda b: b.decode("latin-1")), JSON_VALUES
                ),
                "revoke_crt_pem": JSON_VALUES,
            },
        )
    )
    digest = data.draw(st.sampled_from(["sha256", "sha384", "sha512"]))
    body = signed_body(dep.user_key, payload, digest)
    route = data.draw(st.sampled_from(["renew", "revoke"]))
    reply = call(dep.app, "PUT", f"/cau/crt/{route}", body, content_type="application/json")
    _check_answer(fixtures, reply.status, reply.errors)


@FUZZ
@given(data=st.data())
def test_random_requests_never_fail(fixtures: Fixtures, data: Any) -> None:
    dep = fixtures.deployment
    known_methods = st.sampled_from(["GET", "PUT", "POST", "DELETE", "OPTIONS"])
    method = data.draw(
        st.one_of(known_methods, known_methods, known_methods, st.text(min_size=1, max_size=8))
    )
    segments = data.draw(st.lists(PATH_SEGMENTS, max_size=1))
    path = (
        data.draw(st.one_of(st.sampled_from(ROUTE_PATHS), st.just(""))) + "/" + "/".join(segments)
    )
    if data.draw(st.booleans()):
        path += "?" + data.draw(HEADER_TEXT)
    body = data.draw(
        st.one_of(
            st.none(), st.binary(max_size=200), _mutations(fixtures.csr), _envelopes(fixtures)
        )
    )
    headers = data.draw(
        st.dictionaries(
            st.sampled_from(["Origin", "Host", "Cookie", "Referrer", "User-Agent", "Expect"]),
            HEADER_TEXT,
            max_size=4,
        )
    )
    environ: dict[str, Any] = {}
    if data.draw(st.booleans()):
        environ["CONTENT_LENGTH"] = data.draw(
            st.one_of(HEADER_TEXT, st.integers(min_value=-5, max_value=2**40).map(str))
        )
        environ.setdefault("wsgi.input", io.BytesIO(body or b""))
    https = data.draw(st.booleans())
    cert = dep.user_crt if https and data.draw(st.booleans()) else None
    reply = call(
        dep.app,
        method,
        path,
        body,
        content_type=data.draw(st.one_of(st.none(), CONTENT_TYPES)),
        https=https,
        cert=cert,
        headers=headers,
        environ=environ,
    )
    _check_answer(fixtures, reply.status, reply.errors)


def test_the_unmutated_csr_is_accepted(fixtures: Fixtures) -> None:
    """The fuzzed documents were mutations of a valid one, not of garbage."""
    reply = call(fixtures.deployment.app, "PUT", "/cas/csr", fixtures.csr)
    assert reply.status == 201
