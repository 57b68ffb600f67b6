-- name: login_by_email
-- description: Login: the hot path that seq-scanned 2.5M rows on 2024-01-15.
-- params: ["user4242@example.com"]
SELECT * FROM users WHERE email = $1 AND status = 'active';
