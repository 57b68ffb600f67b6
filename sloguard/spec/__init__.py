"""The SLO spec side of sloguard: YAML with line numbers (yamlnodes), validation (loader), the typed model (model).

Builders import `sloguard.spec.model`; callers load specs with `load_spec` / `parse_spec`.
"""
from sloguard.spec.loader import SpecError, load_spec, parse_spec

__all__ = ["SpecError", "load_spec", "parse_spec"]
