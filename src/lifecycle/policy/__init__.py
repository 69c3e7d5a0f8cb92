"""Retention policies: the schema of config/*.toml, its loader and its checker."""
