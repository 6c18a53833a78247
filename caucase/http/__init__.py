"""caucased's HTTP API and listeners.

- ``request``: request parsing and responses.
- ``cors``: the CORS consent mechanism.
- ``bodies``: the body steps routes run before credentials are checked.
- ``handlers``: what each route does; ``acme``: the ACME front door of the CAS (its
  dispatch steps and handlers); ``acme_credentials``: the CAU routes minting, listing and
  revoking ACME external account bindings; ``renewal_handlers``: the renewal-info routes
  (RFC 9773 windows, early renewal); ``inventory``: the listing of every certificate
  issued, page by page.
- ``routes``: the route table (handlers, body steps, credentials; the HAL description).
- ``app``: the WSGI application: dispatch, credential checks, error mapping.
- ``server``: threaded HTTP and HTTPS listeners on wsgiref; ``framing``: their request
  bodies (``100 Continue``, strict chunked framing).
- ``workers``: the listeners' pool of reusable connection threads; ``accept``: their
  accept loop's pause while the process is out of descriptors.
- ``tls``: caucased's own HTTPS identity and its TLS context (the full chain).
- ``metrics``: the Prometheus metrics and the ``--metrics-netloc`` listener's application.
- ``health``: the /health report over named checks.
"""
