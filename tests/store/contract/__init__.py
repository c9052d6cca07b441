"""The store contract: the semantics every backend keeps, run against each one."""
