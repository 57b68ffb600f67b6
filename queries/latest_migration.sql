-- name: latest_migration
-- description: Deploy check: the last applied migration.
-- params: []
SELECT version, applied_at FROM schema_migrations ORDER BY applied_at DESC LIMIT 1;
