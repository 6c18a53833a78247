"""caucased's ACME door as an operator meets it: the credential actions of `caucase`, the
ACME options of caucased, and the HTTPS trust an ACME client needs (the published HTTPS
CA and the full chain in the handshake)."""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.helpers import caucase
from tests.support.acme_library import LibraryClient, directory_url, https_ca_bundle
from tests.support.servers import OUR_BIN, RunningServer, make_user, request, start_caucased


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_caucased([OUR_BIN / "caucased"], tmp_path_factory.mktemp("acme-caucased"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def user(server: RunningServer) -> Path:
    return make_user(server, server.workdir / "user.pem")


def test_a_user_mints_lists_and_revokes_credentials(
    server: RunningServer, user: Path, tmp_path: Path
) -> None:
    minted = caucase(server, tmp_path, "--user-key", user, "--new-acme-eab", "web.example",
                     "*.svc.example", "10.0.0.7")  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    (line,) = minted.stdout.splitlines()
    kid, key = line.split(" ")
    client = LibraryClient.register(
        directory_url(server), https_ca_bundle(server, tmp_path / "ca.pem"), (kid, key)
    )
    client.issue("a.svc.example", "web.example")

    listed = caucase(server, tmp_path, "--user-key", user, "--show-acme-eab")
    revoked = caucase(server, tmp_path, "--user-key", user, "--revoke-acme-eab", kid)
    after = caucase(server, tmp_path, "--user-key", user, "--show-acme-eab")

    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0] == "-- ACME external account bindings --"
    assert rows[1] == "kid | status | account | minted_at | minted_by | scope"
    (row,) = [line for line in rows if line.startswith(kid)]
    fields = row.split(" | ")
    assert fields[1] == "valid" and fields[2].isdigit() and "CN=user" in fields[4]
    assert fields[5] == "web.example *.svc.example 10.0.0.7"
    assert revoked.returncode == 0 and kid in revoked.stderr
    assert f"{kid} | revoked | " in after.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--new-acme-eab", "exa mple.com"], "Invalid scope"),
        (["--new-acme-eab", "straße.de"], "A-labels"),
        (["--revoke-acme-eab", "no-such-kid"], "404"),
    ],
)
def test_credential_errors_are_one_line(
    server: RunningServer, user: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    result = caucase(server, tmp_path, "--user-key", user, *args)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr


def test_credentials_need_a_user_key(server: RunningServer, tmp_path: Path) -> None:
    result = caucase(server, tmp_path, "--show-acme-eab")
    assert result.returncode == 1 and "--show-acme-eab" in result.stderr


def test_the_https_ca_file_verifies_caucased_with_its_full_chain(
    server: RunningServer, tmp_path: Path
) -> None:
    bundle = https_ca_bundle(server, tmp_path / "https-ca.pem")
    assert b'"getHTTPSCACertificate"' in request(server, "GET", "/")[2]
    context = ssl.create_default_context(cafile=str(bundle))
    with socket.create_connection((server.host, server.https_port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=server.host) as tls:  # fmt: skip
        assert tls.version()
    shown = subprocess.run(
        ["openssl", "s_client", "-connect", f"{server.host}:{server.https_port}", "-showcerts",
         "-verify_return_error", "-CAfile", str(bundle)],
        input="", capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shown.stdout.count("-----BEGIN CERTIFICATE-----") == 2
    assert "Verify return code: 0 (ok)" in shown.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--acme-open"], "--acme-open requires --acme-challenge"),
        (["--acme-challenge", "--acme-dns-server", "127.0.0.1:0"], "--acme-dns-server"),
        (["--acme-http-port", "70000"], "--acme-http-port"),
    ],
)
def test_bad_acme_options_are_usage_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    result = subprocess.run(
        [str(OUR_BIN / "caucased"), "--netloc", "127.0.0.1:1", "--db", str(tmp_path / "db"),
         *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2 and needle in result.stderr
    assert list(tmp_path.iterdir()) == []
