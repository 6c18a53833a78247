"""Helpers shared by the test modules: servers (servers), raw HTTP (raw_http), the in-process
app (wsgi_support), keys, CSRs, certificates and CAs (ca_helpers), waits (wait), a faked
clock for subprocesses (faketime, its Timeline too), caucase-updater processes (updaters), and
in-process updaters on a simulated clock (simulation)."""
