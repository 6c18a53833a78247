"""Helpers shared by the test modules: servers, raw HTTP, the in-process app, CAs, waits."""
