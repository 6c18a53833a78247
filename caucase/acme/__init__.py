"""ACME (RFC 8555, RFC 9773) for the CAS: the protocol, one module per concept.

Pure parts, lowest first (none of them touches storage or HTTP):

- ``problems``: the RFC 8555 error types as exceptions, rendered as problem+json.
- ``keys``: account JWKs (josepy, plus Ed25519/EdDSA), algorithms, thumbprints.
- ``nonces``: the replay-nonce interface, and nonces signed with a secret any caucased
  sharing the database knows, recorded once used.
- ``jws``: verification of flattened-JWS requests (alg, nonce, url, jwk or kid).
- ``eab``: External Account Binding credentials and their verification.
- ``identifiers``: DNS/IP identifiers, their normal form, EAB scope patterns.
- ``messages``: request payloads (newAccount, account update, newOrder, revokeCert,
  keyChange), typed and bounded.
- ``orders``: admission of new orders under the EAB scope, per-account limits, and the
  order/authorization state machine.
- ``csr``: the finalize CSR against the order's identifiers.
- ``resources``: directory, account, order, authorization and challenge documents, URLs.
- ``renewal_info``: ARI certIDs and renewalInfo answers.
- ``resolver``: A/AAAA/TXT lookups of validation (system, or ``--acme-dns-server``).
- ``challenges``: key authorizations, http-01 and dns-01 validators; ``tls_alpn``:
  tls-alpn-01.

Over storage and the CAS's CertificateAuthority (none of them knows HTTP):

- ``accounts``: accounts, External Account Binding at creation, updates, key rollover.
- ``credentials``: the EAB credentials CAU users mint, list and revoke.
- ``ordering``: new orders under the scope, authorizations, challenges, their views.
- ``validation``: the bounded pool of worker threads validating challenges.
- ``issuance``: finalize (the profile of /cas), certificate chains, revocation.
- ``service``: the ACME service of one caucased, putting the parts together.
"""
