"""GET {ca}/renewal-info/<certID> (RFC 9773) and PUT {ca}/renewal-info (early renewal), in
process: real CAs on SQLite, a FakeClock, the WSGI application."""

from __future__ import annotations

import datetime
import json
import sqlite3
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase import renewal
from caucase.acme.renewal_info import CertID
from caucase.crypto import x509util
from caucase.storage import Storage
from tests.conftest import FakeClock
from tests.support.ca_helpers import generate_keys
from tests.support.wsgi_support import Deployment, call, deploy, make_csr

JSON = "application/json"
DAY = datetime.timedelta(days=1)
# The default --threshold of caucased, which the test deployment's CAs use.
THRESHOLD = 31 * DAY


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    return generate_keys(4)


@pytest.fixture
def dep(tmp_path: Path, clock: FakeClock, keys: list[rsa.RSAPrivateKey]) -> Deployment:
    return deploy(tmp_path, clock, keys[0])


def issue(dep: Deployment, key: rsa.RSAPrivateKey, name: str = "svc") -> x509.Certificate:
    csr_id = dep.cas.append_csr(make_csr(key, name))
    return x509util.load_certificate(dep.cas.create_certificate(csr_id))


def renewal_info(dep: Deployment, certificate: x509.Certificate, authority: str = "cas"):  # type: ignore[no-untyped-def]
    return call(dep.app, "GET", f"/{authority}/renewal-info/{CertID.of(certificate)}")


def window_of(reply_json: dict[str, object]) -> tuple[datetime.datetime, datetime.datetime]:
    window = reply_json["suggestedWindow"]
    assert isinstance(window, dict)
    return (
        datetime.datetime.fromisoformat(window["start"].replace("Z", "+00:00")),
        datetime.datetime.fromisoformat(window["end"].replace("Z", "+00:00")),
    )


def early(dep: Deployment, payload: dict[str, object], *, cert: bool = True):  # type: ignore[no-untyped-def]
    return call(
        dep.app,
        "PUT",
        "/cas/renewal-info",
        json.dumps(payload).encode(),
        content_type=JSON,
        https=True,
        cert=dep.user_crt if cert else None,
    )


def test_a_certificate_gets_its_default_window(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    certificate = issue(dep, keys[1])

    reply = renewal_info(dep, certificate)

    assert reply.status == 200
    assert reply.header("Content-Type") == "application/json"
    assert reply.header("Retry-After") == "21600"
    assert reply.header("Cache-Control") == "public, max-age=3600"
    document = reply.json()
    assert list(document) == ["suggestedWindow"]
    expected = renewal.suggested_window(
        certificate.not_valid_before_utc,
        certificate.not_valid_after_utc,
        certificate.serial_number,
        THRESHOLD,
    )
    start, end = window_of(document)
    assert start == expected.start.replace(microsecond=0)
    assert end == expected.end.replace(microsecond=0)


def test_unknown_and_malformed_cert_ids(dep: Deployment, keys: list[rsa.RSAPrivateKey]) -> None:
    certificate = issue(dep, keys[1])
    cert_id = CertID.of(certificate)
    other_serial = CertID(cert_id.authority_key_identifier, cert_id.serial + 1)
    user = x509util.load_certificate(dep.user_crt)

    for path, status in [
        (f"/cas/renewal-info/{other_serial}", 404),
        (f"/cau/renewal-info/{cert_id}", 404),  # another authority's key id
        (f"/cas/renewal-info/{CertID.of(user)}", 404),
        ("/cas/renewal-info/not-a-cert-id", 400),
        ("/cas/renewal-info/AAAA.AAAA", 400),  # a serial with a superfluous leading zero
    ]:
        reply = call(dep.app, "GET", path)
        assert (reply.status, reply.header("Content-Type")) == (
            status,
            "application/problem+json",
        ), path
        assert reply.json()["status"] == status

    assert renewal_info(dep, user, "cau").status == 200
    assert call(dep.app, "GET", f"/cas/renewal-info/{cert_id}/more").status == 404


def test_an_expired_certificate_is_unknown(
    dep: Deployment, clock: FakeClock, keys: list[rsa.RSAPrivateKey]
) -> None:
    certificate = issue(dep, keys[1])
    clock.advance(days=94)
    assert renewal_info(dep, certificate).status == 404


def test_a_revoked_certificate_is_due_now_with_an_explanation(
    dep: Deployment, clock: FakeClock, keys: list[rsa.RSAPrivateKey]
) -> None:
    certificate = issue(dep, keys[1])
    dep.cas.revoke_serial(certificate.serial_number)
    clock.advance(hours=1)

    reply = renewal_info(dep, certificate)

    assert reply.status == 200
    assert window_of(reply.json()) == (clock(), clock() + renewal.MINIMUM_WIDTH)
    assert reply.json()["explanationURL"] == "http://127.0.0.1:18640/cas/renewal-info"
    explanation = call(dep.app, "GET", "/cas/renewal-info")
    assert explanation.status == 200
    assert explanation.header("Content-Type") == "text/plain; charset=utf-8"
    assert b"revoked" in explanation.body and b"31 days before it expires" in explanation.body


def test_an_operator_moves_windows_to_now_spread(
    dep: Deployment, clock: FakeClock, keys: list[rsa.RSAPrivateKey]
) -> None:
    moved, kept = issue(dep, keys[1], "moved"), issue(dep, keys[2], "kept")
    kept_before = renewal_info(dep, kept).json()
    clock.advance(days=3)
    unknown = moved.serial_number + 1

    reply = early(dep, {"serials": [str(moved.serial_number), unknown], "spread": 6 * 3600})

    assert reply.status == 200 and reply.header("Cache-Control") == "private"
    assert reply.json() == {
        "start": clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": (clock() + datetime.timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "moved": [str(moved.serial_number)],
        "unknown": [str(unknown)],
    }
    document = renewal_info(dep, moved).json()
    start, end = window_of(document)
    assert clock() <= start < end <= clock() + datetime.timedelta(hours=6)
    assert document["explanationURL"] == "http://127.0.0.1:18640/cas/renewal-info"
    assert renewal_info(dep, kept).json() == kept_before
    row = _renewal_rows(dep.tmp_path, moved.serial_number)
    user = x509util.load_certificate(dep.user_crt)
    assert row == (
        int(clock().timestamp()),
        int(clock().timestamp()) + 6 * 3600,
        f"CN=admin (serial {user.serial_number})",
        int(clock().timestamp()),
    )


def test_a_renewed_certificate_gets_a_default_window_again(
    dep: Deployment, clock: FakeClock, keys: list[rsa.RSAPrivateKey]
) -> None:
    old = issue(dep, keys[1])
    assert early(dep, {"serials": [old.serial_number], "spread": 3600}).status == 200
    clock.advance(minutes=30)

    renewed = x509util.load_certificate(
        dep.cas.renew(x509util.dump_certificate(old), make_csr(keys[2], "ignored"))
    )

    assert "explanationURL" not in renewal_info(dep, renewed).json()
    assert "explanationURL" in renewal_info(dep, old).json()


def test_renew_early_all_moves_what_was_issued_before_the_date(
    dep: Deployment, clock: FakeClock, keys: list[rsa.RSAPrivateKey]
) -> None:
    first = issue(dep, keys[1], "first")
    clock.advance(days=2)
    boundary = clock()
    clock.advance(days=2)
    second = issue(dep, keys[2], "second")
    clock.advance(days=1)

    before = int((boundary).timestamp())
    reply = early(dep, {"all": True, "before": before, "spread": 60})
    assert reply.status == 200 and reply.json()["moved"] == 1
    assert "explanationURL" in renewal_info(dep, first).json()
    assert "explanationURL" not in renewal_info(dep, second).json()

    reply = early(dep, {"all": True, "spread": 60})
    assert reply.status == 200 and reply.json()["moved"] == 2
    assert "explanationURL" in renewal_info(dep, second).json()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"serials": [1]}, b"spread must be a number of seconds"),
        ({"serials": [1], "spread": 0}, b"spread must be at least 1 second"),
        ({"serials": [1], "spread": 32 * 86400}, b"at most 31 days"),
        ({"serials": [1], "spread": "60"}, b"spread must be a number of seconds"),
        ({"serials": [1], "spread": 1e300}, b"spread must be a number of seconds"),
        ({"serials": [], "spread": 60}, b"serials must be a non-empty list"),
        ({"serials": [-1], "spread": 60}, b"serials must be integers >= 0"),
        ({"serials": [True], "spread": 60}, b"serials must be integers >= 0"),
        ({"serials": ["0x12"], "spread": 60}, b"serials must be integers >= 0"),
        ({"all": True, "serials": [1], "spread": 60}, b"Give serials or all"),
        ({"all": True, "before": "yesterday", "spread": 60}, b"before must be a number"),
        ({"spread": 60}, b"serials must be a non-empty list"),
    ],
)
def test_bad_early_renewal_requests_are_refused(
    dep: Deployment, payload: dict[str, object], reason: bytes
) -> None:
    reply = early(dep, payload)
    assert reply.status == 400
    assert reason in reply.body


def test_early_renewal_body_errors(dep: Deployment) -> None:
    for body, content_type in [(b"{", JSON), (b"[]", JSON), (b"{}", "text/plain")]:
        reply = call(
            dep.app,
            "PUT",
            "/cas/renewal-info",
            body,
            content_type=content_type,
            https=True,
            cert=dep.user_crt,
        )
        assert reply.status == 400, body


def test_early_renewal_needs_a_user_certificate(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    certificate = issue(dep, keys[1])
    body = {"serials": [certificate.serial_number], "spread": 60}
    assert early(dep, body, cert=False).status == 401
    service_pem = x509util.dump_certificate(certificate)
    reply = call(
        dep.app,
        "PUT",
        "/cas/renewal-info",
        json.dumps(body).encode(),
        content_type=JSON,
        https=True,
        cert=service_pem,
    )
    assert reply.status == 401
    assert "explanationURL" not in renewal_info(dep, certificate).json()


def test_certificates_stored_before_the_index_existed_are_backfilled(
    dep: Deployment, keys: list[rsa.RSAPrivateKey]
) -> None:
    certificate = issue(dep, keys[1])
    db = dep.tmp_path / "caucase.sqlite"
    connection = sqlite3.connect(db)
    connection.execute("DROP TABLE cas_renewal")
    connection.commit()
    connection.close()

    Storage(str(db), "cas").close()

    assert _renewal_rows(dep.tmp_path, certificate.serial_number, "not_after") == (
        int(certificate.not_valid_after_utc.timestamp()),
    )


def _renewal_rows(
    tmp_path: Path,
    serial: int,
    columns: str = "early_start, early_end, requested_by, requested_at",
) -> tuple[object, ...]:
    connection = sqlite3.connect(tmp_path / "caucase.sqlite")
    try:
        row = connection.execute(
            f"SELECT {columns} FROM cas_renewal WHERE serial = ?", (str(serial),)
        ).fetchone()
    finally:
        connection.close()
    assert row is not None
    return tuple(row)
