"""caucase: a certificate authority for users and services.

Layers, lowest first (nothing imports a layer above it):

- ``clock``, ``exceptions``, ``ports``: the injected "now", the error types, and the rule
  placing caucased's HTTPS port beside its HTTP port.
- ``crypto``: ``keys`` (key types), ``x509util`` (certificate profile), ``verification``
  (certificate checks), ``envelope`` (signed JSON requests), ``pemfile`` (PEM files and
  stores on disk).
- ``backup``: the encrypted backup format.
- ``storage``: the database: its owner (``database``: pool, committer, lock), ``sqlite``
  rows, ``schema``, ``connection``, ``group_commit``, ``restore`` (the statement allow-list).
- ``audit``: the hash-chained audit log of every change of state, and its verifier.
- ``ca``: the policy of one certificate authority; ``crl``: its CRLs, cached and
  regenerated.
- ``acme``: ACME for the CAS: the protocol (JWS, errors, EAB, identifiers, challenges)
  and the service over storage and the CAS (accounts, orders, validation, issuance).
- ``http``: the HTTP API (``app``, ``routes``, ``handlers``, ``bodies``, ``request``,
  ``cors``), caucased's listeners (``server``) and HTTPS identity (``tls``), and the
  ``metrics`` and ``health`` reports.
- ``backup_schedule``, ``main_loop``: caucased's periodic backups, and its main loop
  (own certificate renewal, TLS trust of new CAU CAs, backups, stop signals).
- ``client``: the HTTP client every client command uses; ``trust_stores``: CA and CRL
  stores kept up to date through it.
- ``cli``: one module per console script (``server`` is caucased's), and the parts
  scripts share or that keep a script's module small (see ``caucase.cli``).
"""

__version__ = "1.0.0"
