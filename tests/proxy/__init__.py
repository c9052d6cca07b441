"""Tests of gateway/proxy/: forwarding and the upstream client, against real upstreams on loopback."""
