"""caucased's HTTP API and listeners.

- ``routes``: the route table (dispatch and the HAL self-description).
- ``request``: request parsing and responses.
- ``cors``: the CORS consent mechanism.
- ``app``: the WSGI application serving both authorities.
- ``server``: threaded HTTP and HTTPS listeners on wsgiref.
- ``tls``: caucased's own HTTPS identity and its TLS context.
- ``metrics``: the Prometheus metrics and the ``--metrics-netloc`` listener's application.
- ``health``: the /health report over named checks.
"""
