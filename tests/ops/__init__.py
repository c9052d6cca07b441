"""Tests of gateway/ops/: the tools ops and security teams run."""
