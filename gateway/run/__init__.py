"""The process: serving, workers, the connection handler, TLS, logs."""
