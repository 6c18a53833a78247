"""caucase: a certificate authority for users and services.

Layers, lowest first (nothing imports a layer above it):

- ``clock``, ``exceptions``: the injected "now" and the error types.
- ``x509util`` (certificate profile), ``verification`` (certificate checks), ``envelope``
  (signed JSON requests), ``pemfile`` (PEM files and stores on disk), ``backup`` (the
  encrypted backup format).
- ``storage`` with ``storage_sql`` and ``group_commit``: the SQLite rows.
- ``ca``: the policy of one certificate authority.
- ``wsgi`` with ``wsgi_routes``, ``wsgi_request`` and ``cors``: the HTTP API.
- ``server`` (caucased) with ``httpd``, ``tls`` and ``backup_schedule``.
- ``client``: the HTTP client every client command uses.
- ``cli``: one module per console script.
"""

__version__ = "0.9.17"
