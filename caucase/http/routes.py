"""The route table of the caucased API (http-api 5, 10), as data.

It drives both dispatch (caucase.http.app) and the HAL+JSON self-description built here.
Each route holds its handler, its body step and the credentials it needs; the dispatcher
enforces them, so a route cannot skip authentication by omission.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from caucase.acme.jws import KeySource
from caucase.http import acme, acme_credentials, bodies, handlers, inventory, renewal_handlers
from caucase.http.cors import CorsPolicy
from caucase.http.handlers import Service
from caucase.http.request import HTTPError, Request, Response

MAX_ID = 2**63
AUTHORITY_NAMES = ("cas", "cau")
HAL_JSON = "application/hal+json"


class Subpath(enum.Enum):
    """What may follow the route's node in the path (http-api 5)."""

    NONE = "none"
    ID = "id"  # CSR/certificate id: 400 b'Invalid integer' when not an integer
    AKI = "aki"  # decimal authority key id: 404 when not an integer
    TEXT = "text"  # passed on as it is (a certID): the handler reads it
    ACME_ID = "acme-id"  # ACME resource id: 404 unless plain decimal digits


class Auth(enum.Enum):
    """The credentials a route needs, and when the dispatcher checks them (http-api 4)."""

    ANONYMOUS = "anonymous"
    # A client certificate of the CAU, before the body is read (http-api 6.6, 6.8).
    FIRST = "first"
    # A client certificate, once the body step accepted the body (http-api 6.10).
    AFTER_BODY = "after-body"
    # The body step's verified signature (a SignedEnvelope): key possession (http-api 6.14).
    SIGNATURE = "signature"
    # A verified signature, or else a client certificate after the body step (http-api 6.13).
    SIGNATURE_OR_AFTER_BODY = "signature-or-after-body"
    # An ACME request: a flattened JWS verified (RFC 8555 6.2-6.5), signed by the key its
    # route's key_source names, its nonce consumed; the handler gets the signer.
    ACME_JWS = "acme-jws"


# The parsed subpath (an int id, 0 without one; the text of a TEXT subpath) and what the
# route's body step returned come last.
Handler = Callable[[Service, Request, Any, Any], Response]
BodyStep = Callable[[Request], Any]
_AFTER_BODY = (Auth.AFTER_BODY, Auth.SIGNATURE, Auth.SIGNATURE_OR_AFTER_BODY)


@dataclass(frozen=True)
class Hal:
    """One entry of the HAL description: GETs are links, the others actions."""

    name: str
    title: str
    template: str = ""


@dataclass(frozen=True)
class Route:
    """One (node, method, subpath) of the API: everything dispatch and HAL need to know."""

    node: tuple[str, ...]
    method: str
    handler: Handler
    subpath: Subpath = Subpath.NONE
    auth: Auth = Auth.ANONYMOUS
    body: BodyStep = bodies.no_body
    cors: CorsPolicy = CorsPolicy.ASK
    hal: Hal | None = None
    key_source: KeySource | None = None
    """Which JWS header names the key of an ACME_JWS route (``jwk``, ``kid``, either)."""
    acme: bool = False
    """Part of the ACME front door (caucase.http.acme): HTTPS only, problem documents."""
    spends_nonce: bool = False
    """The handler of an ACME_JWS route spends the request's nonce itself, in the
    transaction of what it changes (the dispatcher checks that it did)."""

    def __post_init__(self) -> None:
        if self.auth in _AFTER_BODY and self.body is bodies.no_body:
            raise ValueError(f"{self.method} {self.node}: {self.auth} needs a body step")
        if (self.auth is Auth.ACME_JWS) != (self.key_source is not None):
            raise ValueError(f"{self.method} {self.node}: ACME_JWS routes and key sources pair")
        if self.auth is Auth.ACME_JWS and not self.acme:
            raise ValueError(f"{self.method} {self.node}: ACME_JWS is for ACME routes")
        if self.spends_nonce and self.auth is not Auth.ACME_JWS:
            raise ValueError(f"{self.method} {self.node}: only ACME_JWS routes spend nonces")


@dataclass
class Node:
    """A path segment of the route tree, with its routes in declaration order; ``acme``
    for /cas/acme and below, whose refusals are ACME problem documents."""

    authority: str | None = None
    children: dict[str, Node] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    acme: bool = False

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(route.method for route in self.routes))

    def find(self, method: str, has_subpath: bool) -> Route | None:
        for route in self.routes:
            if route.method == method and (route.subpath != Subpath.NONE) == has_subpath:
                return route
        return None


def parse_subpath(kind: Subpath, segments: Sequence[str]) -> int | str:
    """The id the subpath names, with int() semantics (http-api 5); 0 when there is none;
    the segment itself for a TEXT subpath."""
    if kind is Subpath.NONE:
        return 0
    if kind is Subpath.TEXT:
        return segments[0]
    if kind is Subpath.ACME_ID:
        text = segments[0]
        if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) >= MAX_ID:
            raise HTTPError(404)
        return int(text)
    try:
        value = int(segments[0], 10)
    except ValueError:
        if kind is Subpath.AKI:
            raise HTTPError(404) from None
        raise HTTPError(400, b"b'Invalid integer'") from None
    # Ids are SQLite integers: out of range cannot exist (the reference overflowed: 500).
    if kind is Subpath.ID and not 0 <= value < MAX_ID:
        raise HTTPError(404)
    return value


@functools.lru_cache(maxsize=64)
def root_hal_body(script_path: str, self_href: str) -> bytes:
    links: dict[str, Any] = _self_and_home(script_path, self_href)
    for name in AUTHORITY_NAMES:
        links[f"get{name.upper()}HAL"] = {"title": name, "href": f"{script_path}/{name}"}
    for route in ROOT_ROUTES:
        if route.hal is not None:
            href = "/".join((script_path, *route.node))
            links[route.hal.name] = {"title": route.hal.title, "href": href}
    return json.dumps({"_links": links}).encode()


@functools.lru_cache(maxsize=64)
def authority_hal_body(authority: str, script_path: str, self_href: str, https_base: str) -> bytes:
    """Links for GETs, actions for the rest; authenticated hrefs absolute over HTTP."""
    links: dict[str, Any] = _self_and_home(script_path, self_href)
    actions: dict[str, Any] = {}
    for route in authority_routes(authority):
        if route.hal is None:
            continue
        # Over HTTP, routes that always need a client certificate, and ACME, link to HTTPS.
        https_only = route.acme or route.auth in (Auth.FIRST, Auth.AFTER_BODY)
        base = https_base if https_only and https_base else script_path
        entry: dict[str, Any] = {"title": route.hal.title}
        if route.hal.template:
            entry["templated"] = True
        path = "/".join((base + "/" + authority, *route.node, route.hal.template))
        entry["href"] = path.rstrip("/").replace("/{?", "{?")  # a query template: no "/"
        if route.method == "GET":
            links[route.hal.name] = entry
        else:
            entry["method"] = route.method
            actions[route.hal.name] = entry
    return json.dumps({"_links": links, "_actions": actions}).encode()


def get_root_hal(_: Service, request: Request, __: int, ___: None) -> Response:
    body = root_hal_body(request.script_path, request.self_href())
    return Response(200, [("Content-Type", HAL_JSON)], body)


def get_authority_hal(_: Service, request: Request, __: int, ___: None) -> Response:
    https_base = "" if request.scheme == "https" else request.https_base()
    body = authority_hal_body(
        request.authority or "", request.script_path, request.self_href(), https_base
    )
    return Response(200, [("Content-Type", HAL_JSON)], body)


def _self_and_home(script_path: str, self_href: str) -> dict[str, Any]:
    links: dict[str, Any] = {"self": {"href": self_href}}
    home = script_path or "/"
    if home != self_href:
        links["home"] = {"href": home}
    return links


ROOT_ROUTES = (
    Route((), "GET", get_root_hal, cors=CorsPolicy.ALLOW),
    Route(
        ("https-ca.crt.pem",),
        "GET",
        handlers.get_https_ca,
        cors=CorsPolicy.ALLOW,
        hal=Hal(
            "getHTTPSCACertificate",
            "Retrieve the CA certificates of caucased's HTTPS certificate: the file ACME "
            "clients trust.",
        ),
    ),
    Route(("cors",), "GET", handlers.get_cors_form),
    Route(("cors",), "POST", handlers.post_cors_decision, cors=CorsPolicy.DENY),
    Route(
        ("health",),
        "GET",
        handlers.get_health,
        cors=CorsPolicy.ALLOW,
        hal=Hal("getHealth", "Check the server's health: 200 when every check passes, else 503."),
    ),
)
# In HAL order; per node, the methods in the order of the reference's Allow header.
AUTHORITY_ROUTES = (
    Route((), "GET", get_authority_hal, cors=CorsPolicy.ALLOW),
    Route(
        ("crl",),
        "GET",
        handlers.get_crl_list,
        hal=Hal(
            "getCertificateRevocationListList",
            "Retrieve latest certificate revocation list for all valid authorities.",
        ),
    ),
    Route(
        ("crl",),
        "GET",
        handlers.get_crl,
        Subpath.AKI,
        hal=Hal(
            "getCertificateRevocationList",
            "Retrieve latest certificate revocation list for given decimal representation"
            " of the authority identifier.",
            "{+authority_key_id}",
        ),
    ),
    Route(
        ("csr",),
        "GET",
        handlers.get_csr_list,
        auth=Auth.FIRST,
        hal=Hal("getPendingCertificateRequestList", "List pending certificate signing requests."),
    ),
    Route(
        ("csr",),
        "GET",
        handlers.get_csr,
        Subpath.ID,
        hal=Hal(
            "getCertificateSigningRequest",
            "Retrieve a pending certificate signing request.",
            "{+csr_id}",
        ),
    ),
    Route(
        ("crt",),
        "GET",
        handlers.get_crt,
        Subpath.ID,
        hal=Hal("getCertificate", "Retrieve a signed certificate.", "{+csr_id}"),
    ),
    Route(
        ("crt", "ca.crt.pem"),
        "GET",
        handlers.get_ca_crt,
        hal=Hal("getCACertificate", "Retrieve current CA certificate."),
    ),
    Route(
        ("crt", "ca.crt.json"),
        "GET",
        handlers.get_ca_chain,
        hal=Hal("getCACertificateChain", "Retrieve current CA certificate trust chain."),
    ),
    Route(
        ("csr",),
        "PUT",
        handlers.create_csr,
        body=bodies.csr_body,
        hal=Hal("createCertificateSigningRequest", "Request a new certificate signature."),
    ),
    Route(
        ("csr",),
        "DELETE",
        handlers.delete_csr,
        Subpath.ID,
        Auth.FIRST,
        hal=Hal(
            "deletePendingCertificateRequest",
            "Reject a pending certificate signing request.",
            "{+csr_id}",
        ),
    ),
    Route(
        ("crt",),
        "PUT",
        handlers.sign_csr,
        Subpath.ID,
        Auth.AFTER_BODY,
        bodies.template_body,
        hal=Hal("createCertificate", "Accept pending certificate signing request", "{+crt_id}"),
    ),
    Route(
        ("crt", "revoke"),
        "PUT",
        handlers.revoke,
        auth=Auth.SIGNATURE_OR_AFTER_BODY,
        body=bodies.revoke_envelope,
        hal=Hal("revokeCertificate", "Revoke a certificate"),
    ),
    Route(
        ("crt", "renew"),
        "PUT",
        handlers.renew,
        auth=Auth.SIGNATURE,
        body=bodies.renew_envelope,
        hal=Hal("renewCertificate", "Renew a certificate"),
    ),
    # Ours, after the reference's: RFC 9773 renewal information (also ACME's renewalInfo).
    Route(
        ("renewal-info",),
        "GET",
        renewal_handlers.get_explanation,
        hal=Hal(
            "getRenewalInfoExplanation",
            "How suggested renewal windows are chosen, and why one was moved.",
        ),
    ),
    Route(
        ("renewal-info",),
        "GET",
        renewal_handlers.get_renewal_info,
        Subpath.TEXT,
        hal=Hal(
            "getRenewalInfo",
            "Retrieve the suggested renewal window of a certificate (RFC 9773).",
            "{+cert_id}",
        ),
    ),
    Route(
        ("renewal-info",),
        "PUT",
        renewal_handlers.renew_early,
        auth=Auth.AFTER_BODY,
        body=renewal_handlers.early_renewal_body,
        hal=Hal("renewEarly", "Move the renewal windows of certificates to now."),
    ),
    # Ours: every certificate issued, page by page (caucase --list-crt).
    Route(
        ("inventory",),
        "GET",
        inventory.list_certificates,
        auth=Auth.FIRST,
        hal=Hal(
            "getCertificateInventory",
            "List every issued certificate, one page at a time (follow 'next' as cursor).",
            "{?limit,cursor,expiring_within,subject,status,serial}",
        ),
    ),
)


def _acme_route(
    name: str,
    method: str,
    handler: Handler,
    subpath: Subpath = Subpath.NONE,
    key_source: KeySource | None = KeySource.KID,
    hal: Hal | None = None,
    spends_nonce: bool = False,
) -> Route:
    """An ACME route of the CAS (RFC 8555 7.1): POSTs are JWS-signed by an account
    unless told otherwise; any origin may call them, the signature being the credential."""
    auth = Auth.ANONYMOUS if key_source is None else Auth.ACME_JWS
    return Route(("acme", name), method, handler, subpath, auth, cors=CorsPolicy.ALLOW, hal=hal,
                 key_source=key_source, acme=True, spends_nonce=spends_nonce)  # fmt: skip


# The ACME front door, under /cas/acme (HTTPS only).
ACME_ROUTES = (
    _acme_route(
        "directory",
        "GET",
        acme.get_directory,
        key_source=None,
        hal=Hal(
            "getACMEDirectory",
            "ACME (RFC 8555) directory, for certbot, lego and other ACME clients.",
        ),
    ),
    _acme_route("new-nonce", "HEAD", acme.new_nonce, key_source=None),
    _acme_route("new-nonce", "GET", acme.new_nonce, key_source=None),
    _acme_route("new-account", "POST", acme.new_account, key_source=KeySource.JWK),
    _acme_route("new-order", "POST", acme.new_order, spends_nonce=True),
    _acme_route("key-change", "POST", acme.key_change),
    _acme_route("revoke-cert", "POST", acme.revoke_cert, key_source=KeySource.EITHER),
    _acme_route("account", "POST", acme.post_account, Subpath.ACME_ID),
    _acme_route("orders", "POST", acme.account_orders, Subpath.ACME_ID),
    _acme_route("order", "POST", acme.post_order, Subpath.ACME_ID),
    _acme_route("finalize", "POST", acme.finalize, Subpath.ACME_ID, spends_nonce=True),
    _acme_route("authz", "POST", acme.post_authorization, Subpath.ACME_ID),
    _acme_route("challenge", "POST", acme.post_challenge, Subpath.ACME_ID),
    _acme_route("certificate", "POST", acme.certificate, Subpath.ACME_ID),
)
# CAU users manage the External Account Binding credentials of ACME accounts.
ACME_CREDENTIAL_ROUTES = (
    Route(
        ("acme", "eab"),
        "GET",
        acme_credentials.list_credentials,
        auth=Auth.FIRST,
        hal=Hal("getACMEExternalAccountBindingList", "List ACME external account bindings."),
    ),
    Route(
        ("acme", "eab"),
        "PUT",
        acme_credentials.mint_credential,
        auth=Auth.AFTER_BODY,
        body=bodies.eab_scope_body,
        hal=Hal(
            "createACMEExternalAccountBinding",
            "Mint an ACME external account binding for a scope of identifier patterns.",
        ),
    ),
    Route(
        ("acme", "eab", "revoke"),
        "PUT",
        acme_credentials.revoke_credential,
        auth=Auth.AFTER_BODY,
        body=bodies.eab_kid_body,
        hal=Hal(
            "revokeACMEExternalAccountBinding",
            "Revoke an ACME external account binding and the account bound to it.",
        ),
    ),
)
_OWN_ROUTES: dict[str, tuple[Route, ...]] = {"cas": ACME_ROUTES, "cau": ACME_CREDENTIAL_ROUTES}


def authority_routes(authority: str) -> tuple[Route, ...]:
    """Both authorities' routes, then the authority's own, in HAL order."""
    return (*AUTHORITY_ROUTES, *_OWN_ROUTES.get(authority, ()))


def route_template(authority: str | None, route: Route) -> str:
    """The route's path as the metrics label it: /cas/crt/{id}, never what was sent."""
    subpath = "" if route.subpath is Subpath.NONE else "{" + route.subpath.name.lower() + "}"
    return "/" + "/".join(filter(None, (authority, *route.node, subpath)))


def build_tree() -> Node:
    """The route tree of http-api 5: the root routes, then both authorities' subtrees."""
    root = Node()
    for route in ROOT_ROUTES:
        _node_at(root, route.node).routes.append(route)
    for name in AUTHORITY_NAMES:
        for route in authority_routes(name):
            _node_at(root, (name, *route.node), name, route.acme).routes.append(route)
    return root


def _node_at(
    root: Node, path: Sequence[str], authority: str | None = None, acme: bool = False
) -> Node:
    """The node of `path`, made when missing; with `acme`, every node under the authority's
    is marked part of the ACME front door."""
    node = root
    for depth, segment in enumerate(path):
        node = node.children.setdefault(segment, Node(authority))
        node.acme |= acme and depth > 0
    return node
