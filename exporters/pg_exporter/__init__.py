"""sloguard's PostgreSQL exporter: statements, tables, missing-index evidence, connections, locks, migrations.

Run with `python -m exporters.pg_exporter --dsn ...`; metric names come from sloguard.names.
"""
__version__ = "0.1.0"
