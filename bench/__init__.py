"""Benchmarks: the gateway beside nginx, nginx + auth_request and a minimal proxy (``python -m bench``)."""
