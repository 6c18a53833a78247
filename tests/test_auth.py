"""Who may use the authenticated routes and the key-holder envelopes (http-api 4, 6.13, 6.14).

Authenticated routes accept only a current, unrevoked CAU certificate presented over TLS;
every other credential is refused (401, or the TLS handshake itself fails) and changes
nothing. Renewal and revocation by key accept only a signature by the certified key, for a
certificate of the authority addressed, not revoked."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.ca_helpers import generate_keys, make_csr, pem, self_signed
from tests.support.faketime import FakeTime, Role
from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    client_context,
    free_port_pair,
    key_pem,
    make_user,
    request,
    start_caucased,
)
from tests.support.wait import poll
from tests.support.wsgi_support import signed_body

JSON = {"Content-Type": "application/json"}
PKCS10 = {"Content-Type": "application/pkcs10"}
REFUSED = "TLS refused"
CAUCASED = [OUR_BIN / "caucased"]


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    return generate_keys(4)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("auth") / "server"
    running = start_caucased(CAUCASED, workdir, ["--user-auto-approve-count", "5"])
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_user(server, tmp_path_factory.mktemp("admin") / "admin.pem", "admin")


def authenticated_list(server: RunningServer, cert_file: Path | None) -> int | str:
    """Status of the pending-CSR list over HTTPS with `cert_file`, or REFUSED."""
    try:
        return request(server, "GET", "/cas/csr", https=True, cert_file=cert_file)[0]
    except (ssl.SSLError, ConnectionError):
        return REFUSED


def attempt_everything(
    server: RunningServer, cert_file: Path | None, csr_id: int, serial: int
) -> list[int | str]:
    """Every authenticated action with one credential; the answers (status or REFUSED)."""
    revoke = json.dumps({"payload": json.dumps({"revoke_serial": serial}), "digest": None})
    actions = [
        ("GET", "/cas/csr", None, {}),
        ("GET", "/cau/csr", None, {}),
        ("GET", "/cas/inventory", None, {}),
        ("GET", "/cau/inventory?limit=1000", None, {}),
        ("PUT", f"/cas/crt/{csr_id}", b"", {}),
        ("DELETE", f"/cas/csr/{csr_id}", None, {}),
        ("PUT", "/cas/crt/revoke", revoke.encode(), JSON),
        ("PUT", "/cau/crt/revoke", revoke.encode(), JSON),
    ]
    answers: list[int | str] = []
    for method, path, body, headers in actions:
        try:
            answers.append(
                request(server, method, path, body, headers, https=True, cert_file=cert_file)[0]
            )
        except (ssl.SSLError, ConnectionError):
            answers.append(REFUSED)
    return answers


def submit(server: RunningServer, authority: str, csr: bytes) -> int:
    status, headers, _ = request(server, "PUT", f"/{authority}/csr", csr, PKCS10)
    assert status == 201
    return int(headers["Location"])


def sign(server: RunningServer, admin: Path, authority: str, csr_id: int) -> bytes:
    status, _, _ = request(
        server, "PUT", f"/{authority}/crt/{csr_id}", b"", https=True, cert_file=admin
    )
    assert status == 204
    status, _, crt = request(server, "GET", f"/{authority}/crt/{csr_id}")
    assert status == 200
    return crt


def credential(path: Path, key: rsa.RSAPrivateKey, crt: bytes) -> Path:
    path.write_bytes(key_pem(key) + crt)
    path.chmod(0o600)
    return path


def revoked_serials(server: RunningServer, authority: str) -> set[int]:
    status, _, body = request(server, "GET", f"/{authority}/crl")
    assert status == 200
    end = b"-----END X509 CRL-----"
    blocks = [block + end for block in body.split(end) if block.strip()]
    return {entry.serial_number for block in blocks for entry in x509.load_pem_x509_crl(block)}


def user_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def user_crt(path: Path) -> bytes:
    data = path.read_bytes()
    return data[data.index(b"-----BEGIN CERTIFICATE") :]


@pytest.fixture(scope="module")
def other_server(
    server: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """Another caucased with the same --netloc, hence CAs with exactly the same names."""
    port = free_port_pair()
    running = start_caucased(
        CAUCASED,
        tmp_path_factory.mktemp("other") / "server",
        ["--netloc", server.netloc, "--base-port", str(port)],
        http_port=port,
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def service_crt(server: RunningServer, admin: Path, keys: list[rsa.RSAPrivateKey]) -> bytes:
    """A CAS certificate for keys[0], signed by the admin: shared target of the attempts."""
    return sign(server, admin, "cas", submit(server, "cas", make_csr(keys[0], "target")))


def _foreign_credential(
    kind: str,
    server: RunningServer,
    other: RunningServer,
    admin: Path,
    workdir: Path,
    keys: list[rsa.RSAPrivateKey],
) -> Path | None:
    if kind == "no certificate":
        return None
    if kind == "CAS certificate":
        crt = sign(server, admin, "cas", submit(server, "cas", make_csr(keys[1], "cas-as-user")))
        return credential(workdir / "cas.pem", keys[1], crt)
    if kind == "user of another caucased":
        twin = make_user(other, workdir / "other.pem", "admin")
        assert _issuer(twin) == _issuer(admin)
        return twin
    if kind == "self-signed":
        return credential(workdir / "self.pem", keys[1], pem(self_signed(keys[1], "admin")))
    status, _, ca_pem = request(server, "GET", "/cau/crt/ca.crt.pem")
    assert status == 200
    forged = x509.load_pem_x509_certificate(ca_pem).subject.rfc4514_string()
    return credential(workdir / "forged.pem", keys[1], pem(self_signed(keys[1], forged)))


def _issuer(path: Path) -> x509.Name:
    return x509.load_pem_x509_certificate(user_crt(path)).issuer


def test_current_user_is_accepted(server: RunningServer, admin: Path) -> None:
    assert authenticated_list(server, admin) == 200


@pytest.mark.parametrize(
    "kind",
    [
        "no certificate",
        "CAS certificate",
        "user of another caucased",
        "self-signed",
        "CAU CA name",
    ],
)
def test_foreign_credentials_are_refused_and_change_nothing(
    server: RunningServer,
    other_server: RunningServer,
    admin: Path,
    service_crt: bytes,
    keys: list[rsa.RSAPrivateKey],
    tmp_path: Path,
    kind: str,
) -> None:
    cert_file = _foreign_credential(kind, server, other_server, admin, tmp_path, keys)
    csr = make_csr(keys[2], f"pending-{kind}")
    csr_id = submit(server, "cas", csr)
    serial = x509.load_pem_x509_certificate(service_crt).serial_number

    answers = attempt_everything(server, cert_file, csr_id, serial)

    assert set(answers) <= {401, REFUSED}, answers
    assert request(server, "GET", f"/cas/csr/{csr_id}")[2] == csr
    assert request(server, "GET", f"/cas/crt/{csr_id}")[0] == 404
    assert serial not in revoked_serials(server, "cas") | revoked_serials(server, "cau")


def test_plain_http_never_authenticates(server: RunningServer, admin: Path) -> None:
    """A certificate cannot be presented over HTTP: every authenticated route is a 401."""
    assert request(server, "GET", "/cas/csr")[0] == 401
    assert request(server, "GET", "/cau/csr")[0] == 401
    assert request(server, "GET", "/cas/inventory")[0] == 401
    assert request(server, "PUT", "/cas/crt/1", b"")[0] == 401


def test_revoked_user_is_refused_immediately(
    server: RunningServer, admin: Path, tmp_path: Path
) -> None:
    user = make_user(server, tmp_path / "user.pem", "soon revoked")
    assert authenticated_list(server, user) == 200
    serial = x509.load_pem_x509_certificate(user_crt(user)).serial_number
    body = json.dumps({"payload": json.dumps({"revoke_serial": serial}), "digest": None})
    status, _, _ = request(
        server, "PUT", "/cau/crt/revoke", body.encode(), JSON, https=True, cert_file=admin
    )
    assert status == 204

    assert authenticated_list(server, user) in (401, REFUSED)
    assert authenticated_list(server, admin) == 200


def test_certificate_with_another_key_cannot_be_presented(
    admin: Path, keys: list[rsa.RSAPrivateKey], tmp_path: Path
) -> None:
    """TLS proves possession of the key: a client cannot even be configured with a stolen
    certificate and its own key."""
    stolen = credential(tmp_path / "stolen.pem", keys[3], user_crt(admin))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with pytest.raises(ssl.SSLError, match=r"(?i)key values mismatch"):
        context.load_cert_chain(str(stolen))


def test_expired_user_is_refused(tmp_path: Path) -> None:
    """The server's clock is carried to a minute before the user's notAfter, then past it."""
    clock = FakeTime(tmp_path / "clock")
    short = start_caucased(CAUCASED, tmp_path / "short", env=clock.env(Role.SERVER))
    try:
        user = make_user(short, tmp_path / "user.pem")
        not_after = x509.load_pem_x509_certificate(user_crt(user)).not_valid_after_utc
        assert authenticated_list(short, user) == 200
        clock.advance(seconds=(not_after - clock.now()).total_seconds() - 60)
        assert authenticated_list(short, user) == 200
        clock.advance(seconds=120)
        assert authenticated_list(short, user) in (401, REFUSED)
    finally:
        short.stop()


# Key-holder envelopes


def renew_body(crt: bytes, signer: rsa.RSAPrivateKey, new_key: rsa.RSAPrivateKey) -> bytes:
    payload = {"crt_pem": crt.decode(), "renew_csr_pem": make_csr(new_key, "renewal").decode()}
    return signed_body(signer, payload)


def revoke_body(crt: bytes, signer: rsa.RSAPrivateKey) -> bytes:
    return signed_body(signer, {"revoke_crt_pem": crt.decode()})


def put(server: RunningServer, path: str, body: bytes) -> int:
    return request(server, "PUT", path, body, JSON)[0]


def test_envelope_signed_by_another_key_is_refused(
    server: RunningServer, admin: Path, keys: list[rsa.RSAPrivateKey]
) -> None:
    crt = sign(server, admin, "cas", submit(server, "cas", make_csr(keys[0], "victim")))
    serial = x509.load_pem_x509_certificate(crt).serial_number

    assert 400 <= put(server, "/cas/crt/revoke", revoke_body(crt, keys[1])) < 500
    assert 400 <= put(server, "/cas/crt/renew", renew_body(crt, keys[1], keys[1])) < 500

    assert serial not in revoked_serials(server, "cas")
    assert put(server, "/cas/crt/renew", renew_body(crt, keys[0], keys[2])) == 200


def test_envelopes_replayed_after_revocation_are_refused(
    server: RunningServer, admin: Path, keys: list[rsa.RSAPrivateKey]
) -> None:
    crt = sign(server, admin, "cas", submit(server, "cas", make_csr(keys[0], "replayed")))
    revoke, renew = revoke_body(crt, keys[0]), renew_body(crt, keys[0], keys[3])
    assert put(server, "/cas/crt/revoke", revoke) == 204

    status, _, body = request(server, "PUT", "/cas/crt/revoke", revoke, JSON)
    assert status == 400 and b"revoked" in body
    status, _, body = request(server, "PUT", "/cas/crt/renew", renew, JSON)
    assert status == 400 and b"revoked" in body
    assert x509.load_pem_x509_certificate(crt).serial_number in revoked_serials(server, "cas")


def test_certificate_of_the_other_authority_is_refused(
    server: RunningServer,
    admin: Path,
    service_crt: bytes,
    keys: list[rsa.RSAPrivateKey],
    tmp_path: Path,
) -> None:
    user = make_user(server, tmp_path / "user.pem", "crosser")
    cau_crt, cau_key = user_crt(user), user_key(user)
    attempts = {
        "/cas/crt/revoke": revoke_body(cau_crt, cau_key),
        "/cas/crt/renew": renew_body(cau_crt, cau_key, keys[3]),
        "/cau/crt/revoke": revoke_body(service_crt, keys[0]),
        "/cau/crt/renew": renew_body(service_crt, keys[0], keys[3]),
    }
    answers = {path: put(server, path, body) for path, body in attempts.items()}

    assert answers == dict.fromkeys(attempts, 400)
    serials = {x509.load_pem_x509_certificate(crt).serial_number for crt in (cau_crt, service_crt)}
    assert not serials & (revoked_serials(server, "cas") | revoked_serials(server, "cau"))
    assert authenticated_list(server, user) == 200


def test_revocation_applies_to_an_open_connection(
    server: RunningServer, admin: Path, tmp_path: Path
) -> None:
    """Authentication is per request, not per TLS session: a connection opened while the
    user was valid gets no more once the user is revoked."""
    user = make_user(server, tmp_path / "user.pem", "revoked while connected")
    connection = http.client.HTTPSConnection(
        server.host, server.https_port, context=client_context(user), timeout=30
    )
    try:
        connection.request("GET", "/cas/csr")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        serial = x509.load_pem_x509_certificate(user_crt(user)).serial_number
        body = json.dumps({"payload": json.dumps({"revoke_serial": serial}), "digest": None})
        status, _, _ = request(
            server, "PUT", "/cau/crt/revoke", body.encode(), JSON, https=True, cert_file=admin
        )
        assert status == 204
        connection.request("GET", "/cas/csr")
        response = connection.getresponse()
        response.read()
        assert response.status == 401
    finally:
        connection.close()


def _served_at_least(made: list[tuple[float, int | str]], count: int) -> bool:
    return sum(1 for _, status in made if status == 200) >= count


def test_revocations_under_concurrent_use_take_effect_at_once(tmp_path: Path) -> None:
    """Users keep calling authenticated routes while they are revoked one by one: no
    request started after a revocation was acknowledged is served for that user."""
    users_count = 8
    server = start_caucased(
        CAUCASED, tmp_path / "server", ["--user-auto-approve-count", str(users_count + 1)]
    )
    try:
        admin = make_user(server, tmp_path / "admin.pem", "admin")
        users = [
            make_user(server, tmp_path / f"u{n}.pem", f"user {n}") for n in range(users_count)
        ]
        calls: list[list[tuple[float, int | str]]] = [[] for _ in users]
        stop = threading.Event()

        def hammer(index: int) -> None:
            while not stop.is_set():
                started = time.monotonic()
                calls[index].append((started, authenticated_list(server, users[index])))

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(users_count)]
        for thread in threads:
            thread.start()
        revoked_at = []
        try:
            for index, user in enumerate(users):
                poll(
                    partial(_served_at_least, calls[index], 3),
                    "the user to be served",
                    interval=0.01,
                )
                serial = x509.load_pem_x509_certificate(user_crt(user)).serial_number
                body = json.dumps(
                    {"payload": json.dumps({"revoke_serial": serial}), "digest": None}
                )
                status, _, _ = request(
                    server,
                    "PUT",
                    "/cau/crt/revoke",
                    body.encode(),
                    JSON,
                    https=True,
                    cert_file=admin,
                )
                assert status == 204
                revoked_at.append(time.monotonic())
            poll(
                lambda: all(
                    calls[n] and calls[n][-1][0] > revoked_at[-1] for n in range(users_count)
                ),
                "calls after the last revocation",
                interval=0.01,
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        for index, moment in enumerate(revoked_at):
            before = [status for started, status in calls[index] if started < moment]
            after = [status for started, status in calls[index] if started > moment]
            assert 200 in before and after, index
            assert set(after) <= {401, REFUSED}, (index, after)
        assert set().union(*({status for _, status in made} for made in calls)) <= {
            200,
            401,
            REFUSED,
        }
    finally:
        server.stop()
