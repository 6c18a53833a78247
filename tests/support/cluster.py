"""Several caucased on one PostgreSQL database behind one address: nginx as a TCP (stream)
load balancer, so that TLS, client certificates included, passes through to the nodes.

Every node is told the balancer's address as its --netloc (CA names, CRL URLs, its HTTPS
certificate) and listens on ports of its own; the balancer spreads connections over them
round-robin and, for a node that refuses a connection, tries the next one (max_fails=0:
it never counts a node out, since it starts before the nodes do). `Cluster.balancer` is a
RunningServer for the balancer, so that the request helpers reach the cluster as one."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from caucase.ports import https_port_for
from tests.support.servers import (
    OUR_BIN,
    RunningServer,
    accepts,
    free_port_pair,
    start_caucased,
)
from tests.support.wait import poll

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
CAUCASED = [str(OUR_BIN / "caucased")]

_CONFIG = """
daemon off;
master_process on;
worker_processes 1;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
load_module {module};
events {{ worker_connections 4096; }}
stream {{
    upstream plain {{ {plain} }}
    upstream secure {{ {secure} }}
    server {{ listen 127.0.0.1:{port}; proxy_pass plain; proxy_connect_timeout 2s; }}
    server {{ listen 127.0.0.1:{tls_port}; proxy_pass secure; proxy_connect_timeout 2s; }}
}}
"""


@dataclass
class Cluster:
    """Nodes sharing `db`, and the balancer in front of them."""

    db: str
    balancer: RunningServer
    nodes: list[RunningServer] = field(default_factory=list)

    def stop(self) -> None:
        self.balancer.stop()
        for node in self.nodes:
            node.stop()


def start_node(
    workdir: Path,
    db: str,
    netloc: str,
    port: int,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> RunningServer:
    """One caucased of the cluster, on ports of its own, named after the balancer."""
    args = [*extra_args, "--netloc", netloc, "--base-port", str(port)]
    node = start_caucased(CAUCASED, workdir, args, http_port=port, env=env, db=db)
    try:
        # Its ports accept connections before it opened the database: wait until it serves.
        poll(lambda: "Listening on" in node.stderr(), "the node to serve", process=node.process)
    except AssertionError:
        node.stop()
        raise
    return node


def start_balancer(workdir: Path, port: int, node_ports: Sequence[int]) -> RunningServer:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "nginx.conf"
    config.write_text(
        _CONFIG.format(
            user="user root;" if os.geteuid() == 0 else "",
            dir=workdir,
            module=STREAM_MODULE,
            plain=" ".join(f"server 127.0.0.1:{node} max_fails=0;" for node in node_ports),
            secure=" ".join(
                f"server 127.0.0.1:{https_port_for(node)} max_fails=0;" for node in node_ports
            ),
            port=port,
            tls_port=port + 1,
        )
    )
    with open(workdir / "nginx.out", "ab") as out:
        process = subprocess.Popen(
            [NGINX, "-c", str(config), "-p", str(workdir)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    balancer = RunningServer(process, workdir, port)
    try:
        poll(
            lambda: accepts("127.0.0.1", port) and accepts("127.0.0.1", port + 1),
            "nginx to listen",
            process=process,
        )
    except AssertionError:
        balancer.stop()
        raise
    return balancer


def start_cluster(
    workdir: Path,
    db: str,
    count: int = 3,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Cluster:
    """`count` caucased on `db` behind a balancer, which binds its ports first (the nodes
    are named after it). The nodes start one after the other, each once the previous one
    serves: the first creates the CAs alone."""
    port = free_port_pair()
    node_ports = [free_port_pair() for _ in range(count)]
    balancer = start_balancer(workdir / "balancer", port, node_ports)
    cluster = Cluster(db, balancer)
    try:
        for index, node_port in enumerate(node_ports):
            cluster.nodes.append(
                start_node(
                    workdir / f"node{index}", db, balancer.netloc, node_port, extra_args, env
                )
            )
    except BaseException:
        cluster.stop()
        raise
    return cluster
