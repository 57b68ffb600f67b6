"""Benchmarks (make bench, bench-exporter, bench-diagnose)."""
