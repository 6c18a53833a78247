"""CaucaseClient and the store updates, over real sockets against real servers."""

from __future__ import annotations

import datetime
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from caucase import __version__
from caucase.client import USER_AGENT, CaucaseClient
from caucase.clock import utcnow
from caucase.crypto import keys, pemfile, x509util
from caucase.crypto.envelope import sign_envelope
from caucase.exceptions import (
    CaucaseError,
    CaucaseHTTPError,
    CaucaseNetworkError,
    PemFileError,
)
from caucase.ports import https_port_for
from caucase.trust_stores import (
    load_valid_ca_list,
    update_ca_store,
    update_crl_store,
    verify_ca_chain,
)
from tests.support.servers import (
    RunningServer,
    free_port_pair,
    make_key_and_csr,
    make_user,
)


@pytest.fixture(scope="module")
def user_key(caucased: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_user(caucased, tmp_path_factory.mktemp("user") / "user.pem")


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers with the server's `status`, and the body `routes` gives for the path
    (`[]` otherwise), remembering the request headers."""

    def do_GET(self) -> None:
        self.server.seen_headers.append(dict(self.headers))  # type: ignore[attr-defined]
        status = self.server.status  # type: ignore[attr-defined]
        body = self.server.routes.get(self.path, b"[]")  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def _recording_server(
    port: int, status: int, routes: dict[str, bytes] | None = None
) -> http.server.HTTPServer:
    server = http.server.HTTPServer(("127.0.0.1", port), _Recorder)
    server.seen_headers = []  # type: ignore[attr-defined]
    server.status = status  # type: ignore[attr-defined]
    server.routes = routes or {}  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_https_port_is_443_for_80_else_next_port() -> None:
    assert https_port_for(80) == 443
    assert https_port_for(8000) == 8001


def test_requests_carry_the_user_agent() -> None:
    recorder = _recording_server(free_port_pair(), 200)
    try:
        with CaucaseClient(f"http://127.0.0.1:{recorder.server_port}/cas") as client:
            client.get_ca_certificate()
    finally:
        recorder.shutdown()
        recorder.server_close()

    assert recorder.seen_headers[0]["User-Agent"] == USER_AGENT == "caucase " + __version__  # type: ignore[attr-defined]


def test_scheme_is_ignored(caucased: RunningServer) -> None:
    with CaucaseClient(f"https://{caucased.netloc}/cas") as client:
        assert x509util.load_certificate(client.get_ca_certificate())


def test_csr_round_trip_and_pending_certificate(caucased: RunningServer) -> None:
    _, csr = make_key_and_csr("client-roundtrip")
    with CaucaseClient(caucased.http_url + "/cas") as client:
        identifier = client.create_csr(csr)

        assert client.create_csr(csr) == identifier
        assert client.get_csr(identifier) == csr
        with pytest.raises(CaucaseHTTPError) as raised:
            client.get_certificate(identifier)

    assert raised.value.status == 404


def test_authenticated_call_without_user_key_is_401(caucased: RunningServer) -> None:
    with (
        CaucaseClient(caucased.http_url + "/cas") as client,
        pytest.raises(CaucaseHTTPError) as raised,
    ):
        client.get_pending_csr_list()

    assert raised.value.status == 401


def test_sign_renew_revoke_with_user_key(caucased: RunningServer, user_key: Path) -> None:
    key, csr = make_key_and_csr("client-renew")
    with CaucaseClient(caucased.http_url + "/cas", str(user_key)) as client:
        identifier = client.create_csr(csr)
        assert identifier in [int(entry["id"]) for entry in client.get_pending_csr_list()]
        client.create_certificate(identifier)
        old = x509util.load_certificate(client.get_certificate(identifier))

        new_key, new_pem = client.renew_certificate(old, key, 2048)
        new = x509util.load_certificate(new_pem)
        client.revoke_certificate(new_pem, new_key)
        crl_list = [x509util.load_crl(pem) for pem in client.get_crl_list()]

    assert new.subject == old.subject
    assert isinstance(new_key, rsa.RSAPrivateKey) and new_key.key_size == 2048
    assert keys.same_public_key(new, new_key)
    assert any(crl.get_revoked_certificate_by_serial_number(new.serial_number) for crl in crl_list)


def test_revoke_serial_appears_in_crl_by_authority(
    caucased: RunningServer, user_key: Path
) -> None:
    serial = 0xC11E27
    with CaucaseClient(caucased.http_url + "/cas", str(user_key)) as client:
        client.revoke_serial(serial)
        ca = x509util.load_certificate(client.get_ca_certificate())
        crl = x509util.load_crl(client.get_crl(x509util.authority_key_id_int(ca)))

    assert crl.get_revoked_certificate_by_serial_number(serial) is not None


@pytest.mark.parametrize("url", ["127.0.0.1:8000/cas", "localhost:8000/cas", "ftp://h/cas"])
def test_url_without_http_scheme_is_refused(url: str) -> None:
    with pytest.raises(CaucaseError, match="is not an http:// or https:// URL"):
        CaucaseClient(url)


def test_unloadable_user_key_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "user.pem"
    bad.write_text("garbage")

    with pytest.raises(PemFileError, match="Failed to load user key"):
        CaucaseClient("http://127.0.0.1:1/cas", str(bad))


def test_unreachable_server_is_one_network_error() -> None:
    port = free_port_pair()
    with pytest.raises(CaucaseNetworkError) as raised:
        CaucaseClient(f"http://127.0.0.1:{port}/cas").get_ca_certificate()

    assert raised.value.url == f"http://127.0.0.1:{port}/cas/crt/ca.crt.pem"
    assert isinstance(raised.value.cause, ConnectionRefusedError)


def test_ca_store_bootstraps_then_stays_unchanged(caucased: RunningServer, tmp_path: Path) -> None:
    store = tmp_path / "cas.crt.pem"
    with CaucaseClient(caucased.http_url + "/cas") as client:
        assert update_ca_store(client, str(store), utcnow())
        content = store.read_bytes()

        assert not update_ca_store(client, str(store), utcnow())

    assert store.read_bytes() == content
    assert len(load_valid_ca_list(pemfile.read_ca_store(store), utcnow())) == 1


def test_unusable_local_trust_store_is_refused(caucased: RunningServer, tmp_path: Path) -> None:
    store = tmp_path / "cas.crt.pem"
    with CaucaseClient(caucased.http_url + "/cas") as client:
        update_ca_store(client, str(store), utcnow())
        far_future = utcnow() + datetime.timedelta(days=3650)

        with pytest.raises(CaucaseError, match="Local trust store is unusable"):
            update_ca_store(client, str(store), far_future)


def test_crl_store_is_replaced_only_when_different(
    caucased: RunningServer, tmp_path: Path
) -> None:
    ca_store, crl_store = tmp_path / "cas.crt.pem", tmp_path / "cas.crl.pem"
    with CaucaseClient(caucased.http_url + "/cas") as client:
        update_ca_store(client, str(ca_store), utcnow())
        ca_list = load_valid_ca_list(pemfile.read_ca_store(ca_store), utcnow())

        assert update_crl_store(client, str(crl_store), ca_list)
        server_crls = crl_store.read_bytes()
        assert not update_crl_store(client, str(crl_store), ca_list)
        crl_store.write_bytes(server_crls + server_crls)
        assert update_crl_store(client, str(crl_store), ca_list)

    assert crl_store.read_bytes() == server_crls


# CA chain verification (http-api 8.2), on locally made CA generations


def _ca_generations(count: int) -> list[tuple[rsa.RSAPrivateKey, x509.Certificate]]:
    """CA certificates one hour apart, the newest made now, each renewing the previous."""
    start = utcnow() - datetime.timedelta(hours=count - 1)
    life = datetime.timedelta(days=30)
    key = keys.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chain test")])
    generations = [(key, x509util.make_ca_certificate(key, subject, start, life))]
    for hours in range(1, count):
        key = keys.generate()
        made = start + datetime.timedelta(hours=hours)
        generations.append(
            (key, x509util.renew_ca_certificate(generations[-1][1], key, made, life))
        )
    return generations


@pytest.fixture(scope="module")
def generations() -> list[tuple[rsa.RSAPrivateKey, x509.Certificate]]:
    return _ca_generations(3)


def _link(
    signer: rsa.RSAPrivateKey, old: x509.Certificate, new: x509.Certificate
) -> dict[str, object]:
    payload = json.dumps(
        {
            "old_pem": x509util.dump_certificate(old).decode(),
            "new_pem": x509util.dump_certificate(new).decode(),
        }
    )
    return sign_envelope(signer, payload)


def _pem(certificate: x509.Certificate) -> bytes:
    return x509util.dump_certificate(certificate)


def test_chain_from_the_oldest_ca_yields_every_newer_one(
    generations: list[tuple[rsa.RSAPrivateKey, x509.Certificate]],
) -> None:
    (key_a, ca_a), (key_b, ca_b), (_, ca_c) = generations
    items = [_link(key_a, ca_a, ca_b), _link(key_b, ca_b, ca_c)]

    assert verify_ca_chain(items, [_pem(ca_a)], utcnow()) == [_pem(ca_b), _pem(ca_c)]
    assert verify_ca_chain(items, [_pem(ca_b)], utcnow()) == [_pem(ca_c)]


def test_chain_items_with_a_bad_signature_are_skipped(
    generations: list[tuple[rsa.RSAPrivateKey, x509.Certificate]],
) -> None:
    (key_a, ca_a), (key_b, ca_b), (_, ca_c) = generations
    forged = _link(key_b, ca_a, ca_c)

    assert verify_ca_chain([forged, _link(key_a, ca_a, ca_b)], [_pem(ca_a)], utcnow()) == [
        _pem(ca_b)
    ]


def test_chain_that_does_not_continue_from_the_last_ca_is_broken(
    generations: list[tuple[rsa.RSAPrivateKey, x509.Certificate]],
) -> None:
    (key_a, ca_a), (_, ca_b), (_, ca_c) = generations
    items = [_link(key_a, ca_a, ca_b), _link(key_a, ca_a, ca_c)]

    with pytest.raises(CaucaseError, match="CA signature chain broken"):
        verify_ca_chain(items, [_pem(ca_a)], utcnow())


@pytest.fixture
def chain_server(
    generations: list[tuple[rsa.RSAPrivateKey, x509.Certificate]],
) -> Iterator[tuple[str, list[bytes]]]:
    """A server offering three CA generations: ca.crt.pem is the oldest, ca.crt.json
    links them. Yields its /cas URL and the three PEMs."""
    (key_a, ca_a), (key_b, ca_b), (_, ca_c) = generations
    chain = json.dumps([_link(key_a, ca_a, ca_b), _link(key_b, ca_b, ca_c)]).encode()
    routes = {"/cas/crt/ca.crt.pem": _pem(ca_a), "/cas/crt/ca.crt.json": chain}
    server = _recording_server(free_port_pair(), 200, routes)
    yield f"http://127.0.0.1:{server.server_port}/cas", [_pem(ca_a), _pem(ca_b), _pem(ca_c)]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("store_name", ["cas.crt.pem", "casdir"])
def test_ca_store_follows_the_rollover_chain(
    tmp_path: Path, chain_server: tuple[str, list[bytes]], store_name: str
) -> None:
    url, pem_list = chain_server
    store = tmp_path / store_name
    with CaucaseClient(url) as client:
        assert update_ca_store(client, str(store), utcnow())
        assert not update_ca_store(client, str(store), utcnow())

    assert sorted(pemfile.read_ca_store(store)) == sorted(pem_list)
    assert store.is_dir() == (store_name == "casdir")


def test_broken_chain_leaves_the_ca_store_unchanged(
    tmp_path: Path,
    generations: list[tuple[rsa.RSAPrivateKey, x509.Certificate]],
) -> None:
    (key_a, ca_a), (_, ca_b), (_, ca_c) = generations
    broken = json.dumps([_link(key_a, ca_a, ca_b), _link(key_a, ca_a, ca_c)]).encode()
    server = _recording_server(free_port_pair(), 200, {"/cas/crt/ca.crt.json": broken})
    store = tmp_path / "cas.crt.pem"
    store.write_bytes(_pem(ca_a))
    try:
        url = f"http://127.0.0.1:{server.server_port}/cas"
        with CaucaseClient(url) as client, pytest.raises(CaucaseError, match="chain broken"):
            update_ca_store(client, str(store), utcnow())
    finally:
        server.shutdown()
        server.server_close()

    assert store.read_bytes() == _pem(ca_a)
