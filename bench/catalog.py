"""The catalog at campaign scale: commit rate, claim and status latency, and the hot queries' plans.

    python bench/catalog.py --lines 1000000                 # about 20 s; commits 390 of its 391 queued shards
    python bench/catalog.py --lines 100000000 --keep pisar_bench_100m   # the issue's size; the data
                                                            # stays for reruns (about 25 GB, ~40 min to build)

A campaign of ``--lines`` rows is generated directly in Postgres (``generate_series``): 90% of its
shards done (one line in 1,000 an error), the rest queued, as in the middle of a run. The line
table's secondary indexes are dropped for the load and rebuilt after it, then the table is
vacuumed and analyzed, as autovacuum would leave it. Then, with Pisar's own code:

- ``lines_per_s``: ``--commit-shards`` queued shards (400, or all but one if fewer are queued) claimed and committed (``worker.store``: COPY
  into a stage table, one ``INSERT ... ON CONFLICT``, the shard's counters) by ``--writers``
  processes at once, as workers do; lines committed over wall time;
- ``claim_ms``: median latency of a claim; ``status_ms``: median of ``campaign_status`` (``pisar status``);
- ``plans``: ``EXPLAIN (ANALYZE, BUFFERS)`` of the hot queries (claim, lines to do, commit, status
  counts, retry selectors, export order), each query's time and the scans its plan uses; full plans in ``<out>.plans.txt``.

Issue 8 targets: ≥ 50,000 lines/s committed; status < 1 s at 100 M lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

from bench_paths import REPO  # bench/ is on sys.path when a script here runs
from worker_path import report  # bench/ is on sys.path when a script here runs

CAMPAIGN = "catalog-bench"
CHUNK = 5_000_000  # lines per INSERT while generating: progress, and no giant transaction
ERROR_EVERY = 1000
SECONDARY_INDEXES = {  # as the migrations create them; dropped for the load, rebuilt after
    "ix_line_shard": "CREATE INDEX ix_line_shard ON line (shard_id)",
    "ix_line_campaign_status": "CREATE INDEX ix_line_campaign_status ON line (campaign_id, status)",
    "ix_line_awaiting_retry": "CREATE INDEX ix_line_awaiting_retry ON line (campaign_id) WHERE retry_id IS NOT NULL",
}
UNIQUE = "ALTER TABLE line ADD CONSTRAINT uq_line_campaign_key UNIQUE (campaign_id, key)"
DEFAULT_COMMIT_SHARDS = 400


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument(
        "--commit-shards",
        type=int,
        help="queued shards claimed and committed for lines_per_s (default: 400, or all but one of the queued shards if fewer)",
    )
    parser.add_argument("--writers", type=int, default=2, help="processes committing at once (workers)")
    parser.add_argument("--samples", type=int, default=5, help="timed runs of status and of each plan")
    parser.add_argument("--keep", metavar="DATABASE", help="build into (or reuse) this database and keep it")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench-catalog.json")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def generate(url: str, lines: int, shard_size: int) -> int:
    """The campaign, its shards and lines, built in SQL; returns the campaign id (reused if already built)."""
    from sqlalchemy import insert, select, text

    from pisar.catalog.db import get_engine
    from pisar.catalog.models import Campaign

    engine = get_engine(url)
    with engine.connect() as conn:
        found = conn.execute(select(Campaign.id, Campaign.line_count).where(Campaign.name == CAMPAIGN)).first()
    if found is not None:
        if found.line_count != lines:
            raise SystemExit(f"bench: the kept database holds {found.line_count} lines, not {lines}; use another --keep name")
        log(f"reusing the {lines} generated lines")
        return found.id
    shards = -(-lines // shard_size)
    done_shards = shards * 9 // 10
    with engine.begin() as conn:
        campaign_id = conn.execute(
            insert(Campaign.__table__)
            .values(
                name=CAMPAIGN,
                source_url="s3://archive/fond/",
                model_id="Kansallisarkisto/cyrillic-large-handwritten",
                model_revision="0" * 40,
                dtype="bfloat16",
                generation={},
                preprocessing={},
                confidence_formula="geometric mean of token probabilities",
                versions={},
                queue="bench",
                shard_size=shard_size,
                line_count=lines,
                shard_count=shards,
                skipped_files={},
            )
            .returning(Campaign.__table__.c.id)
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO shard (campaign_id, index, state, line_count, attempts, token, duplicate_deliveries,"
                " queued_at, started_at, finished_at, worker, engine, ok_lines, error_lines)"
                " SELECT :c, s, CASE WHEN s < :done THEN 'done' ELSE 'queued' END,"
                " least(:size, :lines - s * :size), CASE WHEN s < :done THEN 1 ELSE 0 END, CASE WHEN s < :done THEN 1 ELSE 0 END, 0,"
                " now() - interval '2 days', CASE WHEN s < :done THEN now() - interval '1 day' END,"
                " CASE WHEN s < :done THEN now() - interval '1 day' + s * interval '1 millisecond' END,"
                " CASE WHEN s < :done THEN 'gpu-' || (s % 16) || '@node' END, CASE WHEN s < :done THEN 'cuda:bfloat16' END, 0, 0"
                " FROM generate_series(0, :shards - 1) AS s"
            ),
            {"c": campaign_id, "done": done_shards, "size": shard_size, "lines": lines, "shards": shards},
        )
        first_shard = conn.execute(text("SELECT min(id) FROM shard WHERE campaign_id = :c"), {"c": campaign_id}).scalar_one()
        for name in SECONDARY_INDEXES:
            conn.execute(text(f"DROP INDEX {name}"))
        conn.execute(text("ALTER TABLE line DROP CONSTRAINT uq_line_campaign_key"))
    done_lines = min(lines, done_shards * shard_size)
    for start in range(0, lines, CHUNK):
        stop = min(lines, start + CHUNK)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO line (campaign_id, shard_id, key, status, text, confidence, min_token_prob, token_count,"
                    " error_class, error, worker, finished_at, width, height, model)"
                    " SELECT :c, :first + g / :size,"
                    " format('fond/%s/page_%s/line_%s.png', lpad((g / 100000)::text, 4, '0'),"
                    "        lpad((g / 40 % 2500)::text, 4, '0'), lpad(g::text, 9, '0')),"
                    " CASE WHEN g >= :done THEN 'pending' WHEN g % :every = 7 THEN 'error' ELSE 'ok' END,"
                    " CASE WHEN g < :done AND g % :every <> 7 THEN 'Въ лѣто отъ сотворенія міра строка ' || g END,"
                    " CASE WHEN g < :done AND g % :every <> 7 THEN 0.5 + (g * 2654435761 % 1000) / 2000.0 END,"
                    " CASE WHEN g < :done AND g % :every <> 7 THEN 0.2 + (g * 40503 % 1000) / 1250.0 END,"
                    " CASE WHEN g < :done AND g % :every <> 7 THEN 40 END,"
                    " CASE WHEN g < :done AND g % :every = 7 THEN 'UnreadableImage' END,"
                    " CASE WHEN g < :done AND g % :every = 7 THEN 'image file is truncated' END,"
                    " CASE WHEN g < :done THEN 'gpu-' || (g / :size % 16) || '@node' END,"
                    " CASE WHEN g < :done THEN now() - interval '1 day' END,"
                    " CASE WHEN g < :done THEN 1800 END, CASE WHEN g < :done THEN 120 END,"
                    " CASE WHEN g < :done THEN 'Kansallisarkisto/cyrillic-large-handwritten@main' END"
                    " FROM generate_series(CAST(:start AS bigint), CAST(:stop AS bigint) - 1) AS g"
                ),
                {"c": campaign_id, "first": first_shard, "size": shard_size, "done": done_lines, "every": ERROR_EVERY}
                | {"start": start, "stop": stop},
            )
        log(f"generated {stop:,} of {lines:,} lines")
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("SET maintenance_work_mem = '1GB'"))
        for statement in (UNIQUE, *SECONDARY_INDEXES.values()):
            started = time.perf_counter()
            conn.execute(text(statement))
            log(f"{statement.split(' ON ')[0]}: {time.perf_counter() - started:.0f} s")
        conn.execute(
            text(
                "UPDATE shard SET ok_lines = c.ok, error_lines = c.error FROM"
                " (SELECT shard_id, count(*) FILTER (WHERE status = 'ok') AS ok, count(*) FILTER (WHERE status = 'error') AS error"
                "  FROM line WHERE campaign_id = :c GROUP BY shard_id) AS c WHERE shard.id = c.shard_id"
            ),
            {"c": campaign_id},
        )
        conn.execute(text("VACUUM ANALYZE line"))
        conn.execute(text("VACUUM ANALYZE shard"))
    log("indexes rebuilt, counters set, vacuumed and analyzed")
    return campaign_id


def queued_shards(url: str, campaign_id: int, count: int) -> list[int]:
    from sqlalchemy import text

    from pisar.catalog.db import get_engine

    with get_engine(url).connect() as conn:
        rows = conn.execute(
            text("SELECT id FROM shard WHERE campaign_id = :c AND state = 'queued' ORDER BY index LIMIT :n"), {"c": campaign_id, "n": count}
        )
        return [r.id for r in rows]


def commit_shards(url: str, shard_ids: list[int]) -> tuple[list[float], list[float], int]:
    """One writer: claim each shard, read its lines to do, commit a result for each; claim and commit seconds."""
    from pisar.catalog import shards
    from pisar.catalog.bulk import LineResult
    from pisar.catalog.models import utcnow

    claims, commits, lines = [], [], 0
    for shard_id in shard_ids:
        started = time.perf_counter()
        held = shards.claim(url, shard_id, "bench-writer", lease_seconds=300, max_attempts=5)
        claims.append(time.perf_counter() - started)
        if isinstance(held, shards.Skipped):
            raise SystemExit(f"bench: shard {shard_id} could not be claimed")
        keys = shards.lines_to_do(url, shard_id)
        now = utcnow()
        results = [
            LineResult(
                key=key,
                status="ok",
                worker="bench-writer",
                finished_at=now,
                text=f"Въ лѣто отъ сотворенія міра {i}",
                confidence=0.97,
                min_token_prob=0.61,
                token_count=40,
                width=1800,
                height=120,
            )
            for i, key in enumerate(keys)
        ]
        started = time.perf_counter()
        if not shards.finish(url, held, results, shards.RunFacts("cuda:bfloat16", 0.1, 1.0)):
            raise SystemExit(f"bench: the commit of shard {shard_id} lost its lease")
        commits.append(time.perf_counter() - started)
        lines += len(results)
    return claims, commits, lines


def hot_queries(campaign_id: int, shard_id: int, queued_shard: int) -> dict[str, str]:
    """The catalog's hot statements, built by the code that runs them, compiled to SQL for EXPLAIN."""
    from sqlalchemy import func, select
    from sqlalchemy.dialects import postgresql

    from pisar.catalog.models import Line, utcnow
    from pisar.catalog.shards import claim_statement, count_lines_statement, lines_to_do_statement
    from pisar.producer.campaigns import line_counts_statement
    from pisar.producer.export import ExportFilter, export_statement
    from pisar.producer.retry import RetrySelector
    from pisar.producer.status import awaiting_retry_statement, error_classes_statement, shard_states_statement

    line = Line.__table__

    def sql(statement: Any) -> str:
        return str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))

    queries = {
        "claim": sql(claim_statement(queued_shard, "bench", 300, 3, utcnow())),
        "lines_to_do": sql(lines_to_do_statement(queued_shard)),
        "shard_counters": sql(count_lines_statement(shard_id)),
        "status_line_counts": sql(line_counts_statement(campaign_id)),
        "status_shard_states": sql(shard_states_statement(campaign_id)),
        "status_error_classes": sql(error_classes_statement(campaign_id)),
        "status_awaiting_retry": sql(awaiting_retry_statement(campaign_id)),
        "export_first_page": sql(export_statement(campaign_id, ExportFilter()).limit(2000)),
    }
    for name, selector in (
        ("retry_errors", RetrySelector(errors=("UnreadableImage",))),
        ("retry_below_confidence", RetrySelector(below_confidence=0.52)),
        ("retry_flag", RetrySelector(flags=("repetition",))),
        ("retry_failed_shards", RetrySelector(failed=True)),
    ):
        (condition,) = selector.reasons(campaign_id).values()
        queries[name] = sql(select(func.count()).select_from(line).where(condition))
    return queries


def explain(url: str, queries: dict[str, str], samples: int) -> tuple[dict[str, Any], str]:
    """Median execution time and the scans of each query (writes rolled back); all plans as text."""
    from sqlalchemy import text

    from pisar.catalog.db import get_engine

    figures, plans = {}, []
    with get_engine(url).connect() as conn:
        for name, query in queries.items():
            times, plan = [], []
            for _ in range(samples):
                with conn.begin() as transaction:
                    plan = [r[0] for r in conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {query}"))]
                    transaction.rollback()
                times.append(float(next(p for p in plan if p.startswith("Execution Time")).split(":")[1].split()[0]))
            scans = [p.strip().removeprefix("->  ").split("  (")[0] for p in plan if "Scan" in p and "(cost=" in p]
            figures[name] = {"ms": round(statistics.median(times), 2), "scans": "; ".join(dict.fromkeys(scans))}
            plans.append(f"== {name} ({statistics.median(times):.2f} ms, median of {samples})\n{query}\n\n" + "\n".join(plan) + "\n")
    return figures, "\n".join(plans)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    from infra.local_services import ensure_postgres, throwaway_database

    with throwaway_database(ensure_postgres(), "pisar_bench", keep=args.keep) as url:
        from pisar.catalog.db import dispose_engines, get_engine
        from pisar.catalog.models import Campaign
        from pisar.producer.status import campaign_status

        started = time.perf_counter()
        campaign_id = generate(url, args.lines, args.shard_size)
        generate_s = time.perf_counter() - started

        wanted = args.commit_shards or DEFAULT_COMMIT_SHARDS
        shard_ids = queued_shards(url, campaign_id, wanted + 1)[:-1]  # one stays queued: the claim's plan needs it
        if not shard_ids or (args.commit_shards and len(shard_ids) < args.commit_shards):
            left = len(shard_ids) + 1 if shard_ids else len(queued_shards(url, campaign_id, 1))
            raise SystemExit(
                f"bench: --commit-shards {wanted} needs {wanted + 1} queued shards; the database holds {left}"
                " (a tenth of --lines / --shard-size is queued; a --keep database loses what each run commits)"
            )
        dispose_engines()  # the writers are new processes: no pooled connection crosses a fork
        per_writer = [shard_ids[i :: args.writers] for i in range(args.writers)]
        started = time.perf_counter()
        with Pool(args.writers) as pool:
            outcomes = pool.starmap(commit_shards, [(url, ids) for ids in per_writer])
        commit_wall_s = time.perf_counter() - started
        claims = [c for outcome in outcomes for c in outcome[0]]
        commits = [c for outcome in outcomes for c in outcome[1]]
        committed = sum(outcome[2] for outcome in outcomes)

        with get_engine(url).connect() as conn:
            campaign = conn.execute(Campaign.__table__.select().where(Campaign.__table__.c.id == campaign_id)).one()
            size = dict(
                conn.exec_driver_sql(
                    "SELECT 'line_table_gb', round(pg_total_relation_size('line') / 1e9, 2)"
                    " UNION ALL SELECT 'database_gb', round(pg_database_size(current_database()) / 1e9, 2)"
                ).all()
            )
        status_times = []
        for _ in range(args.samples):
            started = time.perf_counter()
            status = campaign_status(url, Campaign.model_validate(campaign._asdict()))
            status_times.append(time.perf_counter() - started)
        done_shard = shard_ids[0]
        plans, plan_text = explain(url, hot_queries(campaign_id, done_shard, queued_shards(url, campaign_id, 1)[0]), args.samples)

    figures = {
        "lines": args.lines,
        "shard_size": args.shard_size,
        "writers": args.writers,
        "commit_shards": len(shard_ids),
        "lines_committed": committed,
        "lines_per_s": round(committed / commit_wall_s, 1),
        "commit_ms_per_shard": round(1000 * statistics.median(commits), 2),
        "claim_ms": round(1000 * statistics.median(claims), 2),
        "status_ms": round(1000 * statistics.median(status_times), 1),
        "status_lines": status.lines,
        "generate_seconds": round(generate_s, 1),
        **{k: float(v) for k, v in size.items()},
        "plans": plans,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".plans.txt").write_text(plan_text)
    report(figures, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
