"""caucased's own HTTPS identity and TLS context (http-api 1.4, 13; ca-profile 1.10).

The key file holds the key (traditional PEM for RSA and EC, PKCS#8 for Ed25519) then the
leaf certificate issued by the internal http CA. It is reused while it verifies, is not
within the renewal threshold and its key is of the configured type; otherwise a fresh key is
made and the certificate renewed (or issued anew).
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile

from cryptography import x509

from caucase.ca import CertificateAuthority
from caucase.clock import Clock
from caucase.crypto import keys, x509util
from caucase.crypto.pemfile import BlockKind, split_blocks, write_file
from caucase.exceptions import CaucaseError, PemFileError

LoadedIdentity = tuple[keys.PrivateKey, x509.Certificate]


def _is_ca(crt: x509.Certificate) -> bool:
    """Whether BasicConstraints says CA; certificates without it do not qualify either way."""
    constraints = crt.extensions.get_extension_for_class(x509.BasicConstraints)
    return constraints.value.ca


def _load_identity(path: str, http_cas: CertificateAuthority) -> LoadedIdentity | None:
    """The key and the single leaf certificate of the file, if they are usable."""
    try:
        with open(path, "rb") as handle:
            blocks = split_blocks(handle.read())
        key_blocks = [b for b in blocks if b.kind is BlockKind.KEY]
        certificates = [
            x509.load_pem_x509_certificate(b.text)
            for b in blocks
            if b.kind is BlockKind.CERTIFICATE
        ]
        leaves = [crt for crt in certificates if not _is_ca(crt)]
        if len(key_blocks) != 1 or len(leaves) != 1:
            return None
        key = keys.load_private_key(key_blocks[0].text)
        leaf = leaves[0]
        if not keys.same_public_key(leaf, key):
            return None
        http_cas.verify_certificate(leaf)
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, CaucaseError):
        return None
    return key, leaf


class ServerIdentity:
    """The HTTPS key pair of caucased, kept in `key_path` and renewed before expiry."""

    def __init__(
        self,
        key_path: str,
        http_cas: CertificateAuthority,
        cau: CertificateAuthority,
        host: str,
        key_spec: keys.KeySpec,
        threshold_days: float,
        clock: Clock,
    ) -> None:
        self.key_path = key_path
        self._http_cas = http_cas
        self._cau = cau
        self._host = host
        self._key_spec = key_spec
        self._threshold = datetime.timedelta(days=threshold_days)
        self._clock = clock
        self._certificate: x509.Certificate | None = None
        self.trusted_user_cas: tuple[bytes, ...] = ()

    @property
    def renewal_due(self) -> datetime.datetime:
        """When the certificate enters the renewal threshold."""
        assert self._certificate is not None
        return self._certificate.not_valid_after_utc - self._threshold

    def prepare(self) -> None:
        """At start: reuse the file when it verifies, is not due and its key has the configured
        type, else renew or issue (clients do not pin this key: a new type is safe at once)."""
        loaded = _load_identity(self.key_path, self._http_cas)
        if loaded is None:
            self._issue()
            return
        key, self._certificate = loaded
        if self.renewal_due <= self._clock() or not self._has_configured_type(key):
            self.renew()

    def _has_configured_type(self, key: keys.PrivateKey) -> bool:
        """Only the type matters: like the reference, a new --key-len waits for renewal."""
        try:
            return keys.kind(key.public_key()) is self._key_spec.type
        except CaucaseError:
            return False

    def renew(self) -> None:
        """Fresh key, certificate renewed by the http CA (issued anew if renewal is refused)."""
        assert self._certificate is not None
        key = keys.generate(self._key_spec)
        csr = x509util.make_renewal_csr(key, self._certificate.subject)
        try:
            crt_pem = self._http_cas.renew(
                x509util.dump_certificate(self._certificate),
                x509util.dump_certificate_request(csr),
            )
        except CaucaseError:
            self._issue()
            return
        self._store(key, crt_pem)

    def _issue(self) -> None:
        key = keys.generate(self._key_spec)
        csr = x509util.make_server_csr(key, self._host)
        csr_id = self._http_cas.append_csr(
            x509util.dump_certificate_request(csr), override_limits=True
        )
        self._store(key, self._http_cas.create_certificate(csr_id))

    def _store(self, key: keys.PrivateKey, crt_pem: bytes) -> None:
        try:
            write_file(self.key_path, keys.dump_private_key(key) + crt_pem, private=True)
        except PemFileError as error:
            raise CaucaseError(f"cannot write the server key file: {error}") from None
        self._certificate = x509util.load_certificate(crt_pem)

    def user_ca_list(self) -> tuple[bytes, ...]:
        """PEMs of every CAU CA certificate now held (client certificate trust)."""
        return tuple(x509util.dump_certificate(crt) for crt in self._cau.get_ca_certificate_list())

    def chain(self) -> bytes:
        """The leaf, then the http CA certificate that signed it: the full chain a client
        trusting only that CA (/https-ca.crt.pem) needs to verify us (Python 3.11's
        certificate checks, certbot's included, do not build it from the bundle)."""
        assert self._certificate is not None
        leaf = self._certificate
        issuer = x509util.authority_key_id_int(leaf)
        chain = [leaf] + [
            ca
            for ca in self._http_cas.get_ca_certificate_list()
            if x509util.authority_key_id_int(ca) == issuer
        ]
        return b"".join(x509util.dump_certificate(crt) for crt in chain)

    def make_context(self) -> ssl.SSLContext:
        """TLS >= 1.2, the full chain, optional client certificates issued by any CAU CA,
        no CA names sent."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_mode = ssl.CERT_OPTIONAL
        self.trusted_user_cas = self.user_ca_list()
        context.load_verify_locations(cadata=b"".join(self.trusted_user_cas).decode("ascii"))
        # The key file holds only the leaf; the chain goes through a file of its own, since
        # OpenSSL loads certificate chains from files only (public data, removed at once).
        with tempfile.TemporaryDirectory() as directory:
            chain_path = os.path.join(directory, "chain.pem")
            with open(chain_path, "wb") as chain_file:
                chain_file.write(self.chain())
            context.load_cert_chain(chain_path, os.fspath(self.key_path))
        return context
