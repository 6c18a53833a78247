"""The CA key pairs of one authority: each stored CA row parsed and checked once, and the
chain document (ca.crt.json) in which each CA vouches for its successor (ca-profile 3.4).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Sequence
from typing import Any

from cryptography import x509

from caucase.crypto import keys, verification, x509util
from caucase.crypto.envelope import sign_envelope


@dataclasses.dataclass(frozen=True)
class CAKeyPair:
    """One held CA: parsed once at load time, never re-parsed per request."""

    key: keys.PrivateKey
    crt: x509.Certificate
    pem: bytes
    authority_key_id: int

    @property
    def not_before(self) -> datetime.datetime:
        return self.crt.not_valid_before_utc

    @property
    def not_after(self) -> datetime.datetime:
        return self.crt.not_valid_after_utc


def load_ca_key_pair(key_pem: bytes, crt_pem: bytes, now: datetime.datetime) -> CAKeyPair:
    """Parse and check one stored CA row; ValueError says why it cannot be used.

    Any RSA, EC or Ed25519 key is kept (an older database may hold a CA key that would no
    longer be accepted as new: dropping it would break every certificate it issued)."""
    key = keys.load_private_key(key_pem)
    crt = x509util.load_certificate(crt_pem)
    if not keys.same_public_key(crt, key):
        raise ValueError("CA certificate does not match its key")
    if not verification.is_valid_ca(crt, now):
        raise ValueError("not a valid self-signed CA certificate")
    return CAKeyPair(key, crt, x509util.dump_certificate(crt), x509util.authority_key_id_int(crt))


def build_chain(pair_list: Sequence[CAKeyPair]) -> list[dict[str, Any]]:
    """ca.crt.json: each CA vouches for its successor (ca-profile 3.4), with the digest of
    its own key type (sha256 for RSA, as the reference)."""
    chain = []
    for previous, current in zip(pair_list, pair_list[1:]):
        payload = json.dumps({"old_pem": previous.pem.decode(), "new_pem": current.pem.decode()})
        chain.append(sign_envelope(previous.key, payload))
    return chain
