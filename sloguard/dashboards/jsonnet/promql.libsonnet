// PromQL text helpers, the jsonnet twin of sloguard/promql.py: the mixin must render exactly the rules the
// Python generator writes (tests/test_mixin.py compares them), so numbers and selectors are spelled the same way.
// Written with native std functions only (substr, split, strReplace, toString, arithmetic): the string helpers of
// the jsonnet standard library (format, findSubstr, rstripChars, slicing) cost milliseconds per call.
local zeros = ['', '0', '00', '000', '0000', '00000', '000000', '0000000', '00000000', '000000000', '0000000000',
               '00000000000', '000000000000'];
local units = { y: 365 * 86400, w: 7 * 86400, d: 86400, h: 3600, m: 60, s: 1 };
// the windows nearly every spec uses, looked up rather than parsed (a parse costs milliseconds in C++ jsonnet)
local commonDurations = {
  '1m': 60, '2m': 120, '5m': 300, '10m': 600, '15m': 900, '30m': 1800, '1h': 3600, '2h': 7200, '6h': 21600,
  '1d': 86400, '3d': 259200, '7d': 604800, '28d': 2419200, '30d': 2592000,
};

// (fraction digits, count) with trailing zeros removed: (500000000000, 12) -> (5, 1)
local trim(f, digits) = if digits > 0 && f % 10 == 0 then trim(f / 10, digits - 1) tailstrict else [f, digits];

{
  // 0.999 -> "0.999", 14.0 -> "14", 1 - 0.999 -> "0.001": rounded to 12 decimals, no binary noise.
  fmtNumber(x)::
    local short = std.toString(x);
    if std.floor(x) == x && std.abs(x) < 1e15 then short
    // a short spelling without exponent is already the shortest round-trip one: Python's repr
    else if std.length(short) <= 12 && std.length(std.split(short, 'e')) == 1 then short
    else
      local sign = if x < 0 then '-' else '';
      local scaled = std.round(std.abs(x) * 1e12);
      local whole = std.floor(scaled / 1e12);
      local frac = trim(scaled - whole * 1e12, 12);
      local digits = std.toString(frac[0]);
      if frac[1] == 0 then sign + std.toString(whole)
      else sign + std.toString(whole) + '.' + zeros[frac[1] - std.length(digits)] + digits,

  // Python's round(x): halves go to the even neighbour.
  roundHalfEven(x)::
    local f = std.floor(x);
    if x - f > 0.5 then f + 1 else if x - f < 0.5 then f else if f % 2 == 0 then f else f + 1,

  // 90 -> "1m30s", like sloguard.promql.format_duration (d, h, m, s; never w or y).
  formatDuration(seconds)::
    local units = [{ u: 'd', n: 86400 }, { u: 'h', n: 3600 }, { u: 'm', n: 60 }, { u: 's', n: 1 }];
    local step(acc, unit) =
      if acc.rest >= unit.n then { rest: acc.rest % unit.n, text: acc.text + std.toString(std.floor(acc.rest / unit.n)) + unit.u }
      else acc;
    local out = std.foldl(step, units, { rest: seconds, text: '' }).text;
    if out == '' then '0s' else out,

  // Python's round(x, 12), as the burn factor is rounded before it is compared and printed.
  round12(x):: std.round(x * 1e12) / 1e12,

  // "1h30m" -> 5400. Units y, w, d, h, m, s, as the spec loader accepts them.
  durationSeconds(text)::
    if std.objectHas(commonDurations, text) then commonDurations[text] else
    local marked = std.foldl(function(t, u) std.strReplace(t, u, u + ' '), std.objectFields(units), text);
    std.foldl(
      function(total, part)
        if part == '' then total
        else
          local unit = std.substr(part, std.length(part) - 1, 1);
          if !std.objectHas(units, unit) then error 'not a duration: ' + text
          else total + std.parseInt(std.substr(part, 0, std.length(part) - 1)) * units[unit],
      std.split(marked, ' '), 0),

  matcher(name, op, value)::
    name + op + '"' + std.strReplace(std.strReplace(std.strReplace(value, '\\', '\\\\'), '"', '\\"'), '\n', '\\n') + '"',

  // 'h{job="api"}' + '_bucket' -> 'h_bucket{job="api"}' (a metric name has no '{')
  withSuffix(selector, suffix)::
    local name = std.split(selector, '{')[0];
    name + suffix + std.substr(selector, std.length(name), std.length(selector)),

  // Add one rendered matcher to a selector.
  inject(selector, matcher)::
    if std.endsWith(selector, '}') then std.substr(selector, 0, std.length(selector) - 1) + ',' + matcher + '}'
    else selector + '{' + matcher + '}',

  // Every usual spelling of a bucket boundary: 0.5 -> 0[.]50*, 1 -> 1([.]0*)?
  leRegex(threshold)::
    local text = self.fmtNumber(threshold);
    if std.length(std.split(text, '.')) > 1 then std.strReplace(text, '.', '[.]') + '0*' else text + '([.]0*)?',

  // k="v", ... in the given order (Sloth's identifying labels), unescaped like the Python builder.
  labelMatchers(labels, keys):: std.join(', ', [k + '="' + labels[k] + '"' for k in keys]),

  // Go-template braces from user text must not open a template action.
  templateSafe(text):: std.strReplace(std.strReplace(text, '{{', '{ {'), '}}', '} }'),

  // Python's str.rstrip()
  rstrip(text)::
    local n = std.length(text);
    if n > 0 && std.objectHas({ ' ': 1, '\n': 1, '\t': 1, '\r': 1 }, std.substr(text, n - 1, 1))
    then self.rstrip(std.substr(text, 0, n - 1)) else text,

  // First letter upper-cased (ASCII), as Python's part[:1].upper() + part[1:] for names.
  capitalize(word):: std.asciiUpper(std.substr(word, 0, 1)) + std.substr(word, 1, std.length(word)),

  // Rule groups of at most `size` rules (mixtool lint), named name-1, name-2, ... only when split.
  chunked(name, rules, size=20)::
    local n = std.length(rules);
    if n == 0 then []
    else if n <= size then [{ name: name, rules: rules }]
    else [
      { name: name + '-' + (i + 1), rules: rules[i * size:std.min(n, (i + 1) * size)] }
      for i in std.range(0, std.ceil(n / size) - 1)
    ],
}
