"""CA and CRL stores kept up to date from a caucased (cli.md 2.4, 2.5; http-api 8.2).

A CA store grows only through the chain of signed envelopes of `ca.crt.json`, starting from
a CA it already trusts (or, on first use, the one the server offers); a CRL store is
replaced by the server's CRLs whenever they differ from the verified local ones.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509

from caucase.crypto import pemfile, verification
from caucase.crypto.envelope import verify_envelope
from caucase.exceptions import CaucaseError, UnusableAnswer

if TYPE_CHECKING:
    from caucase.client import CaucaseClient


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
            raise UnusableAnswer("CA signature chain broken")
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
            raise UnusableAnswer(f"{client.ca_url} did not return a CA certificate")
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


def revoked_serials(
    crl_pem_list: Sequence[bytes], ca_list: Sequence[x509.Certificate]
) -> set[int]:
    """The serials revoked by those CRLs of `crl_pem_list` that a CA of `ca_list` signed."""
    serials: set[int] = set()
    for pem in crl_pem_list:
        crl = _verified_crl(pem, ca_list)
        if crl is not None:
            serials.update(entry.serial_number for entry in crl)
    return serials


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
