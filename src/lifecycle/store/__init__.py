"""Storage adapters: the event store and its recorders, the audit chain, engines, leases, settings and the key vault."""
