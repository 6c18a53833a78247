"""The challenge hook every ACME client of the tests calls (standard library only: it runs
under whatever Python the wrapper names, outside the test process).

    acme_hook.py --management URL [--webroot DIR] [--accept TYPE] FLAVOUR ARGS...

FLAVOUR is how the client calls it:
- ``certbot``: certbot's manual hooks, ``auth|cleanup`` (CERTBOT_DOMAIN and
  CERTBOT_VALIDATION in the environment), dns-01;
- ``lego``: lego's exec DNS provider, ``present|cleanup FQDN VALUE``;
- ``uacme``: ``begin|done|failed TYPE IDENT TOKEN AUTH``; only --accept TYPE is accepted
  (exit 1 declines the others, and uacme tries the next), dns-01 through the DNS API,
  http-01 as a file under --webroot.

TXT records go through pebble-challtestsrv's management API at --management.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from pathlib import Path


def call(management: str, endpoint: str, **fields: str) -> None:
    request = urllib.request.Request(
        f"{management}/{endpoint}", data=json.dumps(fields).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def fqdn(name: str) -> str:
    return name.rstrip(".") + "."


def certbot(options: argparse.Namespace, action: str) -> int:
    name = fqdn("_acme-challenge." + os.environ["CERTBOT_DOMAIN"])
    if action == "auth":
        call(options.management, "set-txt", host=name, value=os.environ["CERTBOT_VALIDATION"])
    else:
        call(options.management, "clear-txt", host=name)
    return 0


def lego(options: argparse.Namespace, args: list[str]) -> int:
    action, name, value = args[:3]
    if action == "present":
        call(options.management, "set-txt", host=fqdn(name), value=value)
    elif action == "cleanup":
        call(options.management, "clear-txt", host=fqdn(name))
    return 0


def uacme(options: argparse.Namespace, args: list[str]) -> int:
    method, kind, ident, token, authorization = args[:5]
    if kind != options.accept:
        return 1
    name = fqdn("_acme-challenge." + ident)
    answer = Path(options.webroot or ".") / ".well-known" / "acme-challenge" / token
    if method == "begin" and kind == "dns-01":
        call(options.management, "set-txt", host=name, value=authorization)
    elif method == "begin" and kind == "http-01":
        answer.parent.mkdir(parents=True, exist_ok=True)
        answer.write_text(authorization)
    elif kind == "dns-01":
        call(options.management, "clear-txt", host=name)
    elif kind == "http-01":
        answer.unlink(missing_ok=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--management", required=True)
    parser.add_argument("--webroot")
    parser.add_argument("--accept", default="dns-01")
    parser.add_argument("flavour", choices=["certbot", "lego", "uacme"])
    parser.add_argument("args", nargs="*")
    options = parser.parse_args()
    if options.flavour == "certbot":
        return certbot(options, options.args[0])
    if options.flavour == "lego":
        return lego(options, options.args)
    return uacme(options, options.args)


if __name__ == "__main__":
    sys.exit(main())
