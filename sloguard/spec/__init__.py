"""The SLO spec side of sloguard: YAML with line numbers (yamlnodes), validation (loader), the typed model (model),
Sloth prometheus/v1 (sloth) and OpenSLO v1 (openslo) input, detected by the loader.

Builders import `sloguard.spec.model`; callers load specs with `load_spec` / `parse_spec`.
"""
from sloguard.spec.loader import (
    Defaults,
    SpecError,
    load_defaults,
    load_paths,
    load_spec,
    load_specs,
    parse_spec,
    spec_files,
)

__all__ = ["Defaults", "SpecError", "load_defaults", "load_paths", "load_spec", "load_specs", "parse_spec",
           "spec_files"]
