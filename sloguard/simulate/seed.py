"""The simulation's database: the scenario's schema and data, the index the login query relied on, the migration.

Modelling choice (the scenario does not say which index vanished, only that the login query seq-scanned after the
migration): before the migration `users` has a plain btree index on `email`, which the login query
`WHERE email = $1 AND status = 'active'` uses. Migration 20240115_add_user_preferences adds the `user_preferences`
column and, in the same file, drops that index (as a table rebuild or a "cleanup" that forgets to recreate an
index would). From then on the login query seq-scans `users`. The scenario's own fix, an index on `status`, would
not help (80% of rows are 'active'); the fix the diagnosis recommends, an index on `email`, does.
"""
from __future__ import annotations

from sloguard.scenario_data import MIGRATION_20240115, SCHEMA_SQL, seed_sql

EMAIL_INDEX = "users_email_idx"
MIGRATION_VERSION = "20240115_add_user_preferences"


def setup_sql(users: int) -> str:
    """Schema, data, the pre-incident index and the extensions the exporter and diagnose read."""
    return "\n".join([
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;",
        "CREATE EXTENSION IF NOT EXISTS hypopg;",
        SCHEMA_SQL.strip(),
        seed_sql(users=users).strip(),
        f"CREATE INDEX IF NOT EXISTS {EMAIL_INDEX} ON users (email);",
        # The recent-orders join is healthy in production: without these it would seq-scan both tables all day and
        # the seq-scan alert would be firing before the incident starts.
        "CREATE INDEX IF NOT EXISTS users_created_at_idx ON users (created_at);",
        "CREATE INDEX IF NOT EXISTS orders_user_id_idx ON orders (user_id);",
        "INSERT INTO schema_migrations (version, applied_at) VALUES ('20231201_create_users', '2023-12-01')"
        " ON CONFLICT DO NOTHING;",
        "ANALYZE users; ANALYZE orders;",
    ]) + "\n"


def migration_sql() -> str:
    """The incident's migration as modelled here (see the module docstring), recorded like a migration tool does."""
    return "\n".join([
        "BEGIN;",
        "SET LOCAL lock_timeout = '5s';",
        MIGRATION_20240115.strip(),
        f"DROP INDEX IF EXISTS {EMAIL_INDEX};",
        f"INSERT INTO schema_migrations (version) VALUES ('{MIGRATION_VERSION}');",
        "COMMIT;",
        "ANALYZE users;",
    ]) + "\n"
