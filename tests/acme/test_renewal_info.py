"""RFC 9773 certIDs and renewalInfo answers."""

from __future__ import annotations

import datetime
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from caucase.acme import problems
from caucase.acme.renewal_info import CertID, RenewalInfo
from caucase.renewal import RenewalWindow


def test_the_rfc_example_cert_id() -> None:
    """RFC 9773 4.1: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4, serial
    00:87:65:43:21."""
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    cert_id = CertID(aki, 0x87654321)

    assert str(cert_id) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    assert CertID.parse("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE") == cert_id


@pytest.mark.parametrize("serial", [0, 1, 127, 128, 255, 256, 2**159 - 1, 2**159])
def test_cert_ids_round_trip(serial: int) -> None:
    cert_id = CertID(b"\x01\x02", serial)
    assert CertID.parse(str(cert_id)) == cert_id


def test_cert_id_of_a_certificate() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.datetime.now(datetime.timezone.utc)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(0xF00D).not_valid_before(now).not_valid_after(now + datetime.timedelta(1))
        .add_extension(aki, critical=False).sign(key, hashes.SHA256())
    )  # fmt: skip

    cert_id = CertID.of(certificate)

    assert cert_id == CertID(aki.key_identifier or b"", 0xF00D)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        ".AIdlQyE",
        "aYhb.",
        "aYhb.AIdl=QyE",
        "aYhb.gA",
        "aYhb.AAE",
        "a+b.AQ",
        "aYhb.AQ.AQ",
    ],
)
def test_bad_cert_ids_are_malformed(text: str) -> None:
    """Among them a negative serial (gA) and a non-minimal one (AAE)."""
    with pytest.raises(problems.Malformed):
        CertID.parse(text)


def test_renewal_info_answer_is_json_with_retry_after() -> None:
    start = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    info = RenewalInfo(RenewalWindow(start, start + datetime.timedelta(days=2)))

    assert json.loads(json.dumps(info.to_json())) == {
        "suggestedWindow": {"start": "2026-12-01T00:00:00Z", "end": "2026-12-03T00:00:00Z"}
    }
    assert ("Content-Type", "application/json") in info.headers()
    assert ("Retry-After", "21600") in info.headers()
