"""Challenges (RFC 8555 section 8): key authorizations and the http-01 and dns-01
validators; tls-alpn-01 lives in ``tls_alpn``.

A validator raises a ``ValidationFailed`` problem (stored in the challenge's ``error``) or
returns: the identifier is then validated. Each bounds what it waits for and reads, since
the other end is chosen by whoever placed the order.
"""

from __future__ import annotations

import hashlib
import http.client
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from josepy import json_util
from josepy.jwk import JWK

from caucase.acme import keys
from caucase.acme.identifiers import IP, Identifier
from caucase.acme.problems import ConnectionProblem, IncorrectResponse
from caucase.acme.resolver import Resolver

HTTP_01 = "http-01"
DNS_01 = "dns-01"
TLS_ALPN_01 = "tls-alpn-01"
TOKEN_BYTES = 32
DEFAULT_TIMEOUT = 10.0
# A key authorization is a 43-character token, a dot and a 43-character thumbprint.
MAX_HTTP_BODY = 1024
CHALLENGE_PATH = "/.well-known/acme-challenge/"


def new_token() -> str:
    """8.1: at least 128 bits of entropy, base64url."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def key_authorization(token: str, account_key: JWK) -> str:
    """8.1: ``token "." base64url(thumbprint(accountKey))``."""
    return f"{token}.{keys.thumbprint(account_key)}"


def key_authorization_digest(authorization: str) -> bytes:
    """SHA-256 of the key authorization: what dns-01 and tls-alpn-01 publish."""
    return hashlib.sha256(authorization.encode()).digest()


def dns_txt_value(authorization: str) -> str:
    """8.4: the TXT record's value."""
    return json_util.encode_b64jose(key_authorization_digest(authorization))


class Validator(Protocol):
    @property
    def type(self) -> str:
        """The challenge type, as challenge objects name it (8.3, 8.4, RFC 8737)."""

    def applies_to(self, identifier: Identifier) -> bool:
        """Whether this challenge type can prove control of `identifier`."""

    def validate(self, identifier: Identifier, token: str, authorization: str) -> None:
        """Return once the identifier's holder proved control; raise ValidationFailed."""


def host_header(identifier: Identifier, port: int) -> str:
    """RFC 8738 3: an IPv6 address in brackets; the port when it is not the default."""
    host = f"[{identifier.value}]" if ":" in identifier.value else identifier.value
    return host if port == 80 else f"{host}:{port}"


def addresses_of(identifier: Identifier, resolver: Resolver) -> list[str]:
    if identifier.type == IP:
        return [identifier.value]
    return resolver.addresses(identifier.value)


@dataclass(frozen=True)
class Http01Validator:
    """8.3: GET http://<identifier>:<port>/.well-known/acme-challenge/<token> answers the
    key authorization (trailing whitespace ignored). Redirects are not followed."""

    resolver: Resolver
    port: int = 80
    timeout: float = DEFAULT_TIMEOUT
    type: str = HTTP_01

    def applies_to(self, identifier: Identifier) -> bool:
        return not identifier.is_wildcard

    def validate(self, identifier: Identifier, token: str, authorization: str) -> None:
        errors = []
        for address in addresses_of(identifier, self.resolver):
            try:
                status, body = self._fetch(address, identifier, token)
            except (OSError, http.client.HTTPException) as error:
                errors.append(f"{address}: {error}")
                continue
            if status != 200:
                raise IncorrectResponse(f"{identifier.value} answered HTTP {status}")
            if len(body) > MAX_HTTP_BODY:
                raise IncorrectResponse(
                    f"{identifier.value} answered more than {MAX_HTTP_BODY} bytes"
                )
            if body.rstrip() != authorization.encode():
                raise IncorrectResponse(
                    f"{identifier.value} answered {len(body)} bytes that are not the key "
                    "authorization"
                )
            return
        raise ConnectionProblem(f"cannot fetch the http-01 answer: {'; '.join(errors)}")

    def _fetch(self, address: str, identifier: Identifier, token: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(address, self.port, timeout=self.timeout)
        try:
            connection.request(
                "GET",
                CHALLENGE_PATH + token,
                headers={"Host": host_header(identifier, self.port), "Accept": "*/*"},
            )
            response = connection.getresponse()
            return response.status, response.read(MAX_HTTP_BODY + 1)
        finally:
            connection.close()


@dataclass(frozen=True)
class Dns01Validator:
    """8.4: a TXT record at ``_acme-challenge.<name>`` (of the base name for a wildcard)
    holds base64url(SHA-256(key authorization)). Not for IP addresses (RFC 8738 7)."""

    resolver: Resolver
    type: str = DNS_01

    def applies_to(self, identifier: Identifier) -> bool:
        return identifier.type != IP

    def validate(self, identifier: Identifier, token: str, authorization: str) -> None:
        name = "_acme-challenge." + identifier.base.value
        records = self.resolver.txt(name)
        if dns_txt_value(authorization) not in records:
            raise IncorrectResponse(f"no TXT record of {name} holds the expected digest")


@dataclass(frozen=True)
class Validators:
    """The challenge types a caucased offers, by name."""

    by_type: Mapping[str, Validator]

    @classmethod
    def of(cls, validators: Iterable[Validator]) -> Validators:
        return cls({validator.type: validator for validator in validators})

    def types_for(self, identifier: Identifier) -> list[str]:
        """The challenges an authorization of `identifier` offers, in a stable order."""
        return [
            name for name, validator in self.by_type.items() if validator.applies_to(identifier)
        ]

    def validate(
        self, challenge_type: str, identifier: Identifier, token: str, authorization: str
    ) -> None:
        self.by_type[challenge_type].validate(identifier, token, authorization)
