"""A small demo API for the 2024-01-15 scenario: the login and recent-orders queries behind a bounded pool."""
