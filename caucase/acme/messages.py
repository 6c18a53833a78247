"""Request payloads (RFC 8555 7.3-7.6, RFC 9773 5), checked and typed.

Each ``parse_*`` takes the payload of a verified request and returns what the handler
needs, or raises the problem the RFC names. Everything a client sends is bounded here
(contacts, identifiers, lengths), so that nothing it stores can grow without limit.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from josepy.jwk import JWK

from caucase.acme import keys
from caucase.acme.identifiers import Identifier, parse_identifiers
from caucase.acme.jws import VerifiedRequest, decode_base64url, load_json_object, parse_flattened
from caucase.acme.problems import (
    BadRevocationReason,
    InvalidContact,
    Malformed,
    UnsupportedContact,
)
from caucase.acme.renewal_info import CertID

MAX_CONTACTS = 4
MAX_CONTACT_LENGTH = 254
MAX_ORDER_IDENTIFIERS = 100
MAX_CERTIFICATE_BYTES = 16 * 1024
# RFC 5280 5.3.1 codes an account may give: not the CA-level ones (cACompromise,
# aACompromise), not removeFromCRL (delta CRLs only), not certificateHold (caucase
# never un-revokes).
REVOCATION_REASONS = {
    0: x509.ReasonFlags.unspecified,
    1: x509.ReasonFlags.key_compromise,
    3: x509.ReasonFlags.affiliation_changed,
    4: x509.ReasonFlags.superseded,
    5: x509.ReasonFlags.cessation_of_operation,
    9: x509.ReasonFlags.privilege_withdrawn,
}
_MAILTO = re.compile(r"mailto:[^@\s,?]+@[^@\s,?]+")


def _object(payload: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if payload is None:
        raise Malformed(f"{what} needs a JSON payload, not POST-as-GET")
    return payload


def _optional_bool(payload: dict[str, Any], name: str) -> bool | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, bool):
        raise Malformed(f"{name!r} is a boolean")
    return value


def parse_contact(value: object) -> tuple[str, ...]:
    """7.3: mailto: URLs only (the one scheme caucase can make sense of)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise Malformed("'contact' is a list of strings")
    if len(value) > MAX_CONTACTS:
        raise Malformed(f"at most {MAX_CONTACTS} contacts")
    for item in value:
        shown = item[:MAX_CONTACT_LENGTH]
        if not item.startswith("mailto:"):
            raise UnsupportedContact(f"{shown!r}: only mailto: contacts are supported")
        if len(item) > MAX_CONTACT_LENGTH or not _MAILTO.fullmatch(item):
            raise InvalidContact(f"{shown!r} is not a mailto: address")
    return tuple(value)


@dataclass(frozen=True)
class NewAccount:
    contact: tuple[str, ...]
    terms_of_service_agreed: bool | None
    only_return_existing: bool
    external_account_binding: dict[str, Any] | None


def parse_new_account(payload: dict[str, Any] | None) -> NewAccount:
    payload = _object(payload, "newAccount")
    binding = payload.get("externalAccountBinding")
    if binding is not None and not isinstance(binding, dict):
        raise Malformed("'externalAccountBinding' is a JWS object")
    return NewAccount(
        parse_contact(payload.get("contact")),
        _optional_bool(payload, "termsOfServiceAgreed"),
        bool(_optional_bool(payload, "onlyReturnExisting")),
        binding,
    )


@dataclass(frozen=True)
class AccountUpdate:
    """7.3.2 and 7.3.6: new contacts, or deactivation (then nothing else changes)."""

    contact: tuple[str, ...] | None
    deactivate: bool


def parse_account_update(payload: dict[str, Any] | None) -> AccountUpdate:
    if payload is None:  # POST-as-GET of the account
        return AccountUpdate(None, False)
    status = payload.get("status")
    if status not in (None, "deactivated"):
        raise Malformed("an account can only be updated to 'deactivated'")
    contact = parse_contact(payload["contact"]) if "contact" in payload else None
    return AccountUpdate(contact, status == "deactivated")


def _optional_time(payload: dict[str, Any], name: str) -> datetime.datetime | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{name!r} is an RFC 3339 date")
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"{name!r} is not an RFC 3339 date") from None
    if moment.tzinfo is None:
        raise Malformed(f"{name!r} has no time zone")
    return moment


@dataclass(frozen=True)
class NewOrder:
    identifiers: tuple[Identifier, ...]
    not_before: datetime.datetime | None
    not_after: datetime.datetime | None
    replaces: CertID | None


def parse_new_order(payload: dict[str, Any] | None) -> NewOrder:
    """7.4; notBefore/notAfter are returned for the caller to refuse or honour against
    the certificate profile; ``replaces`` is RFC 9773 5."""
    payload = _object(payload, "newOrder")
    replaces = payload.get("replaces")
    if replaces is not None and not isinstance(replaces, str):
        raise Malformed("'replaces' is a certID string")
    return NewOrder(
        parse_identifiers(payload.get("identifiers"), MAX_ORDER_IDENTIFIERS),
        _optional_time(payload, "notBefore"),
        _optional_time(payload, "notAfter"),
        CertID.parse(replaces) if replaces is not None else None,
    )


@dataclass(frozen=True)
class Revocation:
    certificate: x509.Certificate
    reason: x509.ReasonFlags


def parse_revocation(payload: dict[str, Any] | None) -> Revocation:
    """7.6: the certificate (base64url DER) and an optional RFC 5280 reason code."""
    payload = _object(payload, "revokeCert")
    encoded = payload.get("certificate")
    if isinstance(encoded, str) and len(encoded) > MAX_CERTIFICATE_BYTES * 4 // 3 + 4:
        raise Malformed(f"a certificate has at most {MAX_CERTIFICATE_BYTES} bytes")
    der = decode_base64url(encoded, "'certificate'")
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise Malformed("'certificate' is not a DER certificate") from None
    code = payload.get("reason", 0)
    if isinstance(code, bool) or not isinstance(code, int) or code not in REVOCATION_REASONS:
        raise BadRevocationReason(f"reason {code!r} is not one of {sorted(REVOCATION_REASONS)}")
    return Revocation(certificate, REVOCATION_REASONS[code])


def parse_key_change(request: VerifiedRequest, account_key: JWK) -> JWK:
    """7.3.5: the new key of a keyChange request whose outer JWS (signed by the account,
    `request.kid`) was verified; the inner JWS is signed by the new key, for the same url,
    and names the account and its current key. The caller still refuses a key another
    account holds (409)."""
    inner = parse_flattened(_object(request.payload, "keyChange"), "keyChange inner JWS")
    protected = inner.protected
    if "jwk" not in protected or "kid" in protected:
        raise Malformed("the inner JWS carries the new key as 'jwk'")
    if protected.get("url") != request.url:
        raise Malformed("the inner JWS 'url' is not the keyChange URL")
    new_key = keys.load_account_key(protected["jwk"])
    keys.check_fits(new_key, keys.signature_algorithm(protected.get("alg")))
    change = inner.verify(new_key, "keyChange inner JWS")
    document = load_json_object(change, "keyChange payload")
    if document.get("account") != request.kid:
        raise Malformed("the keyChange 'account' is not the signing account")
    if not keys.same_key(keys.load_account_key(document.get("oldKey")), account_key):
        raise Malformed("the keyChange 'oldKey' is not the account's key")
    if keys.same_key(new_key, account_key):
        raise Malformed("the new key is the current key")
    return new_key
