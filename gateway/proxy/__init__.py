"""Forwarding to the upstreams: the request rewrite and the pooled upstream client."""
