"""Errors the gate reports with exit code 2 (bad input, or the gate could not run)."""


class GateInputError(Exception):
    """Bad input file or flag; the message names the file, the field and the fix."""
