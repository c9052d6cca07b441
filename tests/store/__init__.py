"""Tests of gateway/store/: the store's semantics, search and demo data."""
