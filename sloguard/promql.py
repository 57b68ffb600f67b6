"""Small, pure PromQL helpers: durations, selectors, matcher injection, noise-free numbers.

Pure Python on purpose: the loader validates a 1,000-SLO spec in well under a second, no promtool round trip.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from sloguard.spec.model import Duration

_UNIT_SECONDS = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_RE = re.compile(r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class PromQLError(ValueError):
    """A duration or selector that PromQL would reject; the message says what is wrong."""


def parse_duration(text: str) -> Duration:
    """'30d', '1h30m' -> Duration with a normalised text. Whole seconds only (no 'ms'): windows, not timeouts."""
    if not isinstance(text, str) or not text or not _DURATION_RE.match(text):
        raise PromQLError(f"{text!r} is not a duration (use a number and a unit: s, m, h, d, w, y; e.g. 5m, 1h, 30d)")
    parts = _DURATION_RE.match(text).groups()
    seconds = sum(int(n) * unit for n, unit in zip(parts, _UNIT_SECONDS.values(), strict=True) if n)
    if seconds <= 0:
        raise PromQLError(f"{text!r} is zero; a window must be positive")
    return Duration(text=format_duration(seconds), seconds=seconds)


def format_duration(seconds: int) -> str:
    """Seconds -> the shortest PromQL duration using d/h/m/s (never w/y: '30d' reads better than '4w2d')."""
    out = []
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out) or "0s"


@lru_cache(maxsize=4096)   # pure; a 1,000-SLO spec prints the same few numbers ~30,000 times
def fmt_number(x: float) -> str:
    """A float as PromQL/YAML text without binary noise: 0.999 never prints 0.9990000000000001, 14.0 prints 14."""
    d = Decimal(repr(round(float(x), 12))).normalize()
    if d == d.to_integral_value():
        return str(int(d))
    return format(d, "f")


@dataclass(frozen=True)
class Matcher:
    name: str
    op: str       # =, !=, =~, !~
    value: str    # unescaped

    def render(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op}"{escaped}"'


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[Matcher, ...]

    def render(self) -> str:
        if not self.matchers:
            return self.metric
        return self.metric + "{" + ",".join(m.render() for m in self.matchers) + "}"


_RE2_FLAGS = set("imsU")
_QUANTIFIER_END = set("*+?}")


def re2_problem(pattern: str) -> str | None:
    """Why Prometheus (Go RE2) would reject a regex that Python's `re` accepts, or None.

    RE2 has no lookaround, backreferences, possessive quantifiers, atomic groups, conditionals or \\Z; Python has
    them all, so `re.compile` alone lets them through and promtool fails later.
    """
    i, n, prev_quantifier = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1:i + 2]
            if nxt.isdigit() and nxt != "0":
                return f"backreference \\{nxt} (RE2 has no backreferences)"
            if nxt == "Z":
                return "\\Z (RE2 spells end of text \\z)"
            i, prev_quantifier = i + 2, False
            continue
        if c == "[":   # character class: skip to its closing bracket, nothing inside is special here
            j = i + 1
            if pattern[j:j + 1] == "^":
                j += 1
            if pattern[j:j + 1] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i, prev_quantifier = j + 1, False
            continue
        if c == "(" and pattern[i + 1:i + 2] == "?":
            rest = pattern[i + 2:]
            if rest.startswith(("=", "!", "<=", "<!")):
                opener = rest[:2] if rest[0] == "<" else rest[:1]
                return f"lookaround '(?{opener}...)' (RE2 has no lookahead or lookbehind)"
            if rest.startswith(">"):
                return "atomic group '(?>...)' (not in RE2)"
            if rest.startswith("("):
                return "conditional group '(?(...)...)' (not in RE2)"
            if rest.startswith("P="):
                return "named backreference '(?P=name)' (RE2 has no backreferences)"
            if rest.startswith("#"):
                return "comment group '(?#...)' (not in RE2)"
            if not rest.startswith(("P<", ":")):
                flags = rest[:len(rest) - len(rest.lstrip("imsuxaLU-"))]
                bad = sorted(set(flags) - _RE2_FLAGS - {"-"})
                if bad or rest[len(flags):len(flags) + 1] not in (")", ":"):
                    return f"group '(?{rest[:6]}' (RE2 allows (?:...), (?P<name>...) and the flags i, m, s, U)"
        if c == "+" and prev_quantifier:
            return f"possessive quantifier '{pattern[i - 1]}+' (not in RE2; drop the '+')"
        prev_quantifier = c in _QUANTIFIER_END and not (c == "?" and prev_quantifier)
        i += 1
    return None


_MATCHER_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*')
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"'}


@lru_cache(maxsize=16384)   # pure, returns a frozen Selector; the rule builders re-read each SLI selector ~30 times
def parse_selector(text: str) -> Selector:
    """`metric` or `metric{label op "value", ...}`. Raises PromQLError naming the first problem."""
    if not isinstance(text, str):
        raise PromQLError(f"expected a selector string, got {type(text).__name__}")
    s = text.strip()
    brace = s.find("{")
    metric = s if brace < 0 else s[:brace].strip()
    if not metric:
        raise PromQLError(f"{text!r} has no metric name (write e.g. http_requests_total{{job=\"api\"}})")
    if not METRIC_NAME_RE.match(metric):
        raise PromQLError(f"{metric!r} is not a metric name (letters, digits, _ and :, not starting with a digit)")
    if brace < 0:
        return Selector(metric, ())
    if not s.endswith("}"):
        raise PromQLError(f"{text!r}: label matchers must end with '}}'")
    body, pos, matchers = s[brace + 1:-1], 0, []
    while pos < len(body):
        m = _MATCHER_RE.match(body, pos)
        if not m:
            raise PromQLError(f"{text!r}: cannot read a label matcher at {body[pos:]!r} "
                              f"(write label=\"value\", label!=\"v\", label=~\"re\" or label!~\"re\")")
        name, op, raw = m.groups()
        value = re.sub(r"\\(.)", lambda e: _ESCAPES.get(e.group(1), "\\" + e.group(1)), raw)
        if op in ("=~", "!~"):
            try:
                re.compile(value)
            except re.error as exc:
                raise PromQLError(f"{text!r}: label {name} regex {value!r} is invalid: {exc}") from None
            problem = re2_problem(value)
            if problem:
                raise PromQLError(f"{text!r}: label {name} regex {value!r} uses {problem}; Prometheus regexes are "
                                  "RE2 (https://github.com/google/re2/wiki/Syntax)")
        matchers.append(Matcher(name, op, value))
        pos = m.end()
        if pos < len(body):
            if body[pos] != ",":
                raise PromQLError(f"{text!r}: expected ',' between label matchers at {body[pos:]!r}")
            pos += 1
    return Selector(metric, tuple(matchers))


@lru_cache(maxsize=16384)
def with_suffix(selector: str, suffix: str) -> str:
    """http_request_duration_seconds{job="api"} + _bucket -> http_request_duration_seconds_bucket{job="api"}."""
    sel = parse_selector(selector)
    return Selector(sel.metric + suffix, sel.matchers).render()


@lru_cache(maxsize=16384)
def inject(selector: str, *matchers: Matcher) -> str:
    """Add label matchers to a selector (replacing any matcher on the same label)."""
    sel = parse_selector(selector)
    names = {m.name for m in matchers}
    kept = tuple(m for m in sel.matchers if m.name not in names)
    return Selector(sel.metric, kept + tuple(matchers)).render()


def le_regex(threshold: float) -> str:
    """A fully anchored regex matching every usual spelling of a bucket boundary.

    0.5 -> 0[.]50*  (0.5, 0.50, 0.500: client libraries differ), 1 -> 1([.]0*)?  (Prometheus 3 writes "1.0").
    [.] instead of \\. keeps the PromQL string free of escapes.
    """
    text = fmt_number(threshold)
    if "." in text:
        return text.replace(".", "[.]") + "0*"
    return text + "([.]0*)?"
