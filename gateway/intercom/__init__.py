"""The Intercom connector: the REST API client, the sync into the store, the webhook receiver."""
