"""CaucaseClient: the HTTP(S) library every client command uses (http-api 16, cli.md 2.6).

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
import select
import socket
import ssl
import urllib.parse
from collections.abc import Sequence
from typing import Any

from cryptography import x509

from caucase import __version__
from caucase.acme import renewal_info
from caucase.acme.renewal_info import CertID
from caucase.crypto import keys, pemfile, x509util
from caucase.crypto.envelope import sign_envelope
from caucase.exceptions import (
    CaucaseError,
    CaucaseHTTPError,
    CaucaseNetworkError,
    CaucaseTLSError,
    PemFileError,
    UnusableAnswer,
)
from caucase.ports import http_port_for, https_port_for
from caucase.renewal import RenewalWindow
from caucase.trust_stores import verify_ca_chain

USER_AGENT = "caucase " + __version__
TLS_PROBE_TIMEOUT = 5.0
_CRL_BLOCK = pemfile.BlockKind.CRL
# What a connection the server already closed raises when it is used again.
_CLOSED_CONNECTION = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)
# What a plain HTTP request gets from a TLS listener (caucased resets it).
_NOT_HTTP = (http.client.BadStatusLine, ConnectionResetError, BrokenPipeError)
# RFC 9110 9.2.1: requests that change nothing on the server, so safe to send again.
_SAFE_METHODS = ("GET", "HEAD")

Response = tuple[int, list[tuple[str, str]], bytes]


def parse_ca_url(ca_url: str) -> tuple[str, int, str]:
    """Host, HTTP port and path of a caucased URL. The scheme must be given (http or https,
    ignored as by the reference): without it, "host:port" reads as a scheme or a path."""
    parsed = urllib.parse.urlsplit(ca_url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        hint = "" if "://" in ca_url else f" (did you mean http://{ca_url} ?)"
        raise CaucaseError(f"{ca_url!r} is not an http:// or https:// URL{hint}")
    try:
        port = parsed.port or 80
    except ValueError:
        raise CaucaseError(f"Invalid port in URL {ca_url!r}") from None
    return parsed.hostname, port, parsed.path


def _user_key_problem(path: str) -> str | None:
    """Why a user key file cannot authenticate, as `load_cert_chain` sees it: its first
    private key and its first certificate, which must match; None when they do."""
    blocks = pemfile.read_blocks(path)
    key_blocks = [block for block in blocks if block.kind is pemfile.BlockKind.KEY]
    private = [block for block in key_blocks if "PRIVATE" in block.label]
    certificates = [block for block in blocks if block.kind is pemfile.BlockKind.CERTIFICATE]
    need = "the file needs the private key and its certificate"
    if not private:
        return f"{path} holds no private key: {need}"
    if not certificates:
        return f"{path} holds no certificate: {need}"
    try:
        key = keys.load_private_key(private[0].text)
    except (ValueError, TypeError) as error:
        return f"{path}: unusable private key ({error}); it must not be encrypted"
    certificate = pemfile.parse_certificate(path, certificates[0])
    if not keys.same_public_key(certificate, key):
        return f"{path}: its certificate does not belong to its private key: {need}"
    return None


def _tls_context(user_key: str | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if user_key is not None:
        # Checked first: the messages of OpenSSL ("PEM lib") do not say what is wrong, and
        # it would prompt on the terminal for an encrypted key.
        try:
            problem = _user_key_problem(user_key)
        except PemFileError as error:
            problem = str(error)
        if problem is not None:
            raise PemFileError(user_key, f"Failed to load user key: {problem}")
        try:
            context.load_cert_chain(user_key)
        except (ssl.SSLError, OSError) as error:
            raise PemFileError(user_key, f"Failed to load user key: {user_key}: {error}") from None
    return context


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether an idle kept-alive connection is unusable: readable before any request was
    sent means the server closed it (its idle timeout) or sent something unsolicited."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _speaks_tls(host: str, port: int) -> bool:
    """Whether a TLS handshake succeeds on host:port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=TLS_PROBE_TIMEOUT) as raw,
            context.wrap_socket(raw),
        ):
            return True
    except OSError:
        return False


def _json_document(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise CaucaseError(f"Server returned an invalid {what}") from None


def _sign(key: keys.PrivateKey, payload: str) -> dict[str, Any]:
    """A signed envelope, or a clear error for a key that cannot sign one."""
    try:
        return sign_envelope(key, payload)
    except (ValueError, CaucaseError) as error:
        raise CaucaseError(f"Cannot sign the request with this key: {error}") from None


class _Failed(Exception):
    """A failed attempt: the error to raise, and whether the request was sent whole."""

    def __init__(self, error: CaucaseNetworkError, sent: bool) -> None:
        super().__init__(error)
        self.error = error
        self.sent = sent


class CaucaseClient:
    """Requests to one authority of a caucased, one persistent connection per scheme.

    Errors: `CaucaseHTTPError` for statuses >= 300, `CaucaseNetworkError` (or its
    `CaucaseTLSError` subclass) when no HTTP answer could be obtained."""

    def __init__(self, ca_url: str, user_key: str | None = None) -> None:
        host, port, self._prefix = parse_ca_url(ca_url)
        self.ca_url = ca_url
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
        """One request and its full response, network failures as CaucaseNetworkError.

        A kept-alive connection the server closed meanwhile (caucased drops idle ones after
        a few seconds) is replaced before sending. When one closes while the request is on
        its way, the request is sent again on a new connection only if it was not sent
        whole (so the server cannot have acted on it) or is a GET."""
        connection = self._https if https else self._http
        if connection.sock is not None and _closed_by_peer(connection.sock):
            connection.close()
        reused = connection.sock is not None
        try:
            return self._attempt(connection, method, path, body, headers, https)
        except _Failed as failure:
            error = failure.error
            resendable = not failure.sent or method in _SAFE_METHODS
            if reused and resendable and isinstance(error.cause, _CLOSED_CONNECTION):
                try:
                    return self._attempt(connection, method, path, body, headers, https)
                except _Failed as second:
                    error = second.error
            elif not reused and not https and isinstance(error.cause, _NOT_HTTP):
                self._refuse_tls_port(connection, error)
            raise error from error.cause

    def _attempt(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        https: bool,
    ) -> Response:
        all_headers = {"User-Agent": USER_AGENT, **headers}
        sent = False
        try:
            connection.request(method, self._prefix + path, body=body, headers=all_headers)
            sent = True
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            url = self._url(path, https)
            if isinstance(error, ssl.SSLError):
                raise _Failed(CaucaseTLSError(url, error, method), sent) from error
            raise _Failed(CaucaseNetworkError(url, error, method), sent) from error
        if response.will_close:
            connection.close()
        return response.status, response.getheaders(), data

    def _refuse_tls_port(
        self, connection: http.client.HTTPConnection, error: CaucaseNetworkError
    ) -> None:
        """A clear error when the URL names caucased's HTTPS port instead of its HTTP one."""
        if _speaks_tls(connection.host, connection.port):
            http_port = http_port_for(connection.port)
            raise CaucaseError(
                f"{error.url}: port {connection.port} speaks TLS: the URL must give "
                f"caucased's HTTP port (usually {http_port}), not its HTTPS one"
            ) from None

    def get(self, path: str) -> Response:
        """An anonymous GET over HTTP whatever its status (network failures raise)."""
        return self._exchange("GET", path, None, {}, False)

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
            raise UnusableAnswer(f"Server returned an invalid CSR id: {location!r}") from None

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
            raise UnusableAnswer("Server returned an invalid CA chain") from None
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
        if new_certificate is None or not keys.same_public_key(new_certificate, new_key):
            raise UnusableAnswer("Server returned an invalid renewed certificate")
        return new_key, crt_pem

    def get_renewal_window(self, certificate: x509.Certificate) -> RenewalWindow | None:
        """The renewal window the server suggests for `certificate` (RFC 9773), or None
        when it suggests none: a server without renewal information (caucase 0.9.17
        answers 404), or a certificate it does not know. UnusableAnswer for a document
        that is not a valid renewalInfo (RFC 9773 4.2: treated as no answer)."""
        try:
            cert_id = CertID.of(certificate)
        except (ValueError, x509.ExtensionNotFound):
            return None
        try:
            body = self._request("GET", f"/renewal-info/{cert_id}")[2]
        except CaucaseHTTPError as error:
            if error.status in (404, 405):
                return None
            raise
        try:
            return renewal_info.parse_suggested_window(body)
        except ValueError as error:
            raise UnusableAnswer(
                f"Server returned invalid renewal information ({error})"
            ) from None

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
            raise UnusableAnswer("Server returned an invalid CSR list")
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

    def get_inventory_page(self, parameters: dict[str, str]) -> dict[str, Any]:
        """One page of the issued certificates (authenticated): {"certificates": [...],
        "next": cursor or None}. A server without an inventory (caucase 0.9.17) answers 404."""
        path = "/inventory?" + urllib.parse.urlencode(parameters)
        page = _json_document(self._request("GET", path, https=True)[2], "certificate list")
        if not (isinstance(page, dict) and isinstance(page.get("certificates"), list)):
            raise UnusableAnswer("Server returned an invalid certificate list")
        return page

    # ACME external account bindings (a client of the CAU, authenticated)

    def new_acme_eab(self, scope: Sequence[str]) -> tuple[str, str]:
        """A new credential for the identifier patterns of `scope`: (kid, HMAC key)."""
        body = self._put_json("/acme/eab", {"scope": list(scope)}, https=True)
        answer = _json_document(body, "ACME credential")
        kid, key = answer.get("kid"), answer.get("hmac_key")
        if not (isinstance(kid, str) and isinstance(key, str) and kid and key):
            raise CaucaseError("Server returned an invalid ACME credential")
        return kid, key

    def list_acme_eab(self) -> list[dict[str, Any]]:
        """Every credential: kid, scope, minted_by, minted_at, account, status."""
        result = _json_document(self._request("GET", "/acme/eab", https=True)[2], "list")
        if not isinstance(result, list) or not all(isinstance(item, dict) for item in result):
            raise CaucaseError("Server returned an invalid ACME credential list")
        return result

    def revoke_acme_eab(self, kid: str) -> None:
        """Revoke a credential, and the ACME account bound to it."""
        self._put_json("/acme/eab/revoke", {"kid": kid}, https=True)

    # Renewal windows (RFC 9773) moved by an operator (authenticated)

    def renew_early(
        self,
        spread: datetime.timedelta,
        serials: Sequence[int] = (),
        *,
        issued_before: datetime.datetime | None = None,
    ) -> dict[str, Any]:
        """Move renewal windows to now, spread over `spread` (authenticated): of the
        certificates with these serials, or without serials of every valid certificate
        (issued before `issued_before` when given). The server's account:
        {"start", "end", "moved": [serials] or a count, "unknown": [serials]}."""
        request: dict[str, Any] = {"spread": int(spread.total_seconds())}
        if serials:
            request["serials"] = [str(serial) for serial in serials]
        else:
            request["all"] = True
            if issued_before is not None:
                request["before"] = int(issued_before.timestamp())
        try:
            result = json.loads(self._put_json("/renewal-info", request, https=True))
        except ValueError:
            result = None
        if not isinstance(result, dict) or not {"start", "end", "moved"} <= set(result):
            raise UnusableAnswer("Server returned an invalid early renewal answer")
        return result
