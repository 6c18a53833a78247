"""Helpers shared by the test modules: servers (servers), raw HTTP (raw_http), the in-process
app (wsgi_support), keys, CSRs, certificates and CAs (ca_helpers), waits (wait), a faked
clock for subprocesses (faketime, its Timeline too), caucase-updater processes (updaters), and
in-process updaters on a simulated clock (simulation).

ACME: requests signed as certbot signs them (acme_jws), the in-process ACME front door and
an account's client (acme_wsgi), certbot's acme library against a running caucased
(acme_library), the real clients (acme_clients, with their challenge hook acme_hook),
pebble and pebble-challtestsrv (pebble, challtestsrv), a tls-alpn-01 responder
(tls_alpn_responder), and certificates served and verified by openssl (openssl_tls)."""
