"""A real TLS server trusting caucase: nginx with a certificate kept by caucase-updater and
client certificates checked against the CAS CA and CRL that the caucase tools maintain."""

from __future__ import annotations

import http.client
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.servers import (
    RunningServer,
    client_context,
    free_port_pair,
    key_pem,
    make_key_and_csr,
    start_caucased,
)
from tests.support.wait import poll

pytestmark = pytest.mark.slow
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DEADLINE = 60.0

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {dir}/nginx.pem;
        ssl_certificate_key {dir}/nginx.pem;
        ssl_client_certificate {dir}/cas.crt.pem;
        ssl_crl {dir}/cas.crl.pem;
        ssl_verify_client on;
        location / {{ return 200 "hello $ssl_client_s_dn\\n"; }}
    }}
}}
"""


def holds_certificate(path: Path) -> bool:
    return path.exists() and b"BEGIN CERTIFICATE" in path.read_bytes()


def get(port: int, client_pem: Path | None) -> tuple[int, bytes]:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", port, context=client_context(client_pem), timeout=30
    )
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture
def caucased(tools_bin: Path, tmp_path: Path) -> Iterator[RunningServer]:
    server = start_caucased(
        [tools_bin / "caucased"], tmp_path / "ca", ["--service-auto-approve-count", "2"]
    )
    yield server
    server.stop()


def test_nginx_trusts_caucase_and_honours_revocation(
    tools_bin: Path, caucased: RunningServer, tmp_path: Path
) -> None:
    work = tmp_path / "nginx"
    (work / "tmp").mkdir(parents=True)
    port = free_port_pair()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=work, port=port))
    nginx_cmd = f"{NGINX} -c {conf} -p {work}"
    url = caucased.http_url
    stores = ["--ca-crt", str(work / "cas.crt.pem"), "--crl", str(work / "cas.crl.pem")]

    # The server certificate comes from caucase-updater, which bootstraps it from a CSR.
    server_key, server_csr = make_key_and_csr("127.0.0.1")
    (work / "nginx.pem").write_bytes(key_pem(server_key))
    (work / "nginx.csr.pem").write_bytes(server_csr)
    updater = subprocess.Popen(
        [
            str(tools_bin / "caucase-updater"),
            "--ca-url", url,
            "--cas-ca", str(work / "cas.crt.pem"),
            "--ca", str(work / "cas.crt.pem"),
            "--crl", str(work / "cas.crl.pem"),
            "--crt", str(work / "nginx.pem"),
            "--csr", str(work / "nginx.csr.pem"),
            "--on-renew", f"test ! -s {work}/nginx.pid || {nginx_cmd} -s reload",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    nginx = None
    try:
        poll(lambda: holds_certificate(work / "nginx.pem"), "the server certificate", DEADLINE)
        poll(lambda: holds_certificate(work / "cas.crt.pem"), "the CA file", DEADLINE)
        poll(lambda: (work / "cas.crl.pem").exists(), "the CRL file", DEADLINE)

        # A client certificate, obtained with the one-shot client.
        client_key, client_csr = make_key_and_csr("client")
        (work / "client.pem").write_bytes(key_pem(client_key))
        (work / "client.csr.pem").write_bytes(client_csr)
        sent = subprocess.run(
            [str(tools_bin / "caucase"), "--ca-url", url, *stores,
             "--send-csr", str(work / "client.csr.pem")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        csr_id = sent.stdout.split()[0]
        subprocess.run(
            [str(tools_bin / "caucase"), "--ca-url", url, *stores,
             "--get-crt", csr_id, str(work / "client.pem")],
            capture_output=True, check=True,
        )  # fmt: skip

        nginx = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(work)])
        poll(lambda: (work / "nginx.pid").exists(), "nginx to start", DEADLINE)
        poll(lambda: _serves(port), "nginx to listen", DEADLINE)

        status, body = get(port, work / "client.pem")
        assert status == 200, body
        assert b"CN=client" in body
        status, body = get(port, None)
        assert status == 400 and b"No required SSL certificate" in body

        served = ssl.get_server_certificate(("127.0.0.1", port)).encode()
        issued = x509.load_pem_x509_certificates((work / "nginx.pem").read_bytes())[0]
        assert x509.load_pem_x509_certificate(served) == issued

        # Revoke the client by key possession; the same run refreshes the CRL file and its
        # hook reloads nginx, which then refuses the client.
        subprocess.run(
            [str(tools_bin / "caucase"), "--ca-url", url, *stores,
             "--revoke-crt", str(work / "client.pem"), "",
             "--on-renew", f"{nginx_cmd} -s reload"],
            capture_output=True, check=True,
        )  # fmt: skip
        # A reload is graceful: old workers may answer a little longer, so poll.
        refusals: list[bytes] = []

        def refused() -> bool:
            status, body = get(port, work / "client.pem")
            if status == 400:
                refusals.append(body)
            return bool(refusals)

        poll(refused, "nginx to refuse the client", DEADLINE)
        assert b"SSL certificate error" in refusals[0]
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


def _serves(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
