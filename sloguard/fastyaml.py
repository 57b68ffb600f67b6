"""Block-style YAML for rule files, byte-for-byte what PyYAML writes with sloguard's dumper, 10x faster.

At 1,000 SLOs PyYAML spends most of generation building a node per scalar (320,000 of them). Rule files are only
mappings, lists and strings, so this writer emits them directly and asks PyYAML (`reference`, the dumper it must
match) only about a scalar it cannot classify with certainty: anything but a plain identifier-like string, a
string YAML would read as another type, or a multi-line PromQL block. Those answers are cached per string.
tests/test_fastyaml.py compares both writers on every generated rule file and on awkward strings.
"""
from __future__ import annotations

import re
from collections.abc import Callable

import yaml

STR_TAG = "tag:yaml.org,2002:str"
# Safe as a plain scalar in block context: no indicator first, no ': ', ' #', trailing ':' or edge spaces, printable
# ASCII only. Whether it would read back as a string (not a number, bool, null, date) is asked separately.
_PLAIN = re.compile(r"[A-Za-z0-9_/(.][ -~]*")
_PLAIN_BAD = re.compile(r": | #|:$|\s$")
_INDICATORS = set("#,[]{}&*!|>'\"%@`")
_NOT_PLAIN = re.compile(r": | #|:$")
_LITERAL_LINE = re.compile(r"[ -~]*")          # printable ASCII, tabs excluded (PyYAML may choose another style)
_resolver = yaml.resolver.Resolver()
WHOLE_DOCUMENT = "\1"
_CACHES: dict[Callable, dict[str, str]] = {}   # per reference writer: rule files repeat most scalars
_TEXTS: dict[Callable, dict[tuple[str, int], str]] = {}   # scalar -> its text at an indentation
_CACHE_LIMIT = 500_000


class Writer:
    def __init__(self, reference: Callable[[object], str]):
        self.reference = reference
        self.cache = _CACHES.setdefault(reference, {})
        self.texts = _TEXTS.setdefault(reference, {})
        if len(self.cache) + len(self.texts) > _CACHE_LIMIT:
            self.cache.clear()
            self.texts.clear()

    def scalar(self, value: str) -> str:
        """The scalar as it follows `key: ` or `- ` (a literal block includes its newline-led body marker)."""
        cached = self.cache.get(value)
        if cached is None:
            cached = self.cache[value] = self._classify(value)
        if cached == WHOLE_DOCUMENT:
            raise TypeError("a scalar only PyYAML's whole-document writer spells right")
        return cached

    def _classify(self, value: str) -> str:
        if ("\n" not in value and _PLAIN.fullmatch(value) and not _PLAIN_BAD.search(value)
                and not value.startswith(("---", "..."))
                and _resolver.resolve(yaml.ScalarNode, value, (True, False)) == STR_TAG):
            return value
        if ("\n" not in value and value and _LITERAL_LINE.fullmatch(value) and not value.startswith(" ")
                and not value.endswith(" ")
                and (value[0] in _INDICATORS or _NOT_PLAIN.search(value)
                     or _resolver.resolve(yaml.ScalarNode, value, (True, False)) != STR_TAG)):
            # printable, one line, certainly not plain (an indicator first, `: `, ` #`, a trailing `:`, or it
            # would read back as a number, bool, null or date): single-quoted
            return "'" + value.replace("'", "''") + "'"
        if "\n" in value and not value.startswith((" ", "\n")) and not value.endswith(("\n\n", " ")):
            # multi-line PromQL: a literal block, clipped (|) or stripped (|-) of its final newline
            lines = value.split("\n")
            clip = value.endswith("\n")
            body = lines[:-1] if clip else lines
            if all(line and _LITERAL_LINE.fullmatch(line) and not line.endswith(" ") for line in body):
                return "\0" + (" |" if clip else " |-") + "\n" + "\n".join(body)
        return self._from_reference(value)

    def _from_reference(self, value: str) -> str:
        """PyYAML's own spelling of `value` as a mapping value, with a marker for literal blocks (re-indented
        by the caller)."""
        # a second key keeps the value off the document's end (a `|+` block there gets a `...` marker)
        text = self.reference({"k": value, "z": "z"})
        if not (text.startswith("k:") and text.endswith("\nz: z\n")):
            return WHOLE_DOCUMENT      # e.g. a `|+` block: libyaml then ends the document with `...`
        body = text[2:-len("z: z\n")]
        if body.startswith(" |") or body.startswith(" >"):
            header, _, rest = body.partition("\n")
            lines = rest.split("\n")
            # PyYAML indents block bodies by 2 under a top-level key; keep them relative, re-indented on output
            return "\0" + header + "\n" + "\n".join(line[2:] if line.startswith("  ") else line
                                                    for line in lines[:-1])
        return body[1:-1] if body.endswith("\n") else body[1:]

    def literal(self, value: str, indent: int) -> str:
        """`value` after `key:` or `-`, with its newline; block bodies indented by `indent`."""
        key = (value, indent)
        text = self.texts.get(key)
        if text is None:
            marked = self.scalar(value)
            if not marked.startswith("\0"):
                text = " " + marked + "\n"
            else:
                header, _, body = marked[1:].partition("\n")
                pad = " " * indent
                text = header + "\n" + "".join(f"{pad}{line}\n" if line else "\n" for line in body.split("\n"))
            self.texts[key] = text
        return text

    def mapping(self, data: dict, indent: int, out: list[str], first_inline: bool = False) -> None:
        pad = " " * indent
        first = first_inline
        for key, value in data.items():
            if type(key) is not str:
                raise TypeError("non-string key")
            key_text = self.scalar(key)
            if key_text.startswith("\0"):
                raise TypeError("multi-line key")
            head = (key_text if first else pad + key_text) + ":"
            first = False
            if type(value) is str:
                out.append(head + self.literal(value, indent + 2))
            elif type(value) is dict and value:
                out.append(head + "\n")
                self.mapping(value, indent + 2, out)
            elif type(value) is list and value:
                out.append(head + "\n")
                self.sequence(value, indent, out)      # PyYAML: list items at the key's indentation
            elif type(value) is dict:
                out.append(head + " {}\n")
            elif type(value) is list:
                out.append(head + " []\n")
            else:
                raise TypeError(type(value))

    def sequence(self, items: list, indent: int, out: list[str]) -> None:
        pad = " " * indent
        for item in items:
            if type(item) is dict and item:
                out.append(pad + "- ")
                self.mapping(item, indent + 2, out, first_inline=True)
            elif type(item) is str:
                out.append(pad + "-" + self.literal(item, indent + 2))
            else:
                raise TypeError(type(item))


def dump(data, reference: Callable[[object], str]) -> str:
    """`reference(data)` (PyYAML) for anything but a non-empty mapping or list of mappings/strings."""
    writer = Writer(reference)
    out: list[str] = []
    try:
        if isinstance(data, dict) and data:
            writer.mapping(data, 0, out)
        elif isinstance(data, list) and data:
            writer.sequence(data, 0, out)
        else:
            return reference(data)
    except TypeError:
        return reference(data)
    return "".join(out)
