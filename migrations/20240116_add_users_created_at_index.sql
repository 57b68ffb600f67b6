-- Post-mortem action: the orders-of-recent-signups join (`WHERE users.created_at > $1`) seq-scanned users.
-- The query-plan gate (make check-migrations) names this index; CONCURRENTLY keeps users writable.
SET lock_timeout = '5s';
SET statement_timeout = 0;
CREATE INDEX CONCURRENTLY IF NOT EXISTS users_created_at_idx ON users (created_at);
