"""Tests of gateway/edge/: the request stages, through a real gateway on loopback."""
