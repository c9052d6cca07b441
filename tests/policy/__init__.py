"""Tests of gateway/policy/: the pure decisions, with property tests where inputs are many."""
