"""caucase: a certificate authority for users and services.

Layers, lowest first (nothing imports a layer above it):

- ``clock``, ``exceptions``: the injected "now" and the error types.
- ``crypto``: ``keys`` (key types), ``x509util`` (certificate profile), ``verification``
  (certificate checks), ``envelope`` (signed JSON requests), ``pemfile`` (PEM files and
  stores on disk).
- ``backup``: the encrypted backup format.
- ``storage``: the database (``sqlite`` rows, ``schema``, ``connection``, ``group_commit``).
- ``ca``: the policy of one certificate authority.
- ``http``: the HTTP API (``app``, ``routes``, ``request``, ``cors``) and caucased's
  listeners (``server``) and HTTPS identity (``tls``).
- ``backup_schedule``: caucased's periodic backups.
- ``client``: the HTTP client every client command uses.
- ``cli``: one module per console script (``server`` is caucased's).
"""

__version__ = "0.9.17"
