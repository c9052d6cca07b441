"""Tests of gateway/run/: TLS and the gateway as a real process (signals, workers)."""
