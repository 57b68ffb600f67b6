"""`python -m sloguard.diagnose`: one read-only pass over PostgreSQL (and Prometheus) -> a ranked report.

collect.py gathers evidence, rank.py turns it into ranked findings, render.py prints text, JSON or markdown.
"""
