"""The CA layer's events (caucase.events): which change reports what, and the Recorder
that turns them into audit lines and metrics (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from caucase import events
from caucase.audit import AuditEvent, AuditLog, verify_audit_log
from caucase.cli.server_ops import ca_roles
from caucase.http.metrics import Metrics
from tests.conftest import FakeClock
from tests.support.ca_helpers import CRT_LIFE, ca_factory, generate_keys, make_csr, self_signed


class Collected:
    """An observer keeping what it hears, one list per notify call."""

    def __init__(self) -> None:
        self.calls: list[list[AuditEvent]] = []

    def ready(self) -> None:
        """Always ready."""

    def notify(self, *items: AuditEvent) -> None:
        self.calls.append(list(items))

    def names(self) -> list[list[str]]:
        return [[item.name for item in call] for call in self.calls]


@pytest.fixture(scope="module")
def leaf_keys() -> list[rsa.RSAPrivateKey]:
    return generate_keys(3)


def test_each_change_of_the_ca_reports_itself_once(
    tmp_path: Path, clock: FakeClock, leaf_keys: list[rsa.RSAPrivateKey]
) -> None:
    seen = Collected()
    ca = ca_factory(str(tmp_path / "ca.sqlite"), clock)(auto_sign_csr_amount=1, observer=seen)
    assert seen.names() == [["ca-generated"]]
    with events.acting("192.0.2.7"):
        auto = ca.append_csr(make_csr(leaf_keys[0], "auto", san="auto.example"))
        pending = ca.append_csr(make_csr(leaf_keys[1], "pending"))
        ca.append_csr(make_csr(leaf_keys[1], "pending"))  # the same CSR: nothing new
        user = self_signed(leaf_keys[2], "admin")
        events.set_user(user)
        crt_pem = ca.create_certificate(pending)
        rejected = ca.append_csr(make_csr(leaf_keys[2], "rejected"))
        ca.delete_pending_csr(rejected)
        renewed = ca.renew(crt_pem, make_csr(leaf_keys[2], "ignored"))
        ca.revoke_certificate(renewed, method="key-holder")
        ca.revoke_serial(12345)
    assert seen.names()[1:] == [
        ["csr-received", "csr-auto-signed"],
        ["csr-received"],
        ["csr-signed"],
        ["csr-received"],
        ["csr-rejected"],
        ["crt-renewed"],
        ["crt-revoked"],
        ["crt-revoked"],
    ]
    received = seen.calls[1][0].fields
    assert received["csr_id"] == str(auto) and received["client"] == "192.0.2.7"
    assert received["sans"] == ["DNSName:auto.example"] and received["subject"] == "CN=auto"
    assert received["key_type"] == "RSA-2048"
    auto_crt = x509.load_pem_x509_certificate(ca.get_certificate(auto))
    auto_signed = seen.calls[1][1].fields
    assert (auto_signed["serial"], auto_signed["subject"]) == (
        str(auto_crt.serial_number), "CN=auto",
    )  # fmt: skip
    signed = seen.calls[3][0].fields
    assert signed["by_serial"] == str(user.serial_number) and signed["with_template"] is False
    assert seen.calls[7][0].fields["by_serial"] is None  # the key holder is no user
    by_serial = seen.calls[8][0].fields
    assert (by_serial["method"], by_serial["serial"], by_serial["subject"]) == (
        "serial", "12345", None,
    )  # fmt: skip
    renewed_crt = x509.load_pem_x509_certificate(renewed)
    assert seen.calls[6][0].fields["serial"] == str(renewed_crt.serial_number)


def test_the_recorder_writes_then_counts(tmp_path: Path, clock: FakeClock) -> None:
    log = AuditLog(str(tmp_path / "audit.log"), clock)
    metrics = Metrics(clock=clock)
    recorder = events.Recorder(log, metrics)
    with events.acting("192.0.2.1"):
        recorder.notify(events.rejected("cas", 7))
    recorder.notify(events.revoked("cau", 9, None, "serial"))
    log.close()
    assert verify_audit_log([log.path]).ok
    value = metrics.registry.get_sample_value
    assert value("caucase_csr_rejected_total", {"authority": "cas"}) == 1
    assert value("caucase_certificates_revoked_total", {"authority": "cau"}) == 1


def test_a_rollover_shows_a_next_ca_until_it_signs(tmp_path: Path, clock: FakeClock) -> None:
    """The roles caucased's metrics give each CA certificate (passive phase: ``next``)."""
    ca = ca_factory(str(tmp_path / "ca.sqlite"), clock)()
    assert [role.role for role in ca_roles(ca, CRT_LIFE, clock())] == ["signing"]
    clock.advance(days=CRT_LIFE + 1)
    ca.start_rollover()
    assert [role.role for role in ca_roles(ca, CRT_LIFE, clock())] == ["signing", "next"]
    clock.advance(days=CRT_LIFE + 1)
    assert [role.role for role in ca_roles(ca, CRT_LIFE, clock())] == ["previous", "signing"]
