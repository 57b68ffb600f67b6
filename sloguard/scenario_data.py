"""The 2024-01-15 scenario's schema and data, shaped like production at a chosen scale.

users: email unique, status 80% 'active' (the rest 'inactive'/'suspended'), created_at spread over 3 years.
orders: ~2 per user, joined on user_id. Used by exporter tests, diagnose, the migration gate and the simulation.
"""

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS users (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL,
    status      text NOT NULL,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL,
    amount_cents integer NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
"""


def seed_sql(users: int = 2_500_000, orders_per_user: int = 2) -> str:
    """Deterministic INSERT ... SELECT generate_series seeding (no random(): reproducible plans)."""
    return f"""
INSERT INTO users (email, status, name, created_at)
SELECT 'user' || g || '@example.com',
       CASE WHEN g % 10 < 8 THEN 'active' WHEN g % 10 = 8 THEN 'inactive' ELSE 'suspended' END,
       'User ' || g,
       timestamptz '2021-01-01' + (g % 1095) * interval '1 day'
FROM generate_series(1, {users}) AS g;
INSERT INTO orders (user_id, amount_cents, created_at)
SELECT (g % {users}) + 1, (g * 37) % 20000, timestamptz '2021-01-01' + (g % 1095) * interval '1 day'
FROM generate_series(1, {users * orders_per_user}) AS g;
ANALYZE users; ANALYZE orders;
"""


# The application's hot queries from the scenario, in pg_stat_statements-normalised form with sample values.
LOGIN_QUERY = "SELECT * FROM users WHERE email = %s AND status = 'active'"
RECENT_ORDERS_QUERY = (
    "SELECT orders.* FROM orders JOIN users ON orders.user_id = users.id WHERE users.created_at > %s"
)

# The scenario's migration (the part that matters for plans: a new column on a large table).
MIGRATION_20240115 = "ALTER TABLE users ADD COLUMN user_preferences jsonb;"
