"""What the gateway records: the audit log and the metrics."""
