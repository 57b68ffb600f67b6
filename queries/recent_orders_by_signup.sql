-- name: recent_orders_by_signup
-- description: Orders of recently registered users (the scenario's 8.5 s join).
-- params: ["2023-12-28"]
SELECT orders.* FROM orders JOIN users ON orders.user_id = users.id WHERE users.created_at > $1;
