"""What every collector module shares: the options, the per-scrape context and the collector contract."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import psycopg
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from sloguard.pginsight import queries


@dataclass(frozen=True)
class ExporterOptions:
    statements_top_n: int = 100
    query_text: bool = False             # off by default: query text can carry business data
    query_text_length: int = 120
    tables_top_n: int = 500
    migrations_table: str = "schema_migrations"
    hypopg: bool = True
    missing_index_statements: int = 10   # how many of the slowest statements the advisor looks at
    missing_index_recheck_seconds: float = 300.0
    missing_index_per_scrape: int = 5    # new EXPLAIN evaluations per scrape, so one scrape stays short
    missing_index_budget_seconds: float = 0.5   # advisor wall time per scrape; what is left waits for the next
    missing_index_min_mean_ms: float = 10.0
    missing_index_min_calls: int = 10
    min_table_rows: int = 10_000


@dataclass
class ScrapeContext:
    """One scrape: the connection (lock held), what the role may see, and results collectors pass along."""
    conn: psycopg.Connection
    caps: queries.Capabilities
    options: ExporterOptions
    top_statements: list[queries.StatementStat] | None = None
    # where statement texts come from; None: this connection's database (pg_stat_statements created in it). The
    # multi-database layer reads them through the DSN's connection, so other databases need no extension for it.
    statement_texts: Callable[[list[int]], dict[int, str]] | None = None
    notes: dict[str, object] = field(default_factory=dict)
    # (collector, object, age seconds): values served from an earlier read because this scrape could not read them
    last_known: list[tuple[str, str, float]] = field(default_factory=list)
    # collector -> message: it served what it could, but an operator must fix something (collector_success 0)
    degraded: dict[str, str] = field(default_factory=dict)

    def served_last_known(self, collector: str, obj: str, age_seconds: float) -> None:
        self.last_known.append((collector, obj, age_seconds))

    def degrade(self, collector: str, message: str) -> None:
        self.degraded.setdefault(collector, message)

    def texts_of(self, queryids: list[int]) -> dict[int, str]:
        if self.statement_texts is not None:
            return self.statement_texts(queryids)
        return queries.statement_texts(self.conn, queryids)


class SubCollector(Protocol):
    name: str   # one of sloguard.names.COLLECTORS, the {collector} label

    def collect(self, ctx: ScrapeContext) -> list[Metric]:
        """Build complete metric families (nothing is yielded before all queries succeeded)."""
        ...


def add_rows(families: list, rows) -> None:
    """Append samples for many label sets at once: rows = [(labels_dict, (value per family, ...)), ...].

    Same samples as Family.add_metric, but one labels dict is shared by all families of a row; with 2,000 tables
    x 5 families the per-call zip/dict of add_metric was a third of a scrape.
    """
    targets = [(fam.samples, fam.name + "_total" if fam.type == "counter" else fam.name) for fam in families]
    for labels, values in rows:
        for (samples, name), value in zip(targets, values, strict=True):
            samples.append(Sample(name, labels, value, None, None))
