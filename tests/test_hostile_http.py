"""Malformed and hostile requests against one real caucased process (issue 6).

Every route of both authorities is hit over HTTP, over HTTPS without a certificate and over
HTTPS with a user certificate, with broken bodies, framings, paths, methods and headers.
Raw sockets carry the requests, so that lying lengths, bad chunking and non-ASCII bytes
reach the server as sent. Each answer must be a 4xx or a documented success, never a 5xx
and never a silent close; afterwards the CA certificates, both CRLs, the pending-CSR lists
and every SQLite row are unchanged.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.fuzz.db_state import read_rows
from tests.support.raw_http import TRUNCATING, Answer, Case, exchange
from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    make_key_and_csr,
    make_user,
    request,
    start_caucased,
)

MIB = 1024 * 1024
ANSWER_TIMEOUT = 30.0
SCHEMES = ("http", "https", "https+cert")
JSON = "application/json"
PKCS10 = "application/pkcs10"


@dataclass
class Deployment:
    server: RunningServer
    user: Path
    pending_ids: dict[str, str]
    crt_pem: bytes
    snapshot: dict[str, object]


def _tamper_signature(pem: bytes) -> bytes:
    """The same CSR with its last signature byte flipped: parses, does not verify."""
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    return _pem("CERTIFICATE REQUEST", bytes(der))


def _pem(label: str, der: bytes) -> bytes:
    lines = base64.encodebytes(der).decode().replace("\n", "")
    body = "\n".join(lines[i : i + 64] for i in range(0, len(lines), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n".encode()


# State (read-only views of the server)


def _snapshot(server: RunningServer, user: Path) -> dict[str, object]:
    state: dict[str, object] = {}
    for authority in ("cas", "cau"):
        for path in ("crt/ca.crt.pem", "crt/ca.crt.json", "crl"):
            status, _, body = request(server, "GET", f"/{authority}/{path}")
            assert status == 200
            state[f"{authority}/{path}"] = body
        status, _, body = request(server, "GET", f"/{authority}/csr", https=True, cert_file=user)
        assert status == 200
        state[f"{authority}/csr"] = json.loads(body)
    state["rows"] = read_rows(server.workdir / "caucase.sqlite")  # after the lazy CRL builds
    return state


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One caucased with a user, a pending CSR on each authority and a signed CAS cert."""
    workdir = tmp_path_factory.mktemp("hostile")
    server = start_caucased([str(OUR_BIN / "caucased")], workdir)
    try:
        user = make_user(server, workdir / "user.pem")
        pending = {}
        for authority in ("cas", "cau"):
            _, csr = make_key_and_csr(f"pending {authority}")
            status, headers, _ = request(
                server, "PUT", f"/{authority}/csr", csr, {"Content-Type": PKCS10}
            )
            assert status == 201
            pending[authority] = headers["Location"]
        _, csr = make_key_and_csr("signed service")
        _, headers, _ = request(server, "PUT", "/cas/csr", csr, {"Content-Type": PKCS10})
        signed_id = headers["Location"]
        status, _, _ = request(
            server, "PUT", f"/cas/crt/{signed_id}", b"", https=True, cert_file=user
        )
        assert status == 204
        status, _, crt_pem = request(server, "GET", f"/cas/crt/{signed_id}")
        assert status == 200
        yield Deployment(server, user, pending, crt_pem, _snapshot(server, user))
    finally:
        server.stop()


# The battery


def _ids(deployment: Deployment, authority: str) -> list[str]:
    hostile = [
        "abc",
        "-1",
        "1.5",
        "0x10",
        "%00",
        "%20",
        "1_2",
        "%D9%A1",  # ARABIC-INDIC DIGIT ONE
        str(2**63),
        str(2**64),
        "-" + str(2**63),
        "9" * 5000,
        "%ff%fe",
        "a" * 4000,
    ]
    return [*hostile, deployment.pending_ids[authority] + "/extra"]


def _envelopes(deployment: Deployment) -> list[bytes]:
    crt = deployment.crt_pem.decode()
    _, csr = make_key_and_csr("renewal")
    good_payload = json.dumps({"crt_pem": crt, "renew_csr_pem": csr.decode()})
    revoke_payload = json.dumps({"revoke_crt_pem": crt})
    signature = base64.b64encode(b"\x00" * 256).decode()
    values: list[object] = [None, True, 0, -1, 1.5, "", "x", [], {}, [1], {"a": 1}, 2**70]
    envelopes: list[object] = [None, [], "x", 1, {}, {"payload": good_payload}]
    for payload in (good_payload, revoke_payload):
        base = {"payload": payload, "digest": "sha256", "signature": signature}
        for field in ("payload", "digest", "signature"):
            envelopes += [
                {**base, field: value}
                for value in values
                # a null digest with a valid certificate is a documented revocation
                if not (payload == revoke_payload and field == "digest" and value is None)
            ]
        envelopes += [
            {**base, "digest": digest} for digest in ("md5", "sha1", "SHA256", "sha3_256", "\0")
        ]
        envelopes += [
            {**base, "signature": bad} for bad in ("!!!", "QQ", "====", "\u00e9", "A" * 10001)
        ]
    serials: tuple[object, ...] = (
        -5,
        "0x10",
        "12",
        1.5,
        True,
        False,
        None,
        [],
        {},
        -(2**200),
        "-1",
    )
    null_payloads: list[object] = [{"revoke_serial": value} for value in serials]
    null_payloads += [
        {"revoke_crt_pem": value} for value in (None, 1, "", "garbage", crt.replace("M", "N", 5))
    ]
    null_payloads += [{}, {"crt_pem": crt}, [], "x", None]
    envelopes += [{"payload": json.dumps(payload), "digest": None} for payload in null_payloads]
    envelopes += [
        {"payload": "{not json", "digest": None},
        {"payload": "\ud800", "digest": None},
        {"payload": {"revoke_serial": 1}, "digest": None},
        {"payload": revoke_payload.replace("M", "N", 9), "digest": None, "signature": 12},
    ]
    bodies = [json.dumps(envelope).encode() for envelope in envelopes]
    bodies += [b"{", b'{"payload": ', b"[" * 100000, b'"\\ud800"', b"\xff\xfe{}", b"nul\0l"]
    return bodies


def _csr_bodies(deployment: Deployment, rng: random.Random) -> list[bytes]:
    _, csr = make_key_and_csr("hostile")
    bad = _tamper_signature(csr)
    return [
        b"",
        b"garbage",
        rng.randbytes(4096),
        b"-----BEGIN CERTIFICATE REQUEST-----\n",
        b"-----BEGIN CERTIFICATE REQUEST-----\n!!!\n-----END CERTIFICATE REQUEST-----\n",
        b"no pem block at all\n",
        bad,
        # Text and blocks around a good CSR are accepted (the reference's reading): here the
        # first CSR, the one that counts, is badly signed.
        bad + csr,
        b"garbage\n" + bad + b"trailing text\n",
        csr.replace(b"CERTIFICATE REQUEST", b"CERTIFICATE"),
        deployment.crt_pem,
        csr[: len(csr) // 2],
        csr.replace(b"\n", b"\r\n\0"),
    ]


def body_cases(deployment: Deployment, rng: random.Random) -> list[Case]:
    """Every route of both authorities, with broken bodies of the kinds it reads."""
    cases: list[Case] = []
    envelopes = _envelopes(deployment)
    for authority in ("cas", "cau"):
        csr_bodies = _csr_bodies(deployment, rng)
        prefix = f"/{authority}"
        for path in (
            prefix,
            prefix + "/",
            prefix + "/crl",
            prefix + "/crt/ca.crt.pem",
            prefix + "/crt/ca.crt.json",
            prefix + "/csr",
        ):
            cases += [Case("GET", path, body) for body in csr_bodies[:4]]
        for id_text in _ids(deployment, authority):
            cases += [
                Case("GET", f"{prefix}/crl/{id_text}"),
                Case("GET", f"{prefix}/csr/{id_text}"),
                Case("GET", f"{prefix}/crt/{id_text}"),
                Case("DELETE", f"{prefix}/csr/{id_text}"),
                Case("PUT", f"{prefix}/crt/{id_text}", b""),
            ]
        for body in csr_bodies:
            for content_type in (PKCS10, "text/plain", "application/pkcs10; charset=x"):
                headers = (("Content-Type", content_type),)
                cases.append(Case("PUT", prefix + "/csr", body, headers))
            for content_type in (PKCS10, JSON):
                headers = (("Content-Type", content_type),)
                for csr_id in (deployment.pending_ids[authority], "1"):
                    if body:  # an empty template would sign the pending CSR
                        cases.append(Case("PUT", f"{prefix}/crt/{csr_id}", body, headers))
        for route in ("revoke", "renew"):
            path = f"{prefix}/crt/{route}"
            for body in envelopes:
                cases.append(Case("PUT", path, body, (("Content-Type", JSON),)))
            cases.append(Case("PUT", path, envelopes[0]))
            for content_type in ("text/plain", "application/json; charset=utf-8", "json"):
                cases.append(Case("PUT", path, envelopes[0], (("Content-Type", content_type),)))
    return cases


def framing_cases(deployment: Deployment) -> list[Case]:
    """Lying lengths, chunking, huge bodies and old protocol versions on the body routes."""
    _, csr = make_key_and_csr("framing")
    json_type = (("Content-Type", JSON),)
    cases: list[Case] = []
    for authority in ("cas", "cau"):
        targets = [
            (f"/{authority}/csr", b"garbage" + _tamper_signature(csr), ()),
            (f"/{authority}/crt/revoke", b'{"digest": 1, "payload": "x"}', json_type),
            (f"/{authority}/crt/renew", b'{"digest": "md5"}', json_type),
            (f"/{authority}/crt/{deployment.pending_ids[authority]}", b"junk", ()),
        ]
        for path, body, headers in targets:
            cases += [
                Case("PUT", path, body, headers, framing="short"),
                Case("PUT", path, body, headers, framing="long"),
                Case("PUT", path, body, headers, framing="none"),
                Case("PUT", path, body, headers, framing="none", version="HTTP/1.0"),
                Case("PUT", path, b"", headers, framing="chunked", chunks=(body[:5], body[5:])),
                Case("PUT", path, b"", headers, framing="raw-chunked", chunks=(b"zz\r\n",)),
                Case("PUT", path, b"", headers, framing="raw-chunked", chunks=(b"-5\r\nab\r\n",)),
                Case("PUT", path, b"", headers, framing="raw-chunked", chunks=(b"5\r\nabcdefg",)),
                Case(
                    "PUT",
                    path,
                    b"",
                    headers,
                    framing="raw-chunked",
                    chunks=(b"FFFFFFFFFFFF\r\nabc",),
                ),
                Case(
                    "PUT",
                    path,
                    b"",
                    headers,
                    framing="raw-chunked",
                    chunks=(b"1;" + b"x" * 70000 + b"\r\na\r\n0\r\n\r\n",),
                ),
                Case(
                    "PUT",
                    path,
                    b"",
                    headers,
                    framing="raw-chunked",
                    chunks=(b"1\r\na\r\n0\r\n" + b"t" * 70000 + b"\r\n",),
                ),
                Case(
                    "PUT",
                    path,
                    b"",
                    (*headers, ("Transfer-Encoding", "gzip, chunked")),
                    framing="none",
                ),
            ]
            for length in ("abc", "-1", "1e3", " ", "0x10", "99999999999999999999999", "+5"):
                cases.append(
                    Case("PUT", path, body, (*headers, ("Content-Length", length)), "raw")
                )
        # 20 MiB, declared only, and actually sent (with a length, and chunked).
        path = f"/{authority}/csr"
        cases += [
            Case("PUT", path, b"", (("Content-Length", str(20 * MIB)),), framing="none"),
            Case("PUT", path, b"x" * (20 * MIB)),
            Case("PUT", path, b"", framing="chunked", chunks=(b"x" * MIB,) * 20),
        ]
    return cases


def path_cases() -> list[Case]:
    """Methods, encoded and overlong paths, hostile Host and Origin headers."""
    cases: list[Case] = []
    paths = [
        "/",
        "/cors",
        "/cors?origin=http%3A%2F%2Fevil&return=javascript%3Aalert(1)",
        "/cors?origin=&return=",
        "/cors?%zz",
        "/ca%75/crt/ca.crt.pem",
        "/%63as/%63rl",
        "/cas/%2e%2e/%2e%2e/etc/passwd",
        "/cas/crt/..%2f..%2f",
        "/%ff%fe",
        "/cas/%00",
        "//cas//crl//",
        "/cas/crl/1/2/3",
        "/cas/" + "a" * 60000,
        "/cas/" + "a" * 70000,
        "*",
        "http://evil/cas/crl",
        "cas",
        "/cas?" + "q" * 5000,
        "/\u00e9",
    ]
    methods = [
        "GET",
        "PUT",
        "POST",
        "DELETE",
        "HEAD",
        "OPTIONS",
        "PATCH",
        "TRACE",
        "get",
        "X" * 100,
    ]
    for path in paths:
        cases += [Case(method, path) for method in methods]
    for authority in ("cas", "cau"):
        for sub in ("", "/crl", "/csr", "/crt", "/crt/ca.crt.pem", "/crt/revoke", "/crt/renew"):
            cases += [Case(method, f"/{authority}{sub}") for method in methods]
    origins = [
        "null",
        "http://evil.example",
        "https://evil.example",
        "http:",
        "javascript:alert(1)",
        "http://" + "e" * 10000,
        "\u00ff\u00fe",
        "",
        " ",
        "http://127.0.0.1:1",
    ]
    cookies = [
        'cors="{not json"',
        'cors="[1]"',
        'cors="{\\"http://evil.example\\": 1}"',
        'cors="{\\"http://evil.example\\": \\"a.b.c\\"}"',
        "cors=" + "x" * 5000,
        "\u00ff=\u00fe",
    ]
    for origin in origins:
        for method, path in (
            ("GET", "/cas"),
            ("GET", "/cau/csr"),
            ("GET", "/cas/crl"),
            ("PUT", "/cas/crt/revoke"),
            ("OPTIONS", "/cas/csr"),
            ("POST", "/cors"),
            ("GET", "/cors?origin=x&return=http://a/"),
        ):
            cases.append(Case(method, path, headers=(("Origin", origin),)))
            cases += [
                Case(method, path, headers=(("Origin", origin), ("Cookie", cookie)))
                for cookie in cookies
            ]
    hosts = ["", "evil", "[::1", "a:b", "127.0.0.1:99999", "127.0.0.1:-1", "\u00ff", "h" * 20000]
    hosts += ["a\x00b", "a\x0bb:1", "a b", "\x7f", "[::1]:80", "x:80", "@evil:1", "a/b?c#d"]
    for host in hosts:
        for path in ("/", "/cas", "/cau", "/cors", "/cas/csr"):
            cases.append(Case("GET", path, headers=(("Host", host),)))
            cases.append(Case("GET", path, headers=(("Host", host), ("Origin", "http://evil"))))
    form = b"origin=http%3A%2F%2Fevil&return_to=javascript%3Aalert(1)&grant=1"
    for body in (form, b"grant=2&origin=&return_to=", b"\xff\xfe", b"a=b&a=c", b"%zz"):
        for content_type in ("application/x-www-form-urlencoded", "text/plain"):
            cases.append(Case("POST", "/cors", body, (("Content-Type", content_type),)))
    cases += [
        Case("GET", "/", version="HTTP/2.0"),
        Case("GET", "/", version="HTTP/0.9"),
        Case("GET", "/", version="HTTP/1.1 extra"),
        Case("GET", "/", version="FOO/1.1"),
        Case("GET", "/", headers=tuple((f"X-{i}", "v") for i in range(150))),
        Case("GET", "/", headers=(("X-Long", "v" * 70000),)),
        Case("GET", "/", headers=(("Bad Header", "v"),)),
        Case("GET", "/", headers=(("User-Agent", '\u00ff\u0001"\\'),)),
        Case("GET", "/", headers=(("Expect", "100-continue"),)),
        Case("PUT", "/cas/csr", b"x", (("Expect", "100-continue"),)),
        Case("PUT", "/cas/csr", b"x", (("Expect", "bogus"),)),
    ]
    return cases


def _failure(scheme: str, case: Case, answer: Answer) -> str | None:
    """Why this answer is wrong, or None.

    A TLS stream that the client cuts with a bare TCP half-close is a truncation attack,
    not a finished body: the server may drop it, but it must do so at once."""
    if answer.status is None:
        cut_tls = scheme != "http" and case.framing in TRUNCATING
        if cut_tls and "timed out" not in answer.error:
            return None
        return f"no answer ({answer.error or 'closed'}): {answer.raw[:80]!r}"
    if answer.status >= 500 and answer.status != 505:
        return f"status {answer.status}: {answer.raw[:200]!r}"
    return None


def _run(
    deployment: Deployment,
    cases: list[Case],
    schemes: tuple[str, ...],
    persistent: bool = False,
) -> list[str]:
    """Run every case under every scheme; return the failures and print the counts."""
    jobs = [(scheme, case) for case in cases for scheme in schemes]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(
            pool.map(
                lambda job: exchange(
                    deployment.server, deployment.user, job[0], job[1], persistent
                ),
                jobs,
            )
        )
    failures = []
    for (scheme, case), answer in zip(jobs, answers):
        problem = _failure(scheme, case, answer)
        if problem is not None:
            failures.append(f"{scheme} {case.method} {case.path[:80]} [{case.framing}]: {problem}")
    server_errors = sum(1 for a in answers if a.status is not None and 500 <= a.status != 505)
    print(f"\nhostile requests tried: {len(jobs)}, 5xx seen: {server_errors}")
    return failures


def _battery(
    deployment: Deployment,
    cases: list[Case],
    schemes: tuple[str, ...],
    persistent: bool = False,
) -> None:
    """Run the cases, then check what must hold after them: no wrong answer, the state
    unchanged (which also shows the server still serves), and no traceback logged while
    they ran: a connection cut by its client is one line of the error log."""
    error_log = deployment.server.stderr_path
    log_start = error_log.stat().st_size
    failures = _run(deployment, cases, schemes, persistent)
    assert not failures, "\n".join(failures[:40])
    after = _snapshot(deployment.server, deployment.user)
    for key, before in deployment.snapshot.items():
        assert after[key] == before, f"{key} changed"
    assert b"Traceback" not in error_log.read_bytes()[log_start:]


def test_malformed_bodies_on_every_route(deployment: Deployment, rng: random.Random) -> None:
    _battery(deployment, body_cases(deployment, rng), SCHEMES)


def test_broken_framing_and_huge_bodies(deployment: Deployment) -> None:
    _battery(deployment, framing_cases(deployment), SCHEMES)


def test_hostile_paths_methods_and_headers(deployment: Deployment) -> None:
    _battery(deployment, path_cases(), SCHEMES)


def test_hostile_second_requests_on_persistent_connections(deployment: Deployment) -> None:
    """Keep-alive must not let a hostile request slip past what a fresh one would meet."""
    cases = framing_cases(deployment) + path_cases()
    _battery(deployment, cases, ("http", "https+cert"), persistent=True)
