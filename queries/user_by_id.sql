-- name: user_by_id
-- description: Profile page.
-- params: [4242]
SELECT id, email, name, status, user_preferences FROM users WHERE id = $1;
