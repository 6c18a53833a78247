"""Real ACME clients against caucased: certbot (EAB scope: no challenge), lego and uacme
(names outside the scope, validated by caucased's http-01 and dns-01 through
--acme-challenge, names resolved by pebble-challtestsrv given as --acme-dns-server), and
tls-alpn-01 with the tests' own responder. Each certificate is served by openssl s_server
and verified against the CAS CA and CRL that plain `caucase` fetched, and linted by
pkilint; each revocation lands in that CRL.

One caucased and one DNS server serve the whole module (the clients run one after the
other, each in a directory of its own): starting them per test would cost more than the
tests themselves.
"""

from __future__ import annotations

import datetime
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from acme import challenges, messages
from cryptography import x509
from josepy import b64

from tests.support.acme_clients import (
    EAB,
    Certbot,
    Lego,
    Uacme,
    hook_command,
    serving_webroot,
)
from tests.support.acme_library import (
    LibraryClient,
    directory_url,
    https_ca_bundle,
    make_csr,
    mint_eab,
)
from tests.support.challtestsrv import ChallTestSrv, running_challtestsrv
from tests.support.faketime import FakeTime, Role
from tests.support.openssl_tls import leaf_file, openssl_verify, served_verification
from tests.support.servers import OUR_BIN, RunningServer, free_port, make_user, start_caucased
from tests.support.tls_alpn_responder import challenge_certificate, tls_alpn_responder

pytestmark = [pytest.mark.slow]

SCOPE = "*.svc.test"


@dataclass
class Lab:
    server: RunningServer
    dns: ChallTestSrv
    user: Path
    ca_bundle: Path
    http_port: int
    tls_alpn_port: int
    workdir: Path

    @property
    def directory(self) -> str:
        return directory_url(self.server)

    def credential(self) -> EAB:
        kid, key = mint_eab(self.server, self.user, SCOPE)
        return EAB(kid, key)

    def hook(self, flavour: str, *, webroot: Path | None = None, accept: str = "dns-01") -> Path:
        return hook_command(
            self.workdir, flavour, self.dns.management_url, webroot=webroot, accept=accept
        )

    def cas_stores(self) -> tuple[Path, Path]:
        """The CAS CA and CRL, fetched by plain `caucase` as any relying party does."""
        stores = self.workdir / "relying-party"
        stores.mkdir(exist_ok=True)
        subprocess.run(
            [str(OUR_BIN / "caucase"), "--ca-url", self.server.http_url],
            cwd=stores, check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return stores / "cas.crt.pem", stores / "cas.crl.pem"

    def check(self, chain: Path, key: Path, name: str) -> x509.Certificate:
        """Served, verified with its CRL, linted: the certificate any TLS peer would take."""
        ca, crl = self.cas_stores()
        verified = openssl_verify(chain, ca, crl, self.workdir)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert served_verification(chain, key, ca, crl, name) == "Verify return code: 0 (ok)"
        linted = subprocess.run(
            [str(OUR_BIN / "lint_pkix_cert"), "lint", "-s", "WARNING",
             str(leaf_file(chain, self.workdir))],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (linted.stdout + linted.stderr).strip() == ""
        return x509.load_pem_x509_certificates(chain.read_bytes())[0]

    def assert_revoked(self, certificate: x509.Certificate) -> x509.RevokedCertificate:
        _, crl_path = self.cas_stores()
        end = b"-----END X509 CRL-----"
        blocks = crl_path.read_bytes().split(end)[:-1]
        crls = [x509.load_pem_x509_crl(block.strip() + b"\n" + end) for block in blocks]
        entries = [crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
                   for crl in crls]  # fmt: skip
        found = [entry for entry in entries if entry is not None]
        assert found, f"serial {certificate.serial_number:#x} not in the CAS CRL"
        linted = subprocess.run(
            [str(OUR_BIN / "lint_crl"), "lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING",
             str(crl_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (linted.stdout + linted.stderr).strip() == ""
        return found[0]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    workdir = tmp_path_factory.mktemp("acme-clients")
    http_port, tls_alpn_port = free_port(), free_port()
    with running_challtestsrv(workdir / "challtestsrv.log", http01=False, tlsalpn01=False) as dns:
        server = start_caucased(
            [OUR_BIN / "caucased"], workdir / "caucased",
            ["--acme-challenge", "--acme-dns-server", dns.dns_server,
             "--acme-http-port", str(http_port), "--acme-tls-alpn-port", str(tls_alpn_port)],
        )  # fmt: skip
        try:
            user = make_user(server, workdir / "user.pem")
            bundle = https_ca_bundle(server, workdir / "https-ca.crt.pem")
            yield Lab(server, dns, user, bundle, http_port, tls_alpn_port, workdir)
        finally:
            server.stop()


def test_certbot_in_scope_without_challenge_renews_and_revokes(
    lab: Lab, certbot_bin: Path
) -> None:
    certbot = Certbot(certbot_bin, lab.workdir / "certbot", lab.directory, lab.ca_bundle)
    eab = lab.credential()

    certbot.certonly_http("a.svc.test", lab.http_port, eab)
    first = lab.check(certbot.certificate("a.svc.test"), certbot.private_key("a.svc.test"),
                      "a.svc.test")  # fmt: skip
    assert not certbot.performed_challenges()

    certbot.renew("a.svc.test", lab.http_port)
    renewed = lab.check(certbot.certificate("a.svc.test"), certbot.private_key("a.svc.test"),
                        "a.svc.test")  # fmt: skip
    assert renewed.serial_number != first.serial_number

    certbot.revoke("a.svc.test", reason="superseded")
    entry = lab.assert_revoked(renewed)
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.superseded
    )

    certbot.certonly_http("k.svc.test", lab.http_port, eab)
    by_key = x509.load_pem_x509_certificates(certbot.certificate("k.svc.test").read_bytes())[0]
    certbot.revoke_with_key(certbot.certificate("k.svc.test"), certbot.private_key("k.svc.test"))
    lab.assert_revoked(by_key)


def test_certbot_renews_early_only_when_renewal_info_says_so(lab: Lab, certbot_bin: Path) -> None:
    """certbot asks renewalInfo (RFC 9773) at `renew`: not due in a fresh certificate's
    window, due once a user pulled the window forward with `caucase --renew-early`.

    certbot then waits for the 6-hour Retry-After before asking again: its second run is
    on a clock 7 hours ahead (libfaketime), still weeks before the 30-days-before-expiry
    rule would renew by itself."""
    certbot = Certbot(certbot_bin, lab.workdir / "certbot-ari", lab.directory, lab.ca_bundle)
    certbot.certonly_http("ari.svc.test", lab.http_port, lab.credential())
    chain = certbot.certificate("ari.svc.test")
    first = x509.load_pem_x509_certificates(chain.read_bytes())[0]

    certbot.renew("ari.svc.test", lab.http_port, force=False)
    assert x509.load_pem_x509_certificates(chain.read_bytes())[0] == first
    assert "not yet due for renewal" in certbot.log.read_text(errors="replace")

    moved = subprocess.run(
        [str(OUR_BIN / "caucase"), "--ca-url", lab.server.http_url, "--user-key", lab.user,
         "--renew-early", hex(first.serial_number), "--spread", "0.01"],
        cwd=lab.workdir, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    later = FakeTime(lab.workdir / "ari-clock", offset=datetime.timedelta(hours=7))
    certbot.renew("ari.svc.test", lab.http_port, force=False, env=later.env(Role.CLIENT))

    renewed = lab.check(chain, certbot.private_key("ari.svc.test"), "ari.svc.test")
    assert renewed.serial_number != first.serial_number


def test_lego_outside_the_scope_with_http_01_and_dns_01(lab: Lab) -> None:
    lego = Lego(lab.workdir / "lego", lab.directory, lab.ca_bundle)
    eab = lab.credential()

    log = lego.run_http("b.outside.test", lab.http_port, eab)
    first = lab.check(lego.certificate("b.outside.test"), lego.private_key("b.outside.test"),
                      "b.outside.test")  # fmt: skip
    assert "skipping challenge" not in log

    lego.renew_http("b.outside.test", lab.http_port, eab)
    renewed = lab.check(lego.certificate("b.outside.test"), lego.private_key("b.outside.test"),
                        "b.outside.test")  # fmt: skip
    assert renewed.serial_number != first.serial_number

    lego.revoke("b.outside.test", eab)
    lab.assert_revoked(renewed)

    lego.run_dns("e.outside.test", lab.hook("lego"), lab.dns.dns_server, eab)
    lab.check(lego.certificate("e.outside.test"), lego.private_key("e.outside.test"),
              "e.outside.test")  # fmt: skip


def test_uacme_outside_the_scope_with_http_01_and_dns_01(lab: Lab) -> None:
    uacme = Uacme(lab.workdir / "uacme", lab.directory, lab.ca_bundle)
    webroot = lab.workdir / "webroot"
    uacme.new_account(lab.credential())

    with serving_webroot(webroot, lab.http_port):
        uacme.issue("c.outside.test", lab.hook("uacme", webroot=webroot, accept="http-01"))
        first = lab.check(uacme.certificate("c.outside.test"),
                          uacme.private_key("c.outside.test"), "c.outside.test")  # fmt: skip
        uacme.issue("c.outside.test", lab.hook("uacme", webroot=webroot, accept="http-01"),
                    force=True)  # fmt: skip
    renewed = lab.check(uacme.certificate("c.outside.test"), uacme.private_key("c.outside.test"),
                        "c.outside.test")  # fmt: skip
    assert renewed.serial_number != first.serial_number

    uacme.revoke("c.outside.test")
    lab.assert_revoked(renewed)

    uacme.issue("f.outside.test", lab.hook("uacme", accept="dns-01"))
    lab.check(uacme.certificate("f.outside.test"), uacme.private_key("f.outside.test"),
              "f.outside.test")  # fmt: skip


def test_tls_alpn_01_with_the_tests_own_responder(lab: Lab) -> None:
    """lego 4.9 cannot answer tls-alpn-01 on loopback: certbot's acme library and the
    tests' responder play the client."""
    kid, key = mint_eab(lab.server, lab.user, SCOPE)
    client = LibraryClient.register(lab.directory, lab.ca_bundle, (kid, key))
    acme, account_key = client.acme, client.acme.net.key
    cert_key, csr = make_csr("alpn.outside.test")
    order = acme.new_order(csr)
    (authorization,) = order.authorizations
    # acme 5 knows tls-alpn-01 no more: the challenge is read as unrecognized.
    (challenge,) = [
        item for item in authorization.body.challenges
        if item.chall.to_partial_json().get("type") == "tls-alpn-01"
    ]  # fmt: skip
    token = challenge.chall.to_partial_json()["token"]
    key_authorization = f"{token}.{b64.b64encode(account_key.thumbprint()).decode()}"
    answer = challenge_certificate(["alpn.outside.test"], key_authorization)
    # Any JSON object starts the validation (RFC 8555 7.5.1 has clients send {}).
    response = challenges.HTTP01Response(key_authorization=key_authorization)

    with tls_alpn_responder(*answer, port=lab.tls_alpn_port) as responder:
        acme.answer_challenge(challenge, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=60)
        order = acme.poll_authorizations(order, deadline)

    assert responder.server_names == ["alpn.outside.test"]
    assert order.authorizations[0].body.status == messages.STATUS_VALID
    finalized = acme.begin_finalization(order)
    chain = acme._post_as_get(finalized.body.certificate).text
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    assert leaf.public_key() == cert_key.public_key()
