"""The error hierarchy: the WSGI layer maps it to statuses, the CLI to exit codes."""

from __future__ import annotations

import http


class CaucaseError(Exception):
    """Base of every error caucase raises on purpose."""


class CertificateAuthorityException(CaucaseError):
    """A request the certificate authority refuses (HTTP 400 unless a subclass says)."""


class NoStorage(CertificateAuthorityException):
    """The pending-CSR quota is reached (HTTP 507)."""


class NotFound(CertificateAuthorityException):
    """Unknown id, or the row is not in the state the operation needs (HTTP 404)."""


class Found(CertificateAuthorityException):
    """The serial is already revoked (HTTP 409)."""


class CertificateVerificationError(CertificateAuthorityException):
    """A certificate does not chain to a known CA, is outside validity or revoked (HTTP 400)."""

    def __init__(self, reason: str) -> None:
        super().__init__("Certificate verification error: " + reason)
        self.reason = reason


class NotACertificateSigningRequest(CertificateAuthorityException):
    """The body is not exactly one PEM CSR with a valid self-signature (HTTP 400)."""


class NotJSON(CertificateAuthorityException):
    """An envelope payload is not JSON (HTTP 400 "Invalid json payload")."""


class BadEnvelope(CertificateAuthorityException):
    """A signed envelope is malformed: missing field, unknown digest, bad signature (HTTP 400)."""


class BadSerial(CertificateAuthorityException):
    """A serial to revoke is not a non-negative integer (HTTP 400)."""


class UnsupportedKey(CertificateAuthorityException):
    """A key caucase does not use: DSA, an RSA key under 2048 bits, a curve other than P-256
    and P-384, or a key that cannot do what is asked of it (HTTP 400 with the reason)."""


class KeyAlreadyUsed(CertificateAuthorityException):
    """The CAU already holds a row for this public key (HTTP 400; the reference gave 500)."""


class StorageError(CaucaseError):
    """The database failed (unreachable, locked past the busy timeout, read-only, full,
    corrupt): nothing was written. The HTTP layer answers 503 with Retry-After; background
    tasks log one line and try again later."""


class BackupError(CaucaseError):
    """A backup file is malformed, truncated, tampered with, or not for this key."""


class PemFileError(CaucaseError):
    """A PEM file or store is missing, unreadable, or does not hold what is expected."""

    def __init__(self, path: object, message: str) -> None:
        super().__init__(message)
        self.path = path


class CaucaseHTTPError(CaucaseError):
    """The server answered with an error status (>= 400; also an unexpected 3xx)."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        super().__init__(status, headers, body)
        self.status = status
        self.headers = headers
        self.body = body

    def __str__(self) -> str:
        try:
            reason = " " + http.HTTPStatus(self.status).phrase
        except ValueError:
            reason = ""
        detail = self.body[:200].decode("utf-8", "replace").strip()
        return f"HTTP {self.status}{reason}" + (f": {detail}" if detail else "")


class UnusableAnswer(CaucaseError):
    """The server answered, but with something a client cannot use (malformed, or not
    matching the request): a client daemon tries again later."""


class CaucaseNetworkError(CaucaseError):
    """The server could not be reached or its answer was not HTTP (any socket-level cause)."""

    def __init__(self, url: str, cause: BaseException, method: str = "") -> None:
        super().__init__(f"{url}: {type(cause).__name__}: {cause}")
        self.url = url
        self.cause = cause
        self.method = method


class CaucaseTLSError(CaucaseNetworkError):
    """The TLS handshake or session failed (never retried: retrying would not help)."""
