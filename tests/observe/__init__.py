"""Tests of gateway/observe/: the audit log and its chain."""
