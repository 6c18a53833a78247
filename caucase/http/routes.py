"""The route table of the caucased API (http-api 5, 10), as data.

It drives both dispatch (caucase.http.app) and the HAL+JSON self-description built here.
A handler is named by the Application method that serves it.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from caucase.http.cors import CorsPolicy
from caucase.http.request import HTTPError

MAX_ID = 2**63
AUTHORITY_NAMES = ("cas", "cau")


class Subpath(enum.Enum):
    """What may follow the route's node in the path (http-api 5)."""

    NONE = "none"
    ID = "id"  # CSR/certificate id: 400 b'Invalid integer' when not an integer
    AKI = "aki"  # decimal authority key id: 404 when not an integer


class Auth(enum.Enum):
    """When a route authenticates the client certificate (http-api 4)."""

    ANONYMOUS = "anonymous"
    FIRST = "first"  # before the handler runs
    AFTER_BODY = "after-body"  # by the handler once the body is validated (http-api 6.10)


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
    handler: str
    subpath: Subpath = Subpath.NONE
    auth: Auth = Auth.ANONYMOUS
    cors: CorsPolicy = CorsPolicy.ASK
    hal: Hal | None = None


@dataclass
class Node:
    """A path segment of the route tree, with its routes in declaration order."""

    authority: str | None = None
    children: dict[str, Node] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(route.method for route in self.routes))

    def find(self, method: str, has_subpath: bool) -> Route | None:
        for route in self.routes:
            if route.method == method and (route.subpath != Subpath.NONE) == has_subpath:
                return route
        return None


def parse_subpath(kind: Subpath, segments: Sequence[str]) -> int:
    """The id the subpath names, with int() semantics (http-api 5); 0 when there is none."""
    if kind is Subpath.NONE:
        return 0
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
    return json.dumps({"_links": links}).encode()


@functools.lru_cache(maxsize=64)
def authority_hal_body(authority: str, script_path: str, self_href: str, https_base: str) -> bytes:
    """Links for GETs, actions for the rest; authenticated hrefs absolute over HTTP."""
    links: dict[str, Any] = _self_and_home(script_path, self_href)
    actions: dict[str, Any] = {}
    for route in AUTHORITY_ROUTES:
        if route.hal is None:
            continue
        base = https_base if route.auth is not Auth.ANONYMOUS and https_base else script_path
        entry: dict[str, Any] = {"title": route.hal.title}
        if route.hal.template:
            entry["templated"] = True
        path = "/".join((base + "/" + authority, *route.node, route.hal.template))
        entry["href"] = path.rstrip("/")
        if route.method == "GET":
            links[route.hal.name] = entry
        else:
            entry["method"] = route.method
            actions[route.hal.name] = entry
    return json.dumps({"_links": links, "_actions": actions}).encode()


def _self_and_home(script_path: str, self_href: str) -> dict[str, Any]:
    links: dict[str, Any] = {"self": {"href": self_href}}
    home = script_path or "/"
    if home != self_href:
        links["home"] = {"href": home}
    return links


ROOT_ROUTES = (
    Route((), "GET", "_get_root_hal", cors=CorsPolicy.ALLOW),
    Route(("cors",), "GET", "_get_cors_form"),
    Route(("cors",), "POST", "_post_cors_decision", cors=CorsPolicy.DENY),
)
# In HAL order; per node, the methods in the order of the reference's Allow header.
AUTHORITY_ROUTES = (
    Route((), "GET", "_get_authority_hal", cors=CorsPolicy.ALLOW),
    Route(
        ("crl",),
        "GET",
        "_get_crl_list",
        hal=Hal(
            "getCertificateRevocationListList",
            "Retrieve latest certificate revocation list for all valid authorities.",
        ),
    ),
    Route(
        ("crl",),
        "GET",
        "_get_crl",
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
        "_get_csr_list",
        auth=Auth.FIRST,
        hal=Hal("getPendingCertificateRequestList", "List pending certificate signing requests."),
    ),
    Route(
        ("csr",),
        "GET",
        "_get_csr",
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
        "_get_crt",
        Subpath.ID,
        hal=Hal("getCertificate", "Retrieve a signed certificate.", "{+csr_id}"),
    ),
    Route(
        ("crt", "ca.crt.pem"),
        "GET",
        "_get_ca_crt",
        hal=Hal("getCACertificate", "Retrieve current CA certificate."),
    ),
    Route(
        ("crt", "ca.crt.json"),
        "GET",
        "_get_ca_chain",
        hal=Hal("getCACertificateChain", "Retrieve current CA certificate trust chain."),
    ),
    Route(
        ("csr",),
        "PUT",
        "_create_csr",
        hal=Hal("createCertificateSigningRequest", "Request a new certificate signature."),
    ),
    Route(
        ("csr",),
        "DELETE",
        "_delete_csr",
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
        "_sign_csr",
        Subpath.ID,
        Auth.AFTER_BODY,
        hal=Hal("createCertificate", "Accept pending certificate signing request", "{+crt_id}"),
    ),
    Route(
        ("crt", "revoke"),
        "PUT",
        "_revoke",
        hal=Hal("revokeCertificate", "Revoke a certificate"),
    ),
    Route(
        ("crt", "renew"),
        "PUT",
        "_renew",
        hal=Hal("renewCertificate", "Renew a certificate"),
    ),
)


def build_tree() -> Node:
    """The route tree of http-api 5: the root routes, then both authorities' subtrees."""
    root = Node()
    for route in ROOT_ROUTES:
        _node_at(root, route.node).routes.append(route)
    for name in AUTHORITY_NAMES:
        for route in AUTHORITY_ROUTES:
            _node_at(root, (name, *route.node), name).routes.append(route)
    return root


def _node_at(root: Node, path: Sequence[str], authority: str | None = None) -> Node:
    node = root
    for segment in path:
        node = node.children.setdefault(segment, Node(authority))
    return node
