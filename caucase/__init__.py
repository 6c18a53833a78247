"""caucase: a certificate authority for users and services.

Layers, lowest first (nothing imports a layer above it):

- ``clock``, ``exceptions``, ``ports``: the injected "now", the error types, and the rule
  placing caucased's HTTPS port beside its HTTP port.
- ``crypto``: ``keys`` (key types), ``x509util`` (certificate profile), ``crl_profile``
  (CRLs), ``verification`` (certificate checks), ``envelope`` (signed JSON requests),
  ``pemfile`` (PEM files and stores on disk).
- ``backup``: the encrypted backup format.
- ``storage``: the database behind one interface (``engine``) with two engines: SQLite
  (``database``: pool, committer, lock) and PostgreSQL (``postgresql``, shared by several
  caucased; ``postgresql_connection``: its connections and their pool;
  ``postgresql_batch``: its writers of one lock committed together), both on
  ``group_commit``; the CA tables (``authority``, ``revocations``), what nodes share
  (``cluster``), ``schema``, ``copy`` and ``migrate`` (between engines), ``restore`` (the
  statement allow-list), ``renewal`` (the renewal index), ``inventory`` (every
  certificate issued). See ``caucase.storage``.
- ``renewal``: the renewal-window rule (when a certificate should be renewed), shared by
  caucased and caucase-updater.
- ``audit``: the hash-chained audit log of every change of state, and its verifier;
  ``events``: the observer the CA, ACME and backup layers report changes to (building
  the audit events; caucased's feeds the audit log and the metrics).
- ``ca``: the policy of one certificate authority; ``rollover``: its CA list, kept
  current across nodes and renewed when due; ``ca_keys``: its CA key pairs and their
  chain document; ``crl``: its CRLs, cached and regenerated; ``renewal_schedule``: the
  renewal windows of its certificates, and operators' early-renewal requests.
- ``acme``: ACME for the CAS: the protocol (JWS, errors, EAB, identifiers, challenges)
  and the service over storage and the CAS (accounts, orders, validation, issuance).
- ``http``: the HTTP API (``app``, ``routes``, ``handlers``, ``renewal_handlers``,
  ``acme``, ``acme_credentials``, ``inventory``, ``bodies``, ``request``, ``cors``),
  caucased's listeners (``server``, their request bodies in ``framing``, their reusable
  connection threads in ``workers``, their pacing out of descriptors in ``accept``) and
  HTTPS identity (``tls``), and the ``metrics`` and ``health`` reports.
- ``backup_schedule``, ``main_loop``: caucased's periodic backups, and its main loop
  (own certificate renewal, TLS trust of new CAU CAs, backups, stop signals).
- ``client``: the HTTP client every client command uses; ``trust_stores``: CA and CRL
  stores kept up to date through it.
- ``cli``: one module per console script (``server`` is caucased's), and the parts
  scripts share or that keep a script's module small (see ``caucase.cli``).
"""

__version__ = "1.0.0"
