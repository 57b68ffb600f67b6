-- The fix: the login query `WHERE email = $1 AND status = 'active'` needs an index on email.
-- An index on (status) is not used (80% of rows are 'active'); HypoPG shows (email) cuts the plan cost ~5000x.
-- CONCURRENTLY: no write lock on users while it builds; it cannot run inside a transaction block.
-- lock_timeout = 0 on purpose: the build's SHARE UPDATE EXCLUSIVE lock queues no reads or writes, but a lock
-- timeout also cancels the build whenever an older transaction or snapshot outlives it, leaving an INVALID index.
-- statement_timeout = 0: the build may take minutes under load.
SET lock_timeout = 0;
SET statement_timeout = 0;
-- A failed earlier attempt leaves an INVALID index: stop with the fix rather than skip over it.
DO $sloguard$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_index WHERE indexrelid = to_regclass('users_email_idx') AND NOT indisvalid) THEN
    RAISE EXCEPTION 'users_email_idx is INVALID (an earlier build failed): run DROP INDEX CONCURRENTLY users_email_idx; then this migration again';
  END IF;
END
$sloguard$;
-- No IF NOT EXISTS: it would skip silently over an INVALID index left by a failed build.
-- squawk-ignore prefer-robust-stmts
CREATE INDEX CONCURRENTLY users_email_idx ON users (email);
-- The build can end INVALID without psql noticing (e.g. run without ON_ERROR_STOP): check it.
DO $sloguard$
BEGIN
  IF NOT coalesce((SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_email_idx'::regclass), false) THEN
    RAISE EXCEPTION 'users_email_idx is INVALID: run DROP INDEX CONCURRENTLY users_email_idx; then this migration again';
  END IF;
END
$sloguard$;
