-- name: orders_of_user
-- description: Order history of one user, newest first.
-- params: [4242]
SELECT id, amount_cents, created_at FROM orders WHERE user_id = $1 ORDER BY created_at DESC LIMIT 50;
