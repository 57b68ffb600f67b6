"""Shared by the advisor tests: invented schemas of several shapes, and what the advisor must never leave behind in a
session."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def leftovers(conn) -> tuple[list, list]:
    """Prepared statements and HypoPG indexes still in this session (both outlive a rollback)."""
    prepared = conn.execute("SELECT name FROM pg_prepared_statements").fetchall()
    return prepared, conn.execute("SELECT * FROM hypopg_list_indexes").fetchall()


@contextmanager
def built_index(conn, statements: list[str], name: str) -> Iterator[None]:
    """A real index, built by running `statements` as given (autocommit connection), dropped afterwards."""
    try:
        for sql in statements:
            conn.execute(sql)
        yield
    finally:
        conn.execute(f"DROP INDEX IF EXISTS {name}")


def plan_uses(conn, sql: str, index: str) -> bool:
    """Whether the planner's plan for `sql` (values written in) uses `index`."""
    return index in "\n".join(r[0] for r in conn.execute(f"EXPLAIN {sql}"))


# Invented schemas (not the incident's users/email), one per shape the advisor must handle; shapes_sql() joins them.
SHAPES = {
    "billing": """
-- billing: invoices -> customers, the foreign key without an index
CREATE TABLE customers (id bigint PRIMARY KEY, code text NOT NULL UNIQUE, region text NOT NULL);
CREATE TABLE invoices (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers (id),
                       amount_cents int NOT NULL, issued_on date NOT NULL);
INSERT INTO customers SELECT g, 'C' || g, 'r' || (g % 7) FROM generate_series(1, 20000) g;
INSERT INTO invoices SELECT g, (g::bigint * 7919) % 20000 + 1, (g * 37) % 50000, date '2023-01-01' + g % 365
FROM generate_series(1, 300000) g;
""",
    "logistics": """
-- logistics: shipments -> warehouses, a nested loop or hash join on warehouse_id
CREATE TABLE warehouses (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE shipments (id bigint PRIMARY KEY, warehouse_id int NOT NULL REFERENCES warehouses (id),
                        weight_g int NOT NULL, shipped_at timestamptz NOT NULL);
INSERT INTO warehouses SELECT g, 'wh-' || g FROM generate_series(1, 2000) g;
INSERT INTO shipments SELECT g, (g::bigint * 104729) % 2000 + 1, g % 30000, timestamptz '2023-01-01' + g * interval '1 min'
FROM generate_series(1, 400000) g;
""",
    "line_items": """
-- order lines: a composite filter (product alone leaves ~200 rows, with the warehouse ~2)
CREATE TABLE line_items (id bigint PRIMARY KEY, product_id int NOT NULL, warehouse_code text NOT NULL,
                         qty int NOT NULL);
INSERT INTO line_items SELECT g, (g * 7) % 2000, 'W' || ((g * 13) % 97), 1 + g % 5 FROM generate_series(1, 400000) g;
""",
    "events": """
-- telemetry: recent events, read by a time window against now()
CREATE TABLE events (id bigint PRIMARY KEY, device_id int NOT NULL, kind text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO events SELECT g, (g * 31) % 5000, 'k' || g % 4, now() - g * interval '1 s' FROM generate_series(1, 300000) g;
""",
    "jobs": """
-- a job queue: 99% done, ~0.9% running, 0.1% failed
CREATE TABLE jobs (id bigint PRIMARY KEY, status text NOT NULL, payload text NOT NULL);
INSERT INTO jobs SELECT g, CASE WHEN g % 1000 = 0 THEN 'failed' WHEN g % 100 = 1 THEN 'running' ELSE 'done' END,
                        repeat('x', 40) FROM generate_series(1, 200000) g;
""",
    "tickets": """
-- multi-tenant tickets: one tenant owns half the rows, 3,000 small tenants share the rest
CREATE TABLE tickets (id bigint PRIMARY KEY, tenant_id int NOT NULL, state text NOT NULL, body text NOT NULL);
INSERT INTO tickets SELECT g, CASE WHEN g % 2 = 0 THEN 1 ELSE 2 + (g * 17) % 3000 END,
                           CASE WHEN g % 5 = 0 THEN 'closed' ELSE 'open' END, repeat('y', 30)
FROM generate_series(1, 300000) g;
""",
}


def shapes_sql(*names: str) -> str:
    """HypoPG and the named shapes (all when none is named), analyzed."""
    return "CREATE EXTENSION hypopg;\n" + "".join(SHAPES[n] for n in names or SHAPES) + "ANALYZE;\n"
