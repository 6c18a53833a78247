"""Keys, certificates and signed documents: pure functions over ``cryptography``.

- ``keys``: the one seam for key types (RSA, ECDSA P-256/P-384, Ed25519): generate, load,
  dump, sign, verify, key id, key agreement.
- ``x509util``: the certificate profile, and loading and dumping certificates, CSRs and
  CRLs; ``crl_profile``: building CRLs and their entries (reason codes).
- ``verification``: certificate chain and CRL checks.
- ``envelope``: signed JSON envelopes (renew and revoke by the key holder, CA chain).
- ``pemfile``: PEM files and CA/CRL stores on disk, atomic 0600 writes.
"""
