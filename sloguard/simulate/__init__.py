"""`python -m sloguard.simulate`: the 2024-01-15 incident replayed end to end on 127.0.0.1 (see __main__)."""
