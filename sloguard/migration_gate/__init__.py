"""Migration safety gate: squawk lint + query-plan gate on a throwaway, realistically seeded PostgreSQL."""
