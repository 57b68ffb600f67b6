-- Post-mortem action: the orders-of-recent-signups join (`JOIN users ON orders.user_id = users.id`) read all of
-- orders; the query-plan gate (make check-migrations) names this index. A new dated migration, not an edit of
-- 20240101_initial_schema.sql: production has applied that file already and would never run it again.
-- CONCURRENTLY keeps orders writable. lock_timeout = 0 and no IF NOT EXISTS on purpose, as in
-- 20240115_add_users_email_index.sql: a lock timeout cancels the build whenever an older transaction outlives it
-- and leaves an INVALID index, which IF NOT EXISTS would then skip over silently.
SET lock_timeout = 0;
SET statement_timeout = 0;
DO $sloguard$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('orders_user_id_idx') AND NOT indisvalid) THEN
    RAISE EXCEPTION 'orders_user_id_idx is INVALID (an earlier build failed): run DROP INDEX CONCURRENTLY orders_user_id_idx; then this migration again';
  END IF;
END
$sloguard$;
-- squawk-ignore prefer-robust-stmts
CREATE INDEX CONCURRENTLY orders_user_id_idx ON orders (user_id);
DO $sloguard$
BEGIN
  IF NOT coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = 'orders_user_id_idx'::regclass), false) THEN
    RAISE EXCEPTION 'orders_user_id_idx is INVALID: run DROP INDEX CONCURRENTLY orders_user_id_idx; then this migration again';
  END IF;
END
$sloguard$;
