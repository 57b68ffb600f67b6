"""PostgreSQL evidence shared by the exporter (exporters/pg_exporter) and `sloguard diagnose`.

queries.py: the catalogue SQL and small typed readers; advisor.py: the missing-index advisor (HypoPG-verified).
"""
