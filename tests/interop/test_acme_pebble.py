"""The real-client harness proven against pebble, before caucased speaks ACME: certbot,
lego and uacme each get certificates with EAB over http-01 and dns-01 (through
pebble-challtestsrv), renew them and revoke them, with the flags of acme-clients.md."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.acme_clients import EAB, Certbot, Lego, Uacme, hook_command, serving_webroot
from tests.support.challtestsrv import ChallTestSrv, running_challtestsrv
from tests.support.pebble import Pebble, ServerPKI, running_pebble
from tests.support.servers import free_port

pytestmark = pytest.mark.slow


@dataclass
class Lab:
    pebble: Pebble
    dns: ChallTestSrv
    pki: ServerPKI
    eab: EAB
    http_port: int
    workdir: Path

    def hook(self, flavour: str, *, webroot: Path | None = None, accept: str = "dns-01") -> Path:
        return hook_command(
            self.workdir, flavour, self.dns.management_url, webroot=webroot, accept=accept
        )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    pki = ServerPKI.create(tmp_path / "pki")
    eab = EAB.generate()
    http_port = free_port()
    dns_log = tmp_path / "challtestsrv.log"
    with running_challtestsrv(dns_log, http01=False, tlsalpn01=False) as dns, running_pebble(
        tmp_path / "pebble", pki, dns_server=dns.dns_server, http_port=http_port,
        tls_port=free_port(), eab_keys={eab.kid: eab.hmac_key},
    ) as pebble:  # fmt: skip
        yield Lab(pebble, dns, pki, eab, http_port, tmp_path)


def leaf_of(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificates(path.read_bytes())[0]


def assert_issued_by_pebble(lab: Lab, path: Path, name: str) -> x509.Certificate:
    """The leaf names `name` and chains to pebble's root (checked by openssl)."""
    chain = x509.load_pem_x509_certificates(path.read_bytes())
    names = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [name]
    root = lab.workdir / "pebble-root.pem"
    root.write_bytes(lab.pebble.root_pem())
    leaf, intermediates = lab.workdir / "leaf.pem", lab.workdir / "intermediates.pem"
    pems = path.read_bytes().split(b"-----END CERTIFICATE-----")
    leaf.write_bytes(pems[0] + b"-----END CERTIFICATE-----\n")
    intermediates.write_bytes(b"-----END CERTIFICATE-----".join(pems[1:]))
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", root, "-untrusted", intermediates, leaf],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return chain[0]


def test_certbot_against_pebble(lab: Lab, certbot_bin: Path) -> None:
    certbot = Certbot(certbot_bin, lab.workdir / "certbot", lab.pebble.directory_url, lab.pki.ca)

    certbot.certonly_http("a.svc.test", lab.http_port, lab.eab)
    first = assert_issued_by_pebble(lab, certbot.certificate("a.svc.test"), "a.svc.test")
    assert certbot.performed_challenges()

    certbot.renew("a.svc.test", lab.http_port)
    renewed = assert_issued_by_pebble(lab, certbot.certificate("a.svc.test"), "a.svc.test")
    assert renewed.serial_number != first.serial_number

    certbot.revoke("a.svc.test")
    assert lab.pebble.certificate_status(renewed.serial_number) == "Revoked"

    certbot.certonly_dns("d.svc.test", lab.hook("certbot"), lab.eab)
    by_dns = assert_issued_by_pebble(lab, certbot.certificate("d.svc.test"), "d.svc.test")

    certbot.revoke_with_key(certbot.certificate("d.svc.test"), certbot.private_key("d.svc.test"))
    assert lab.pebble.certificate_status(by_dns.serial_number) == "Revoked"


def test_lego_against_pebble(lab: Lab) -> None:
    lego = Lego(lab.workdir / "lego", lab.pebble.directory_url, lab.pki.ca)

    lego.run_http("b.svc.test", lab.http_port, lab.eab)
    first = assert_issued_by_pebble(lab, lego.certificate("b.svc.test"), "b.svc.test")

    lego.renew_http("b.svc.test", lab.http_port, lab.eab)
    renewed = assert_issued_by_pebble(lab, lego.certificate("b.svc.test"), "b.svc.test")
    assert renewed.serial_number != first.serial_number

    lego.revoke("b.svc.test", lab.eab)
    assert lab.pebble.certificate_status(renewed.serial_number) == "Revoked"

    lego.run_dns("e.svc.test", lab.hook("lego"), lab.dns.dns_server, lab.eab)
    assert_issued_by_pebble(lab, lego.certificate("e.svc.test"), "e.svc.test")


def test_uacme_against_pebble(lab: Lab) -> None:
    uacme = Uacme(lab.workdir / "uacme", lab.pebble.directory_url, lab.pki.ca)
    webroot = lab.workdir / "webroot"
    http_hook = lab.hook("uacme", webroot=webroot, accept="http-01")
    uacme.new_account(lab.eab)

    with serving_webroot(webroot, lab.http_port):
        uacme.issue("c.svc.test", http_hook)
        first = assert_issued_by_pebble(lab, uacme.certificate("c.svc.test"), "c.svc.test")
        uacme.issue("c.svc.test", http_hook, force=True)
    renewed = assert_issued_by_pebble(lab, uacme.certificate("c.svc.test"), "c.svc.test")
    assert renewed.serial_number != first.serial_number

    uacme.revoke("c.svc.test")
    assert lab.pebble.certificate_status(renewed.serial_number) == "Revoked"

    uacme.issue("f.svc.test", lab.hook("uacme", accept="dns-01"))
    assert_issued_by_pebble(lab, uacme.certificate("f.svc.test"), "f.svc.test")
