"""CaucaseClient: the HTTP(S) library every client command uses (http-api 16, cli.md 2.4-2.6).

One client talks to one authority (`<base>/cas` or `<base>/cau`). Anonymous calls go
over plain HTTP on the URL's port, whatever its scheme; authenticated calls go over
HTTPS on port 443 when the HTTP port is 80, else on the HTTP port + 1, presenting the
user certificate. As the reference does, the server certificate is not verified: the
trust comes from the CA store, which authenticates what the server returns.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import ssl
import sys
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any, Callable, TextIO

from cryptography import x509

from caucase import __version__
from caucase.clock import Clock, utcnow
from caucase.crypto import keys, pemfile, verification, x509util
from caucase.crypto.envelope import sign_envelope, verify_envelope
from caucase.exceptions import (
    CaucaseError,
    CaucaseHTTPError,
    CaucaseNetworkError,
    CaucaseTLSError,
    PemFileError,
)

USER_AGENT = "caucase " + __version__
RETRY_DELAY = 10.0
_CRL_BLOCK = pemfile.BlockKind.CRL

Response = tuple[int, list[tuple[str, str]], bytes]


def https_port_for(http_port: int) -> int:
    """The HTTPS port caucased listens on beside an HTTP port (cli.md 2.6)."""
    return 443 if http_port == 80 else http_port + 1


def _tls_context(user_key: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if user_key is not None:
        if not os.path.exists(user_key):
            raise PemFileError(user_key, f"Failed to load user key: {user_key}: no such file")
        try:
            context.load_cert_chain(user_key)
        except (ssl.SSLError, OSError) as error:
            raise PemFileError(user_key, f"Failed to load user key: {user_key}: {error}") from None
    return context


def _sign(key: keys.PrivateKey, payload: str) -> dict[str, Any]:
    """A signed envelope, or a clear error for a key that cannot sign one."""
    try:
        return sign_envelope(key, payload)
    except (ValueError, CaucaseError) as error:
        raise CaucaseError(f"Cannot sign the request with this key: {error}") from None


class CaucaseClient:
    """Requests to one authority of a caucased, one persistent connection per scheme.

    Errors: `CaucaseHTTPError` for statuses >= 300, `CaucaseNetworkError` (or its
    `CaucaseTLSError` subclass) when no HTTP answer could be obtained."""

    def __init__(self, ca_url: str, user_key: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(ca_url)
        host = parsed.hostname or "localhost"
        try:
            port = parsed.port or 80
        except ValueError:
            raise CaucaseError(f"Invalid port in URL {ca_url!r}") from None
        self.ca_url = ca_url
        self._prefix = parsed.path
        self._http = http.client.HTTPConnection(host, port)
        self._https = http.client.HTTPSConnection(
            host, https_port_for(port), context=_tls_context(user_key)
        )

    def close(self) -> None:
        """Close both connections (they reopen on the next request)."""
        self._http.close()
        self._https.close()

    def __enter__(self) -> CaucaseClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Transport

    def _url(self, path: str, https: bool) -> str:
        connection = self._https if https else self._http
        scheme = "https" if https else "http"
        return f"{scheme}://{connection.host}:{connection.port}{self._prefix}{path}"

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], https: bool
    ) -> Response:
        """One request and its full response, network failures as CaucaseNetworkError."""
        connection = self._https if https else self._http
        all_headers = {"User-Agent": USER_AGENT, **headers}
        try:
            connection.request(method, self._prefix + path, body=body, headers=all_headers)
            response = connection.getresponse()
            data = response.read()
        except ssl.SSLError as error:
            connection.close()
            raise CaucaseTLSError(self._url(path, https), error) from error
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise CaucaseNetworkError(self._url(path, https), error) from error
        if response.will_close:
            connection.close()
        return response.status, response.getheaders(), data

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        *,
        https: bool = False,
    ) -> Response:
        """Send a request; statuses >= 300 become CaucaseHTTPError."""
        status, header_list, data = self._exchange(method, path, body, headers or {}, https)
        if status >= 300:
            raise CaucaseHTTPError(status, header_list, data)
        return status, header_list, data

    def _put_json(self, path: str, value: object, *, https: bool = False) -> bytes:
        return self._request(
            "PUT",
            path,
            json.dumps(value).encode("utf-8"),
            {"Content-Type": "application/json"},
            https=https,
        )[2]

    def _put_signed(self, path: str, key: keys.PrivateKey, payload: str) -> bytes:
        """PUT an envelope signed by `key`. A caucase 0.9.17 server answers 500 to any
        envelope not signed by an RSA key: say so rather than show a bare 500."""
        try:
            return self._put_json(path, _sign(key, payload))
        except CaucaseHTTPError as error:
            family = keys.family(key.public_key())
            if error.status != 500 or family == "RSA":
                raise
            raise CaucaseError(
                f"the server failed on a request signed by an {family} key (HTTP 500): "
                "caucase 0.9.17 servers only verify RSA signatures, so this certificate "
                "can only be revoked by an administrator (--revoke-other-crt)"
            ) from None

    # Anonymous operations (plain HTTP)

    def get_crl(self, authority_key_id: int) -> bytes:
        """The current CRL of the CA whose key identifier is `authority_key_id`."""
        return self._request("GET", f"/crl/{authority_key_id}")[2]

    def get_crl_list(self) -> list[bytes]:
        """Every current CRL (one per CA certificate), other PEM blocks dropped."""
        body = self._request("GET", "/crl")[2]
        return [block.text for block in pemfile.split_blocks(body) if block.kind is _CRL_BLOCK]

    def get_csr(self, csr_id: int) -> bytes:
        """A pending CSR, PEM (404 once signed or rejected)."""
        return self._request("GET", f"/csr/{csr_id}")[2]

    def create_csr(self, csr_pem: bytes) -> int:
        """Submit a CSR; its id (the same id for an identical CSR)."""
        headers = self._request("PUT", "/csr", csr_pem, {"Content-Type": "application/pkcs10"})[1]
        location = dict((name.lower(), value) for name, value in headers).get("location", "")
        try:
            return int(location)
        except ValueError:
            raise CaucaseError(f"Server returned an invalid CSR id: {location!r}") from None

    def get_certificate(self, csr_id: int) -> bytes:
        """The certificate issued for CSR `csr_id`, PEM (404 while pending)."""
        return self._request("GET", f"/crt/{csr_id}")[2]

    def get_ca_certificate(self) -> bytes:
        """The oldest valid CA certificate, PEM: the trust anchor on first use."""
        return self._request("GET", "/crt/ca.crt.pem")[2]

    def get_ca_certificate_chain(
        self, trusted_pem_list: Sequence[bytes], now: datetime.datetime
    ) -> list[bytes]:
        """The CA certificates newer than the trusted ones, proven by the chain of
        signed envelopes of `ca.crt.json` (http-api 8.2)."""
        body = self._request("GET", "/crt/ca.crt.json")[2]
        try:
            items = json.loads(body)
        except ValueError:
            raise CaucaseError("Server returned an invalid CA chain") from None
        return verify_ca_chain(items, trusted_pem_list, now)

    def renew_certificate(
        self,
        old_certificate: x509.Certificate,
        old_key: keys.PrivateKey,
        key_spec: keys.KeySpec | int,
    ) -> tuple[keys.PrivateKey, bytes]:
        """A new key of `key_spec` (an int: RSA of that many bits) and the certificate the
        server issues for it, keeping the old subject; the request is signed by the old key
        (proof of possession)."""
        if isinstance(key_spec, int):
            key_spec = keys.KeySpec.rsa(key_spec)
        new_key = keys.generate(key_spec)
        csr = x509util.make_renewal_csr(new_key, old_certificate.subject)
        payload = json.dumps(
            {
                "crt_pem": x509util.dump_certificate(old_certificate).decode("ascii"),
                "renew_csr_pem": x509util.dump_certificate_request(csr).decode("ascii"),
            }
        )
        crt_pem = self._put_signed("/crt/renew", old_key, payload)
        try:
            new_certificate: x509.Certificate | None = x509util.load_certificate(crt_pem)
        except ValueError:
            new_certificate = None
        if new_certificate is None or not pemfile.same_public_key(new_certificate, new_key):
            raise CaucaseError("Server returned an invalid renewed certificate")
        return new_key, crt_pem

    def revoke_certificate(self, crt_pem: bytes, key: keys.PrivateKey | None = None) -> None:
        """Revoke a certificate: anonymously when its key is given (signed request),
        else as the authenticated user."""
        payload = json.dumps({"revoke_crt_pem": crt_pem.decode("ascii")})
        if key is None:
            self._put_json("/crt/revoke", {"payload": payload, "digest": None}, https=True)
        else:
            self._put_signed("/crt/revoke", key, payload)

    # Authenticated operations (HTTPS with the user certificate)

    def get_pending_csr_list(self) -> list[dict[str, Any]]:
        """Pending CSRs: [{"id": "<decimal>", "csr": "<PEM>"}, ...]."""
        body = self._request("GET", "/csr", https=True)[2]
        try:
            result = json.loads(body)
        except ValueError:
            result = None
        if not isinstance(result, list):
            raise CaucaseError("Server returned an invalid CSR list")
        return result

    def delete_pending_csr(self, csr_id: int) -> None:
        """Reject a pending CSR."""
        self._request("DELETE", f"/csr/{csr_id}", https=True)

    def create_certificate(self, csr_id: int, template_csr: bytes = b"") -> None:
        """Sign a pending CSR, optionally taking subject and extensions from a template."""
        headers = {"Content-Type": "application/pkcs10"} if template_csr else {}
        self._request("PUT", f"/crt/{csr_id}", template_csr, headers, https=True)

    def revoke_serial(self, serial: int) -> None:
        """Revoke by serial number, unchecked (authenticated)."""
        payload = json.dumps({"revoke_serial": serial})
        self._put_json("/crt/revoke", {"payload": payload, "digest": None}, https=True)


class RetryingCaucaseClient(CaucaseClient):
    """A client that retries network failures forever, every 10 s (cli.md 4.4), for
    daemons. HTTP error statuses and TLS failures are not retried."""

    def __init__(
        self,
        ca_url: str,
        user_key: str | None = None,
        *,
        clock: Clock = utcnow,
        wait: Callable[[float], None] = time.sleep,
        log: TextIO | None = None,
    ) -> None:
        super().__init__(ca_url, user_key)
        self._clock = clock
        self._wait = wait
        self._log = log

    def _exchange(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str], https: bool
    ) -> Response:
        while True:
            try:
                return super()._exchange(method, path, body, headers, https)
            except CaucaseTLSError:
                raise
            except CaucaseNetworkError as error:
                self.close()
                retry_at = self._clock() + datetime.timedelta(seconds=RETRY_DELAY)
                log = self._log or sys.stdout
                print(
                    "Got a network error, retrying at "
                    f"{retry_at.strftime('%Y-%m-%d %H:%M:%S +0000')}, "
                    f"{type(error.cause).__name__}: {str(error.cause)!r}",
                    file=log,
                    flush=True,
                )
                self._wait(RETRY_DELAY)


def load_valid_ca_list(
    pem_list: Sequence[bytes], now: datetime.datetime
) -> list[x509.Certificate]:
    """The self-signed CA certificates of `pem_list` valid at `now`, in order."""
    result = []
    for pem in pem_list:
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            continue
        if verification.is_valid_ca(certificate, now):
            result.append(certificate)
    return result


def _chain_item(item: object) -> tuple[dict[str, Any], bytes, bytes] | None:
    """The envelope and its (old_pem, new_pem), or None when the item is malformed."""
    if not isinstance(item, dict) or not isinstance(item.get("payload"), str):
        return None
    try:
        payload = json.loads(item["payload"])
        return item, payload["old_pem"].encode("ascii"), payload["new_pem"].encode("ascii")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def verify_ca_chain(
    items: object, trusted_pem_list: Sequence[bytes], now: datetime.datetime
) -> list[bytes]:
    """Walk `ca.crt.json` from the newest trusted CA: each accepted new CA is signed by
    the previous one (http-api 8.2). Returns the accepted new CA PEMs, in order."""
    trusted = load_valid_ca_list(trusted_pem_list, now)
    if not trusted or not isinstance(items, list):
        return []
    anchor = max(trusted, key=lambda certificate: certificate.not_valid_before_utc)
    previous: x509.Certificate | None = None
    result: list[bytes] = []
    for item in items:
        parsed = _chain_item(item)
        if parsed is None:
            continue
        envelope, old_pem, new_pem = parsed
        try:
            old = x509.load_pem_x509_certificate(old_pem)
            verify_envelope(envelope, old.public_key())
        except (ValueError, CaucaseError):
            continue
        if previous is None:
            if old != anchor or not verification.is_valid_ca(old, now):
                continue
            previous = anchor
        if old != previous:
            raise CaucaseError("CA signature chain broken")
        new_list = load_valid_ca_list([new_pem], now)
        if new_list:
            previous = new_list[0]
            result.append(new_pem)
    return result


def update_ca_store(client: CaucaseClient, path: str, now: datetime.datetime) -> bool:
    """Bootstrap (trust on first use) or extend a CA store (cli.md 2.4); whether it changed."""
    loaded = pemfile.read_ca_store(path)
    bootstrapped = not loaded
    if bootstrapped:
        ca_pem = client.get_ca_certificate()
        blocks = pemfile.split_blocks(ca_pem)
        if len(blocks) != 1 or blocks[0].kind is not pemfile.BlockKind.CERTIFICATE:
            raise CaucaseError(f"{client.ca_url} did not return a CA certificate")
        pemfile.save_ca_store(path, [blocks[0].text])
        loaded = pemfile.read_ca_store(path)
    valid = [pem for pem in loaded if load_valid_ca_list([pem], now)]
    if not valid and not bootstrapped:
        raise CaucaseError(f"Local trust store is unusable: {path}")
    newer = client.get_ca_certificate_chain(valid, now)
    result = valid + [pem for pem in newer if pem not in valid]
    if result != loaded:
        pemfile.save_ca_store(path, result)
        return True
    return bootstrapped


def _crl_authority(crl: x509.CertificateRevocationList) -> int | None:
    try:
        aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    identifier = aki.value.key_identifier
    return None if identifier is None else int.from_bytes(identifier, "big")


def _verified_crl(
    pem: bytes, ca_list: Sequence[x509.Certificate]
) -> x509.CertificateRevocationList | None:
    try:
        crl = x509.load_pem_x509_crl(pem)
    except ValueError:
        return None
    for ca in ca_list:
        try:
            if crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
                return crl
        except (TypeError, ValueError):
            continue
    return None


def _index_crls(
    pem_list: Sequence[bytes], ca_list: Sequence[x509.Certificate]
) -> tuple[dict[int | None, bytes], bool]:
    """Verified CRLs keyed by authority key id; and whether one lacks that id."""
    index: dict[int | None, bytes] = {}
    for pem in pem_list:
        crl = _verified_crl(pem, ca_list)
        if crl is not None:
            index[_crl_authority(crl)] = pem
    return index, None in index


def update_crl_store(
    client: CaucaseClient, path: str, ca_list: Sequence[x509.Certificate]
) -> bool:
    """Replace the CRL store with the server's CRLs when they differ from the verified
    local ones (cli.md 2.5, errata 5); whether it changed."""
    local_pem_list = pemfile.read_crl_store(path)
    local, legacy = _index_crls(local_pem_list, ca_list)
    if legacy:
        local, updated = {}, True
    else:
        updated = len(local_pem_list) != len(local)
    server_pem_list = client.get_crl_list()
    server, _ = _index_crls(server_pem_list, ca_list)
    for authority, pem in server.items():
        if local.pop(authority, None) != pem:
            updated = True
    if local:
        updated = True
    if updated:
        pemfile.save_crl_store(path, server_pem_list)
    return updated
