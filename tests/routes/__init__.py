"""Tests of routes/: the handlers, through a real gateway over TLS."""
