"""PEM in request bodies is read as the reference reads it (issue 10, side-by-side run).

The reference takes the first object of the expected type and ignores what surrounds it:
`openssl req -text` output, comments, other PEM blocks, a private key sent along. We accept
the same bodies, but keep and serve only the object itself, re-encoded: a private key that
came along is never stored nor served back (the reference stored the body as sent, and
served it to anyone at GET /csr/<id>).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase.crypto import x509util
from tests.conftest import FakeClock
from tests.support.servers import (
    IMPLEMENTATIONS,
    OUR_BIN,
    key_pem,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)
from tests.support.wsgi_support import Deployment, call, deploy, make_csr, signed_body

JSON = "application/json"
PKCS10 = "application/pkcs10"
KEY_MARK = b"PRIVATE KEY"
Wrap = Callable[[bytes, bytes, bytes], bytes]


def openssl_text(pem: bytes, kind: str) -> bytes:
    """`openssl req -text` / `openssl x509 -text` output: a dump, then the PEM block."""
    command = ["openssl", kind, "-text"]
    return subprocess.run(command, input=pem, capture_output=True, check=True).stdout


def pkcs8(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# How each body wraps the PEM object (`pem`); `key` is its private key, `other` another
# object of the same type.
ACCEPTED: dict[str, Wrap] = {
    "openssl -text output": lambda pem, key, other: b"",  # replaced per type below
    "a trailing comment": lambda pem, key, other: pem + b"a trailing comment\n",
    "a leading comment": lambda pem, key, other: b"made by hand\n" + pem,
    "two objects": lambda pem, key, other: pem + other,
    "its key first": lambda pem, key, other: key + pem,
    "its key after": lambda pem, key, other: pem + key,
    "CRLF line ends": lambda pem, key, other: pem.replace(b"\n", b"\r\n"),
    "non-ASCII text around": lambda pem, key, other: "café\n".encode("latin-1") + pem + b"\xff",
}
CSR_ONLY = {
    "the legacy label": lambda pem, key, other: pem.replace(
        b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"
    ),
}


def _bodies(pem: bytes, key: bytes, other: bytes, kind: str) -> dict[str, bytes]:
    bodies = {name: wrap(pem, key, other) for name, wrap in ACCEPTED.items()}
    bodies["openssl -text output"] = openssl_text(pem, kind)
    return bodies


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]


@pytest.fixture
def dep(tmp_path: Path, clock: FakeClock, keys: list[rsa.RSAPrivateKey]) -> Deployment:
    return deploy(tmp_path, clock, keys[0])


def _user(dep: Deployment) -> dict[str, object]:
    return {"https": True, "cert": dep.user_crt}


def _stored_csr_column(dep: Deployment) -> list[bytes]:
    with sqlite3.connect(dep.tmp_path / "caucase.sqlite") as connection:
        rows = connection.execute("SELECT csr FROM cascrt").fetchall()
    return [bytes(row[0]) for row in rows if row[0] is not None]


@pytest.mark.parametrize("case", [*ACCEPTED, *CSR_ONLY])
def test_submitted_csr_is_the_first_one_and_is_kept_alone(
    dep: Deployment, keys: list[rsa.RSAPrivateKey], case: str
) -> None:
    csr, other = make_csr(keys[1], "first"), make_csr(keys[2], "second")
    bodies = _bodies(csr, key_pem(keys[1]), other, "req")
    body = bodies[case] if case in bodies else CSR_ONLY[case](csr, b"", b"")
    reply = call(dep.app, "PUT", "/cas/csr", body, content_type=PKCS10)
    assert reply.status == 201, reply.body
    csr_id = reply.header("Location")
    assert call(dep.app, "GET", f"/cas/csr/{csr_id}").body == csr
    listed = call(dep.app, "GET", "/cas/csr", **_user(dep)).json()  # type: ignore[arg-type]
    assert [entry["csr"].encode() for entry in listed] == [csr]
    assert all(KEY_MARK not in row for row in _stored_csr_column(dep))
    assert call(dep.app, "PUT", f"/cas/crt/{csr_id}", b"", **_user(dep)).status == 204  # type: ignore[arg-type]
    crt = x509util.load_certificate(call(dep.app, "GET", f"/cas/crt/{csr_id}").body)
    assert crt.public_key() == keys[1].public_key()


@pytest.mark.parametrize(
    "body",
    [
        b"no PEM at all\n",
        b"",
        pytest.param("malformed first", id="a malformed CSR before a good one"),
        pytest.param("begin inside", id="a BEGIN line inside the block"),
        pytest.param("label mismatch", id="END label of another type"),
    ],
)
def test_bodies_the_reference_refuses_are_refused(
    dep: Deployment, keys: list[rsa.RSAPrivateKey], body: bytes | str
) -> None:
    csr = make_csr(keys[1])
    lines = csr.split(b"\n")
    made = {
        "malformed first": csr.replace(lines[1], b"!" * len(lines[1])) + make_csr(keys[2]),
        "begin inside": csr.replace(b"\n-----END", b"\n" + lines[0] + b"\n-----END"),
        "label mismatch": csr.replace(b"END CERTIFICATE REQUEST", b"END CERTIFICATE"),
    }
    data = made[body] if isinstance(body, str) else body
    reply = call(dep.app, "PUT", "/cas/csr", data, content_type=PKCS10)
    assert (reply.status, reply.body) == (400, b"b'Not a valid certificate signing request'")
    assert _stored_csr_column(dep) == []


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_template_csr_may_come_with_text_and_other_blocks(
    dep: Deployment, keys: list[rsa.RSAPrivateKey], case: str
) -> None:
    csr_id = call(dep.app, "PUT", "/cas/csr", make_csr(keys[1]), content_type=PKCS10)
    template = make_csr(keys[2], "template")
    body = _bodies(template, pkcs8(keys[2]), make_csr(keys[1], "other"), "req")[case]
    reply = call(
        dep.app,
        "PUT",
        f"/cas/crt/{csr_id.header('Location')}",
        body,
        content_type=PKCS10,
        **_user(dep),  # type: ignore[arg-type]
    )
    assert reply.status == 204, reply.body
    crt = x509util.load_certificate(
        call(dep.app, "GET", f"/cas/crt/{csr_id.header('Location')}").body
    )
    assert crt.subject.rfc4514_string() == "CN=template"
    assert crt.public_key() == keys[1].public_key()


def _service(dep: Deployment, key: rsa.RSAPrivateKey, name: str = "service") -> bytes:
    return dep.cas.create_certificate(dep.cas.append_csr(make_csr(key, name)))


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_renewal_takes_the_first_certificate_and_csr(
    dep: Deployment, keys: list[rsa.RSAPrivateKey], case: str
) -> None:
    crt = _service(dep, keys[1])
    other_crt = _service(dep, keys[2], "other")
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new_csr = make_csr(new_key, "ignored")
    payload = {
        "crt_pem": _bodies(crt, key_pem(keys[1]), other_crt, "x509")[case].decode("latin-1"),
        "renew_csr_pem": _bodies(new_csr, key_pem(new_key), make_csr(keys[2]), "req")[case].decode(
            "latin-1"
        ),
    }
    reply = call(
        dep.app, "PUT", "/cas/crt/renew", signed_body(keys[1], payload), content_type=JSON
    )
    assert reply.status == 200, reply.body
    assert KEY_MARK not in reply.body
    renewed = x509util.load_certificate(reply.body)
    assert renewed.public_key() == new_key.public_key()
    assert renewed.subject.rfc4514_string() == "CN=service"
    assert all(KEY_MARK not in row for row in _stored_csr_column(dep))


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "null digest"])
@pytest.mark.parametrize("case", list(ACCEPTED))
def test_revocation_takes_the_first_certificate(
    dep: Deployment, keys: list[rsa.RSAPrivateKey], case: str, signed: bool
) -> None:
    crt = _service(dep, keys[1])
    text = _bodies(crt, key_pem(keys[1]), _service(dep, keys[2], "other"), "x509")[case]
    payload = {"revoke_crt_pem": text.decode("latin-1")}
    if signed:
        body, extra = signed_body(keys[1], payload), {}
    else:
        body, extra = (
            json.dumps({"digest": None, "payload": json.dumps(payload)}).encode(),
            _user(dep),
        )
    reply = call(dep.app, "PUT", "/cas/crt/revoke", body, content_type=JSON, **extra)  # type: ignore[arg-type]
    assert reply.status == 204, reply.body
    serial = x509.load_pem_x509_certificate(crt).serial_number
    crl = x509.load_pem_x509_crl(call(dep.app, "GET", "/cas/crl").body)
    assert [entry.serial_number for entry in crl] == [serial]


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> tuple[str, Path]:
    if request.param == "ours":
        return "ours", OUR_BIN
    return "reference", Path(request.getfixturevalue("reference_bin"))


@pytest.mark.slow
def test_csr_bodies_get_the_same_status_from_both_implementations(
    tmp_path: Path, implementation: tuple[str, Path]
) -> None:
    """Black-box: the statuses seen on the reference in the side-by-side run, and where the
    reference stores what came along, ours keeps the CSR alone."""
    key, csr = make_key_and_csr("side by side")
    other = make_key_and_csr("second")[1]
    expected = dict.fromkeys(_bodies(csr, key_pem(key), other, "req"), 201)
    lines = csr.split(b"\n")
    refused = {
        "malformed first": csr.replace(lines[1], b"!" * len(lines[1])) + other,
        "blank lines inside": csr.replace(b"\n", b"\n\n", 2),
        "lowercase label": csr.replace(b"CERTIFICATE REQUEST", b"certificate request"),
    }
    name_of, binary = implementation
    server = start_caucased([binary / "caucased"], tmp_path / name_of)
    try:
        make_user(server, tmp_path / "user.pem")
        for name, body in {**_bodies(csr, key_pem(key), other, "req"), **refused}.items():
            status, headers, _ = request(server, "PUT", "/cas/csr", body, {"Content-Type": PKCS10})
            assert status == expected.get(name, 400), name
            if status == 201:
                stored = request(server, "GET", "/cas/csr/" + headers["Location"])[2]
                assert (stored == csr) == (name_of == "ours"), name
                if name_of == "reference":
                    assert stored == body, name
    finally:
        server.stop()


def test_a_row_the_reference_stored_as_sent_is_served_as_its_csr_alone(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    """A database carried over from the reference holds bodies as they were sent: a key,
    non-ASCII text (with which the reference's own pending list answered 500)."""
    csr = make_csr(keys[1])
    reply = call(dep.app, "PUT", "/cas/csr", csr, content_type=PKCS10)
    csr_id = int(reply.header("Location") or "")
    as_sent = "café\n".encode("latin-1") + key_pem(keys[1]) + csr + b"\xff\n"
    with sqlite3.connect(dep.tmp_path / "caucase.sqlite") as connection:
        connection.execute("UPDATE cascrt SET csr = ? WHERE id = ?", (as_sent, csr_id))
    assert call(dep.app, "GET", f"/cas/csr/{csr_id}").body == csr
    listed = call(dep.app, "GET", "/cas/csr", **_user(dep))  # type: ignore[arg-type]
    assert listed.status == 200
    assert listed.json() == [{"id": str(csr_id), "csr": csr.decode()}]
