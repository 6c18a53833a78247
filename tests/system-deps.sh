#!/bin/sh
# System packages the test suite drives as real peers: nginx (a TLS server trusting caucase),
# Chromium and its WebDriver (the CORS consent flow in a browser), openssl, ss (iproute2),
# libfaketime (caucased and its clients on a faked clock: tests/support/faketime.py),
# Prometheus (promtool lints our scrapes, the server scrapes and answers PromQL), and the
# ACME peers: lego and uacme (clients), pebble (a test ACME server, and
# pebble-challtestsrv, a DNS server with an HTTP API for its records), PostgreSQL (a server
# the tests start themselves: tests/support/postgres.py), nginx's stream module (a TCP
# load balancer in front of several caucased) and systemd-analyze (checks the units of
# contrib/systemd).
# Installs what is missing with apt-get (as root, or through sudo).
set -e
missing=""
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have nginx || missing="$missing nginx-light"
have chromium || missing="$missing chromium"
have chromedriver || missing="$missing chromium-driver"
have openssl || missing="$missing openssl"
have ss || missing="$missing iproute2"
have promtool || missing="$missing prometheus"
have lego || missing="$missing lego"
have uacme || missing="$missing uacme"
have pebble-challtestsrv || missing="$missing pebble"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
ls /usr/lib/nginx/modules/ngx_stream_module.so >/dev/null 2>&1 || missing="$missing libnginx-mod-stream"
have systemd-analyze || missing="$missing systemd"
ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || missing="$missing libfaketime"
[ -n "$missing" ] || exit 0
if [ "$(id -u)" -eq 0 ]; then as_root=""; else as_root="sudo"; fi
$as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq --no-install-recommends $missing
