"""`make check-live PROMETHEUS=URL`: the spec against a live Prometheus, the runnable form of pint's series checks.

checks.py decides what to ask and what an answer means; api.py talks HTTP; __main__.py is the CLI.
"""
