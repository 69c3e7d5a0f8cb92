"""Crypto-shredding: per-subject data keys, wrapped by a master key, kept outside the event store."""
