"""One module per console script: parse arguments, call the library, print, exit.

Beside them, what several scripts share: ``caucase_options`` (the options of ``caucase``, and
the store layout both clients describe), ``key_options`` (``--key-type`` and ``--key-len``),
``user_key`` (why caucased refused a user certificate), ``hook`` (the ``--on-renew`` shell
command and its outcome); and parts of one script kept apart: ``server_options``
(caucased's command line), ``manage_ca`` (caucased-manage's CA import and rollover) and
``passphrase`` (where caucased-manage's passphrases come from).
"""
