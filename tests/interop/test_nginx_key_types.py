"""nginx serving an ECDSA service certificate kept by our caucase-updater, checking EC and
Ed25519 client certificates against an ECDSA CA and its CRL, and refusing a client once it
revoked its own certificate by key."""

from __future__ import annotations

import signal
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from caucase.crypto import keys, x509util
from tests.interop.test_nginx import DEADLINE, NGINX, NGINX_CONF, _serves, get, holds_certificate
from tests.support.servers import OUR_BIN, free_port_pair, start_caucased
from tests.support.wait import poll
from tests.support.wsgi_support import name

pytestmark = pytest.mark.slow


def write_key_and_csr(key_path: Path, csr_path: Path, key_type: keys.KeyType, cn: str) -> None:
    key = keys.generate(keys.KeySpec(key_type))
    builder = x509.CertificateSigningRequestBuilder().subject_name(name(cn))
    key_path.write_bytes(keys.dump_private_key(key))
    key_path.chmod(0o600)
    csr_path.write_bytes(
        x509util.dump_certificate_request(builder.sign(key, keys.signature_hash(key)))
    )


def test_nginx_with_an_ec_ca_ec_service_and_ec_clients(tmp_path: Path) -> None:
    caucased = start_caucased(
        [OUR_BIN / "caucased"],
        tmp_path / "ca",
        ["--key-type", "ec-p256", "--service-auto-approve-count", "3"],
    )
    work = tmp_path / "nginx"
    (work / "tmp").mkdir(parents=True)
    port = free_port_pair()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work, port=port))
    nginx_cmd = f"{NGINX} -c {conf} -p {work}"
    url = caucased.http_url
    stores = ["--ca-crt", str(work / "cas.crt.pem"), "--crl", str(work / "cas.crl.pem")]
    write_key_and_csr(work / "nginx.pem", work / "nginx.csr.pem", keys.KeyType.EC_P256, "svc")
    updater = subprocess.Popen(
        [
            str(OUR_BIN / "caucase-updater"),
            "--ca-url", url,
            "--cas-ca", str(work / "cas.crt.pem"),
            "--ca", str(work / "cas.crt.pem"),
            "--crl", str(work / "cas.crl.pem"),
            "--crt", str(work / "nginx.pem"),
            "--csr", str(work / "nginx.csr.pem"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    nginx = None
    try:
        poll(lambda: holds_certificate(work / "nginx.pem"), "the server certificate", DEADLINE)
        poll(lambda: (work / "cas.crl.pem").exists(), "the CRL file", DEADLINE)
        clients = {}
        for key_type in (keys.KeyType.EC_P384, keys.KeyType.ED25519):
            pem = work / f"{key_type.value}.pem"
            write_key_and_csr(pem, work / f"{key_type.value}.csr", key_type, key_type.value)
            sent = subprocess.run(
                [str(OUR_BIN / "caucase"), "--ca-url", url, *stores,
                 "--send-csr", str(work / f"{key_type.value}.csr")],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            subprocess.run(
                [str(OUR_BIN / "caucase"), "--ca-url", url, *stores,
                 "--get-crt", sent.stdout.split()[0], str(pem)],
                capture_output=True, check=True,
            )  # fmt: skip
            clients[key_type] = pem

        nginx = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(work)])
        poll(lambda: (work / "nginx.pid").exists(), "nginx to start", DEADLINE)
        poll(lambda: _serves(port), "nginx to listen", DEADLINE)

        served_pem = ssl.get_server_certificate(("127.0.0.1", port)).encode()
        served = x509.load_pem_x509_certificate(served_pem)
        assert keys.kind(served.public_key()) is keys.KeyType.EC_P256
        ca_crt = x509.load_pem_x509_certificate((work / "cas.crt.pem").read_bytes())
        assert keys.kind(ca_crt.public_key()) is keys.KeyType.EC_P256
        for key_type, pem in clients.items():
            status, body = get(port, pem)
            assert (status, f"CN={key_type.value}".encode() in body) == (200, True), body

        revoked = clients[keys.KeyType.EC_P384]
        subprocess.run(
            [str(OUR_BIN / "caucase"), "--ca-url", url, *stores,
             "--revoke-crt", str(revoked), "", "--on-renew", f"{nginx_cmd} -s reload"],
            capture_output=True, check=True,
        )  # fmt: skip
        refusals: list[bytes] = []

        def refused() -> bool:
            status, body = get(port, revoked)
            if status == 400:
                refusals.append(body)
            return bool(refusals)

        poll(refused, "nginx to refuse the revoked client", DEADLINE)
        assert b"SSL certificate error" in refusals[0]
        assert get(port, clients[keys.KeyType.ED25519])[0] == 200
    finally:
        updater.send_signal(signal.SIGTERM)
        updater.wait(30)
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(30)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()
        caucased.stop()
