"""Keys, certificates and signed documents: pure functions over ``cryptography``.

- ``x509util``: the certificate and CRL profile (building, loading, dumping).
- ``verification``: certificate chain and CRL checks.
- ``envelope``: signed JSON envelopes (renew and revoke by the key holder, CA chain).
- ``pemfile``: PEM files and CA/CRL stores on disk, atomic 0600 writes.
"""
