"""Tests of what only the PostgreSQL backend does: several gateways on one database, its faults, ``store copy``."""
