"""The fast rule-file writer gives exactly PyYAML's bytes: on generated rule files and on awkward strings."""
from __future__ import annotations

import pytest
import yaml

from sloguard import fastyaml
from sloguard.outputs import PROMETHEUS_RULE_PATH, RULES_PATH, pyyaml_dump, render_all
from sloguard.spec import parse_spec
from tests.fleet_specs import fleet_spec_text

AWKWARD = [
    "", " ", "a", "on", "yes", "No", "null", "~", "=", "<<", "1", "0.5", "99.9", "1e3", "0x1f", "2024-01-15",
    "12:30", "-", "- x", "-x", "?", "? x", ":", "a: b", "a:b", "a #b", "a#b", "#a", "a ", " a", "---", "...x",
    "'quoted'", '"double"', "it's", "{{ $value }} x", "[a]", "*ref", "&anchor", "!tag", "|", ">", "%x", "@x", "`x",
    "tab\there", "ünïcode", "emoji 🙂", "line\nbreak", "line\nbreak\n", "line\n\nbreak\n\n", "trailing \nspace",
    "  indented\nfirst", "a\n  b\nc", "x\u0085y", "ctrl\x07", "http://localhost:3000/d/x?viewPanel=4",
    'sum(rate(x{job="api",code=~"5.."}[5m])) > 0.5', "1h/5m", "5m", "30d", "sloguard:pg_statement:rate5m",
]


def test_awkward_strings_as_values_keys_and_items():
    data = [{"name": s, "rules": [{"k": s, s or "empty": {"inner": s}, "list": [s, {"x": s}]}]} for s in AWKWARD]
    assert fastyaml.dump(data, pyyaml_dump) == pyyaml_dump(data)
    for s in AWKWARD:
        one = {"groups": [{"name": "g", "rules": [{"expr": s, "labels": {"a": s}}]}]}
        assert fastyaml.dump(one, pyyaml_dump) == pyyaml_dump(one), repr(s)
        assert yaml.safe_load(fastyaml.dump(one, pyyaml_dump)) == one


def test_empty_and_non_string_values_fall_back_to_pyyaml():
    for data in ({}, [], {"a": {}}, {"a": []}, {"a": 1}, {"a": [1, 2]}, {"a": None}, {"a": True}):
        assert fastyaml.dump(data, pyyaml_dump) == pyyaml_dump(data)


@pytest.mark.parametrize("text", [
    fleet_spec_text("checkout", 6, "pg", "28d", "team: 'payments: eu', tier: '1'"),
    fleet_spec_text("search", 3, objective="90"),
])
def test_generated_rule_files_are_pyyaml_bytes(text):
    files = render_all(parse_spec(text, "spec.yaml"))
    for path in (RULES_PATH, PROMETHEUS_RULE_PATH):
        head, body = files[path].split("\n", 1)
        data = yaml.safe_load(body)
        # the rule file is written group by group; the whole document must be the same text either way
        assert fastyaml.dump(data, pyyaml_dump) == pyyaml_dump(data), path
