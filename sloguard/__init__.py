"""sloguard: SLO rules, dashboards and Postgres evidence generated from one spec."""
