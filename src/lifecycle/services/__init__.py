"""Application services: ingest, sweeps, DSAR, certificates, replay, ROPA, audit, breaches, keys and backups."""
