"""One module per console script: parse arguments, call the library, print, exit.

Beside them, what several scripts share: ``caucase_options`` (the options of ``caucase``, and
the store layout both clients describe), ``key_options`` (``--key-type`` and ``--key-len``),
``user_key`` (why caucased refused a user certificate), ``inventory`` (``--list-crt``
and what ``--revoke-serial`` asks first), ``hook`` (the ``--on-renew`` shell
command and its outcome); and parts of one script kept apart: ``server_options``
(caucased's command line), ``server_ops`` (caucased's metrics listener, audit log and
health checks), ``manage_ca`` (caucased-manage's CA import and rollover),
``passphrase`` (where caucased-manage's passphrases come from), and caucase-updater's:
``updater_options`` (its command line), ``updater_certificate`` (bootstrap and renewal of
its certificate), ``renewal_plan`` (when to renew, in the server's window),
``updater_failures`` (what is retried, and its log line), ``backoff`` (how long after a
failure), ``updater_signals`` (SIGTERM, SIGHUP, SIGUSR1), ``updater_status`` (the
``--status`` file) and ``sd_notify`` (systemd's notification socket).
"""
