"""Benchmarks: `python -m bench` runs the whole suite (bench/suite.py) on SQLite and
PostgreSQL; the scripts beside it (ingest_bench, sweep_bench, dsar_audit_bench) also run
alone. Results and how they were measured: docs/performance.md."""
