"""YAML -> plain Python values plus the line of every field, so spec errors can say `slo.yaml:12`.

PyYAML's composer gives nodes with start marks; we construct scalars with SafeLoader's own resolver
(so `99.9` is a float and `30d` a string, as usual) and refuse duplicate keys, which plain PyYAML silently merges.
"""
from __future__ import annotations

import yaml

Path = tuple  # ("slos", 1, "objective")
# libyaml's parser when available: same nodes and marks, several times faster on large specs.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlError(ValueError):
    def __init__(self, line: int | None, path: Path, message: str):
        super().__init__(message)
        self.line, self.path, self.message = line, path, message


def load_with_lines(text: str) -> tuple[object, dict[Path, int]]:
    """Returns (value, {path: 1-based line}). Raises YamlError on syntax errors or duplicate keys."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            raise YamlError(line, (), f"not valid YAML: {exc.problem or exc}") from None
        except yaml.YAMLError as exc:
            raise YamlError(None, (), f"not valid YAML: {exc}") from None
        lines: dict[Path, int] = {}
        if node is None:
            return None, lines
        return _convert(loader, node, (), lines), lines
    finally:
        loader.dispose()


def load_all_with_lines(text: str) -> list[tuple[object, dict[Path, int]]]:
    """Every document of a multi-document stream (`---` separated), each as (value, {path: line}).
    Empty documents are skipped. Raises YamlError as load_with_lines does."""
    loader = _Loader(text)
    out = []
    try:
        while True:
            try:
                if not loader.check_node():
                    break
                node = loader.get_node()
            except yaml.MarkedYAMLError as exc:
                mark = exc.problem_mark or exc.context_mark
                raise YamlError(mark.line + 1 if mark else None, (), f"not valid YAML: {exc.problem or exc}") from None
            except yaml.YAMLError as exc:
                raise YamlError(None, (), f"not valid YAML: {exc}") from None
            if node is None or (isinstance(node, yaml.ScalarNode) and node.value == "" and node.tag.endswith("null")):
                continue
            lines: dict[Path, int] = {}
            out.append((_convert(loader, node, (), lines), lines))
    finally:
        loader.dispose()
    return out


def _convert(loader, node: yaml.Node, path: Path, lines: dict[Path, int]) -> object:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)   # resolves << merge keys
        out: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise YamlError(key_node.start_mark.line + 1, path, f"key {key!r} must be a string")
            if key in out:
                raise YamlError(key_node.start_mark.line + 1, path + (key,),
                                f"duplicate key {key!r} (the first one would be silently lost)")
            out[key] = _convert(loader, value_node, path + (key,), lines)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, path + (i,), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def render_path(path: Path) -> str:
    """("slos", 1, "objective") -> "slos[1].objective"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"
