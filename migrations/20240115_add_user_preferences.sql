-- The 2024-01-15 migration (applied 14:31 UTC). A nullable column without a default is a catalog-only change,
-- but it still takes an ACCESS EXCLUSIVE lock on users: bound the wait so it cannot queue behind a long query.
SET lock_timeout = '5s';
SET statement_timeout = '15s';
ALTER TABLE users ADD COLUMN IF NOT EXISTS user_preferences jsonb;
