"""ACME (RFC 8555, RFC 9773) for the CAS: the protocol, one module per concept.

Pure parts, lowest first (none of them touches storage or HTTP):

- ``problems``: the RFC 8555 error types as exceptions, rendered as problem+json.
- ``keys``: account JWKs (josepy, plus Ed25519/EdDSA), algorithms, thumbprints.
- ``nonces``: the replay-nonce interface and a bounded in-memory store.
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
"""
