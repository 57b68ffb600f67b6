"""`make bench` (second part): samples one SLO's period ratio reads per evaluation, former rules vs current ones.

Real Prometheus 2.42 (Debian's `prometheus`), started here on 127.0.0.1 on a throwaway TSDB backfilled with
`promtool tsdb create-blocks-from openmetrics`: 30 days of an API (3 instances; requests by code, and the
latency histogram's _count and threshold bucket) scraped every --scrape-seconds, plus the 5m increases the current
period group records (computed from the same counters, as the rule would have recorded them).

Each expression is run once through the query API with `stats=all`; `totalQueryableSamples` is the number of samples
the engine read. Former: the period ratio `sum(increase(x[30d]))` over raw samples, evaluated at every rule
evaluation. Current: the period group (5m increases, then sum_over_time of them over 30d), evaluated every 5m.
Both sides run in the same Prometheus, same data, same run; the report is their ratio.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import requests

from sloguard.pgcluster import free_port
from sloguard.rules.groups import build_groups
from sloguard.rules.slo_recording import PERIOD_STEP
from sloguard.spec import parse_spec

DAY = 86400
STEP_S = 300
INSTANCES = ("api-1", "api-2", "api-3")
SPEC = """\
service: bench
links: {runbook: "https://example.org/rb.md", grafana: "http://localhost:3000"}
slos:
  - name: availability
    objective: 99.9
    window: 30d
    sli: {events: {total: 'http_requests_total{job="api"}', errors: 'http_requests_total{job="api",code=~"5.."}'}}
  - name: latency
    objective: 99
    window: 30d
    sli: {latency: {metric: 'http_request_duration_seconds{job="api"}', threshold: 0.5}}
database:
  latency_p99: {metric: 'http_request_duration_seconds{job="api"}'}
  pool: {in_use: 'pool_in_use{job="api"}', max: 'pool_max{job="api"}', waiting: 'pool_waiting{job="api"}'}
"""
# The former period ratios (sloguard before issue 10): increase over the whole period, from raw samples.
FORMER = {
    "availability": ('(sum(increase(http_requests_total{job="api",code=~"5.."}[30d])) or vector(0))\n/\n'
                     'sum(increase(http_requests_total{job="api"}[30d]))'),
    "latency": ('1 - (sum(increase(http_request_duration_seconds_bucket{job="api",le=~"0?[.]50*"}[30d]))\n/\n'
                'sum(increase(http_request_duration_seconds_count{job="api"}[30d])))'),
}
# per-minute traffic of one instance: requests, errors (0.1%), requests under the threshold (99.5%)
PER_MIN = (600, 0.6, 597)


def write_openmetrics(path: str, end: int, days: int, scrape_s: int, recorded: dict[str, dict[str, str]]) -> int:
    """Raw counters at every scrape, and the recorded 5m increases at every 5m step. Returns samples written."""
    start = end - days * DAY
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        def family(name: str, rows):
            nonlocal n
            fh.write(f"# TYPE {name} gauge\n" if ":" in name else f"# TYPE {name} counter\n")
            for labels, step, per_step in rows:
                value = 0.0
                for t in range(start, end + 1, step):
                    fh.write(f"{name}{{{labels}}} {value:.6g} {t}\n")
                    value += per_step
                    n += 1
        per_scrape = [x * scrape_s / 60 for x in PER_MIN]
        base = 'job="api",instance="{i}"'
        family("http_requests_total", [(base.format(i=i) + f',code="{code}"', scrape_s, v) for i in INSTANCES
                                       for code, v in (("200", per_scrape[0] - per_scrape[1]), ("500", per_scrape[1]))])
        family("http_request_duration_seconds_count", [(base.format(i=i), scrape_s, per_scrape[0]) for i in INSTANCES])
        family("http_request_duration_seconds_bucket", [(base.format(i=i) + ',le="0.5"', scrape_s, per_scrape[2])
                                                        for i in INSTANCES])
        # recorded increases are gauges whose value is the same every step (steady traffic): write them flat
        for name, by_slo in recorded.items():
            fh.write(f"# TYPE {name.replace(':', '_')} gauge\n")
            for labels, value in by_slo.items():
                for t in range(start, end + 1, STEP_S):
                    fh.write(f"{name}{{{labels}}} {value} {t}\n")
                    n += 1
        fh.write("# EOF\n")
    return n


def query_samples(base: str, expr: str, at: int) -> int:
    r = requests.get(f"{base}/api/v1/query", params={"query": expr, "time": at, "stats": "all"}, timeout=120)
    r.raise_for_status()
    body = r.json()
    if body["status"] != "success" or not body["data"]["result"]:
        raise RuntimeError(f"query returned nothing: {expr}\n{body}")
    return int(body["data"]["stats"]["samples"]["totalQueryableSamples"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="days of history (the SLO window is 30d)")
    parser.add_argument("--scrape-seconds", type=int, default=60, help="scrape interval of the synthetic data")
    parser.add_argument("--eval-seconds", type=int, default=60, help="rule evaluation interval the former rules ran at")
    args = parser.parse_args(argv)
    for exe in ("prometheus", "promtool"):
        if not shutil.which(exe):
            print(f"error: {exe} not found: run `bash scripts/setup-system.sh` (Debian package prometheus)",
                  file=sys.stderr)
            return 2

    spec = parse_spec(SPEC, "bench spec")
    groups, _ = build_groups(spec)
    period = {g["name"].split("-")[3]: g["rules"] for g in groups if g["name"].endswith("-period")}
    end = (int(time.time()) // 3600 - 2) * 3600
    recorded: dict[str, dict[str, str]] = {}
    for slo_name, rules in period.items():
        for rule in rules[:2]:   # the two increases; their value for steady traffic over 5m, all instances
            labels = ",".join(f'{k}="{v}"' for k, v in rule["labels"].items())
            requests_5m = PER_MIN[0] * 5 * len(INSTANCES)
            bad = PER_MIN[1] if slo_name == "availability" else PER_MIN[0] - PER_MIN[2]
            value = requests_5m if "requests" in rule["record"] else bad * 5 * len(INSTANCES)
            recorded.setdefault(rule["record"], {})[labels] = f"{value:g}"

    tmp = tempfile.mkdtemp(prefix="sloguard-evalcost-")
    proc, log = None, None
    try:
        om = os.path.join(tmp, "data.om")
        written = write_openmetrics(om, end, args.days, args.scrape_seconds, recorded)
        data = os.path.join(tmp, "tsdb")
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om, data],
                       check=True, capture_output=True, timeout=1800)
        os.unlink(om)
        port = free_port()
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w", encoding="utf-8") as fh:
            fh.write("global: {evaluation_interval: 1m}\n")
        log = open(os.path.join(tmp, "prometheus.log"), "w")  # noqa: SIM115 - closed in finally, outlives this block
        proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=400d"],
                                stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{base}/-/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not become ready; log: {log.name}")
            time.sleep(0.5)

        step_s = int(PERIOD_STEP.rstrip("m")) * 60
        per_hour_former, per_hour_current = 3600 / args.eval_seconds, 3600 / step_s
        print(f"Period ratio evaluation cost, Prometheus 2.42 query stats (totalQueryableSamples), {args.days} days "
              f"of data at a {args.scrape_seconds} s scrape, {len(INSTANCES)} instances ({written:,} samples "
              "backfilled)")
        print(f"{'SLO':<14}{'former/eval':>13}{'current/eval':>14}{'ratio':>9}"
              f"{'former/hour':>14}{'current/hour':>14}{'ratio':>9}")
        for slo_name, rules in period.items():
            former = query_samples(base, FORMER[slo_name], end)
            current = sum(query_samples(base, r["expr"], end) for r in rules[:3])   # increases + the ratio
            fh, ch = former * per_hour_former, current * per_hour_current
            print(f"{slo_name:<14}{former:>13,}{current:>14,}{former / current:>8.1f}x"
                  f"{fh:>14,.0f}{ch:>14,.0f}{fh / ch:>8.1f}x")
        print(f"former: evaluated every {args.eval_seconds} s, reads every raw sample of the period; current: the "
              f"period group every {step_s} s, reads {PERIOD_STEP} of raw samples and the recorded increases. "
              "Raw samples scale with the scrape rate (15 s: 4x the former figures); recorded ones do not.")
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if log is not None:
            log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
