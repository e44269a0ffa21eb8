"""Test support for the end-to-end suite: token minting, a controllable JWKS server, and
the Envoy/httpbin process harness. Import as `support.<module>` with tests/ on sys.path."""
