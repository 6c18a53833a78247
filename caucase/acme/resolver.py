"""Name lookups of challenge validation: A/AAAA for http-01 and tls-alpn-01, TXT for dns-01.

By default the system resolver answers (``getaddrinfo``, so /etc/hosts counts, and the
servers of /etc/resolv.conf for TXT); ``--acme-dns-server HOST[:PORT]`` sends every lookup
to one server instead, as pebble's ``-dnsserver`` does. DNS messages are read with
dnspython: the standard library cannot ask for TXT records, and a DNS parser facing the
network is not something to write by hand.
"""

from __future__ import annotations

import ipaddress
import socket

import dns.exception
import dns.inet
import dns.rdatatype
import dns.resolver

from caucase.acme.problems import DNSProblem

DNS_PORT = 53
DEFAULT_TIMEOUT = 10.0
SYSTEM_RESOLV_CONF = "/etc/resolv.conf"


def parse_dns_server(text: str) -> tuple[str, int]:
    """``HOST``, ``HOST:PORT``, ``[IPV6]:PORT`` or a bare IPv6 address -> (address, port);
    a host name is looked up once, here. ValueError says what is wrong."""
    host, port = text, DNS_PORT
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [IPV6]:PORT")
        if rest:
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    if not 0 < port < 65536 or not host:
        raise ValueError(f"{text!r}: expected HOST[:PORT]")
    try:
        return str(ipaddress.ip_address(host)), port
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0]), port
    except OSError as error:
        raise ValueError(f"{host!r} does not resolve: {error}") from None


def _system_resolver(resolv_conf: str) -> dns.resolver.Resolver:
    """The servers of `resolv_conf`; none when it is missing or empty, so that TXT
    lookups then fail as a dns problem instead of caucased failing to start."""
    try:
        return dns.resolver.Resolver(filename=resolv_conf)
    except dns.resolver.NoResolverConfiguration:
        return dns.resolver.Resolver(configure=False)


class Resolver:
    """The lookups one caucased makes to validate challenges."""

    def __init__(
        self,
        server: tuple[str, int] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        resolv_conf: str = SYSTEM_RESOLV_CONF,
    ) -> None:
        self._server = server
        if server is None:
            self._dns = _system_resolver(resolv_conf)
        else:
            self._dns = dns.resolver.Resolver(configure=False)
            self._dns.nameservers = [server[0]]
            self._dns.port = server[1]
        self._dns.lifetime = timeout

    def addresses(self, name: str) -> list[str]:
        """The IPv4 then IPv6 addresses of `name`; DNSProblem when it has none."""
        if self._server is None:
            return self._system_addresses(name)
        found: list[str] = []
        for record_type in (dns.rdatatype.A, dns.rdatatype.AAAA):
            found.extend(self._query(name, record_type, missing_ok=True))
        if not found:
            raise DNSProblem(f"no A or AAAA record for {name}")
        return found

    def txt(self, name: str) -> list[str]:
        """The TXT records of `name`, each one's strings joined (RFC 8555 8.4)."""
        return self._query(name, dns.rdatatype.TXT, missing_ok=False)

    @staticmethod
    def _system_addresses(name: str) -> list[str]:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise DNSProblem(f"cannot resolve {name}: {error}") from None
        addresses = dict.fromkeys(str(info[4][0]) for info in infos)
        return sorted(addresses, key=lambda address: dns.inet.af_for_address(address))

    def _query(
        self, name: str, record_type: dns.rdatatype.RdataType, missing_ok: bool
    ) -> list[str]:
        kind = record_type.name
        try:
            answer = self._dns.resolve(name, record_type, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            if missing_ok:
                return []
            raise DNSProblem(f"no {kind} record for {name}") from None
        except dns.exception.DNSException as error:
            raise DNSProblem(f"{kind} lookup of {name} failed: {error}") from None
        if record_type == dns.rdatatype.TXT:
            return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]
        return [record.address for record in answer]
