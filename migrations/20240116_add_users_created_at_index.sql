-- Post-mortem action: the orders-of-recent-signups join (`WHERE users.created_at > $1`) seq-scanned users.
-- The query-plan gate (make check-migrations) names this index; CONCURRENTLY keeps users writable.
-- lock_timeout = 0 and no IF NOT EXISTS on purpose, as in 20240115_add_users_email_index.sql: a lock timeout
-- cancels the build whenever an older transaction outlives it and leaves an INVALID index, which IF NOT EXISTS
-- would then skip over silently.
SET lock_timeout = 0;
SET statement_timeout = 0;
DO $sloguard$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('users_created_at_idx') AND NOT indisvalid) THEN
    RAISE EXCEPTION 'users_created_at_idx is INVALID (an earlier build failed): run DROP INDEX CONCURRENTLY users_created_at_idx; then this migration again';
  END IF;
END
$sloguard$;
-- squawk-ignore prefer-robust-stmts
CREATE INDEX CONCURRENTLY users_created_at_idx ON users (created_at);
DO $sloguard$
BEGIN
  IF NOT coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_created_at_idx'::regclass), false) THEN
    RAISE EXCEPTION 'users_created_at_idx is INVALID: run DROP INDEX CONCURRENTLY users_created_at_idx; then this migration again';
  END IF;
END
$sloguard$;
