"""Pure rule builders: spec -> plain dicts (Prometheus rule format). No I/O; sloguard.outputs serialises them."""
