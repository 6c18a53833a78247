"""Certificates through ACME (RFC 8555 7.4 finalize, 7.4.2 download, 7.6 revocation),
issued and revoked by the CAS's CertificateAuthority like any other.

Finalize signs with the profile of a CSR a user approves through /cas: the same filtering
of the CSR's extensions, the validity of --service-crt-validity (cut to the signing CA's
end), the CRL distribution point, the active CA of a rollover. The subject and the
subjectAltName come from the order. The CSR and its certificate are stored in the CAS crt
table in the transaction that marks the order valid, so that renewal by the key holder,
revocation by serial and the CRL treat them as any other; the order keeps the serial,
which says whose certificate it is.
"""

from __future__ import annotations

import dataclasses

from cryptography import x509

from caucase import events
from caucase.acme import keys, messages
from caucase.acme.accounts import Signed
from caucase.acme.csr import check_finalize_csr
from caucase.acme.identifiers import Identifier
from caucase.acme.ordering import Orders, OrderView, check_owner
from caucase.acme.orders import check_finalizable
from caucase.acme.problems import (
    AlreadyRevoked,
    BadCSR,
    Malformed,
    NotFound,
    OrderNotReady,
    Unauthorized,
)
from caucase.ca import CertificateAuthority
from caucase.clock import to_timestamp
from caucase.crypto import keys as crypto_keys
from caucase.crypto import x509util
from caucase.events import NULL_OBSERVER, Observer
from caucase.exceptions import CaucaseError, CertificateVerificationError
from caucase.storage.acme import AcmeStorage
from caucase.storage.acme_schema import VALID

PEM_CERTIFICATE_CHAIN = "application/pem-certificate-chain"


class Issuance:
    def __init__(
        self,
        storage: AcmeStorage,
        cas: CertificateAuthority,
        orders: Orders,
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        """`observer` hears of each certificate issued, once its order is committed."""
        self._storage = storage
        self._cas = cas
        self._orders = orders
        self._observer = observer

    def finalize(self, signed: Signed, order_id: int) -> OrderView:
        """7.4: the order, valid with its certificate; orderNotReady or badCSR otherwise
        (the order then stays as it was)."""
        account = signed.signer
        order = self._orders.owned_order(account, order_id)
        payload = signed.request.payload
        if payload is None or set(payload) != {"csr"}:
            raise Malformed("finalize takes an object with a 'csr' member")
        view = self._orders.view(order)
        check_finalizable(view.status)
        identifiers = [Identifier(kind, value) for kind, value in order.identifiers]
        checked = check_finalize_csr(payload["csr"], identifiers, keys.key_id(signed.request.jwk))
        self._observer.ready()
        try:
            crt_pem, now = self._cas.sign_for_order(checked.csr, checked.template)
        except CaucaseError as error:
            raise BadCSR(f"the CSR cannot be signed: {error}") from None
        certificate = x509util.load_certificate(crt_pem)
        with self._storage.transaction():
            signed.spend()
            crt_id = self._cas.store_signed(checked.csr, crt_pem, now)
            issued = self._storage.order_issued(
                order.id, crt_id, certificate.serial_number,
                to_timestamp(certificate.not_valid_after_utc), crt_pem,
            )  # fmt: skip
            if not issued:
                raise OrderNotReady("the order was finalized meanwhile")
        self._observer.notify(events.acme_issued("cas", crt_id, certificate))
        finalized = dataclasses.replace(
            order, status=VALID, crt_id=crt_id, serial=certificate.serial_number
        )
        return self._orders.view(finalized, view.authorizations)

    def certificate_chain(self, signed: Signed, order_id: int) -> bytes:
        """7.4.2: the leaf, then the CAS CA certificate that signed it."""
        found = self._storage.certificate(order_id)
        if found is None:
            raise NotFound(f"no order {order_id}")
        owner, crt_pem = found
        check_owner(signed.signer, owner)
        if crt_pem is None:
            raise NotFound("the order has no certificate")
        leaf = x509util.load_certificate(crt_pem)
        issuer = x509util.authority_key_id_int(leaf)
        for ca in self._cas.get_ca_certificate_list():
            ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            if int.from_bytes(ski.digest, "big") == issuer:
                return crt_pem + x509util.dump_certificate(ca)
        return crt_pem

    def revoke(self, signed: Signed) -> None:
        """7.6: by the account whose order issued the certificate, or with the
        certificate's own key (``jwk``); the reason goes into the CRL entry."""
        revocation = messages.parse_revocation(signed.request.payload)
        certificate = revocation.certificate
        if signed.account is None:
            if keys.key_id(signed.request.jwk) != crypto_keys.key_id(certificate.public_key()):
                raise Unauthorized("the request is not signed by the certificate's key")
        else:
            order = self._storage.order_of_serial(certificate.serial_number)
            if order is None or order.account_id != signed.account.id:
                raise Unauthorized("the certificate was not issued to this account")
        try:
            self._cas.revoke_certificate(
                x509util.dump_certificate(certificate), revocation.reason, "key-holder"
            )
        except CertificateVerificationError as error:
            if error.reason == "certificate revoked":
                raise AlreadyRevoked("the certificate is revoked already") from None
            raise Unauthorized(f"the certificate cannot be revoked: {error.reason}") from None
