"""The port rule: caucased serves HTTPS on port 443 beside HTTP on port 80, else on the
HTTP port + 1 (cli.md 2.6). Server, clients and HAL links all follow it."""

from __future__ import annotations


def https_port_for(http_port: int) -> int:
    """The HTTPS port beside an HTTP port."""
    return 443 if http_port == 80 else http_port + 1


def http_port_for(https_port: int) -> int:
    """The HTTP port beside an HTTPS port."""
    return 80 if https_port == 443 else https_port - 1
