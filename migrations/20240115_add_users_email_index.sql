-- The fix: the login query `WHERE email = $1 AND status = 'active'` needs an index on email.
-- An index on (status) is not used (80% of rows are 'active'); HypoPG shows (email) cuts the plan cost ~5000x.
-- CONCURRENTLY: no write lock on users while it builds; it cannot run inside a transaction block.
SET lock_timeout = '5s';
SET statement_timeout = 0;
CREATE INDEX CONCURRENTLY IF NOT EXISTS users_email_idx ON users (email);
