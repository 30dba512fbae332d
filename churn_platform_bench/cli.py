"""`python -m churn_platform_bench`: generate the CSVs, measure every approach, print and save.

Examples:
    python -m churn_platform_bench                      # 100k, 1M, 5M rows; 3 repeats
    python -m churn_platform_bench --smoke              # 2,000 rows, 1 repeat (what CI runs)
    python -m churn_platform_bench --sizes 20000000 --approaches platform,floor \\
        --repeats 1 --memory-limit 3GB --no-headless
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from churn_platform import sample_data
from churn_platform.core import settings
from churn_platform.core.settings import PROJECT_ROOT
from churn_platform_bench import report
from churn_platform_bench.approaches import APPROACHES, prepare
from churn_platform_bench.measure import measure

DEFAULT_SIZES = (100_000, 1_000_000, 5_000_000)
SMOKE_ROWS = 2_000
HEADLESS_ROWS = 1_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m churn_platform_bench",
                                     description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated row counts (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; median")
    parser.add_argument("--approaches", default=",".join(APPROACHES),
                        help="comma-separated subset of %(default)s")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE_ROWS:,} rows, 1 repeat, 1 headless run: a quick check")
    parser.add_argument("--no-headless", action="store_true",
                        help=f"skip the {HEADLESS_ROWS:,}-row headless CLI run")
    parser.add_argument("--memory-limit", help="CHURN_DUCKDB_MEMORY_LIMIT for the platform and the"
                        " floor (default: the platform's own, 1GB unless the variable is set)")
    parser.add_argument("--threads", help="CHURN_DUCKDB_THREADS for the DuckDB runs")
    parser.add_argument("--timeout", type=float, help="seconds before a run is killed")
    parser.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / "bench" / "data",
                        help="where CSVs are generated and runs write (default %(default)s)")
    parser.add_argument("--results-dir", type=Path, default=PROJECT_ROOT / "bench" / "results",
                        help="where the JSON report goes (default %(default)s)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.repeats = str(SMOKE_ROWS), 1
    args.sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    args.approaches = [a for a in args.approaches.split(",") if a]
    unknown = set(args.approaches) - set(APPROACHES)
    if unknown or not args.approaches:
        parser.error(f"--approaches: choose from {', '.join(APPROACHES)}")
    if args.repeats < 1 or any(s < 1 for s in args.sizes):
        parser.error("--repeats and --sizes must be positive")
    return args


def source_csv(data_dir: Path, rows: int, seed: int) -> Path:
    """The generator's file for this size and seed; reused while the generator is unchanged
    (same code, same seed: same bytes), so the name carries a digest of the generator's source."""
    generator = hashlib.sha256(Path(sample_data.__file__).read_bytes()).hexdigest()[:8]
    path = data_dir / f"customer_churn_{rows}_seed{seed}_{generator}.csv"
    if not path.exists():
        print(f"generating {rows:,} rows -> {path}", file=sys.stderr)
        partial = sample_data.write_sample(path.with_suffix(".partial"), rows, seed)
        partial.rename(path)
    return path


def prepare_dagster_home(path: Path) -> Path:
    """An instance like the project's local one, created before timing (storage set up once)."""
    from dagster import DagsterInstance

    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", path / "dagster.yaml")
    DagsterInstance.from_config(str(path)).dispose()
    return path


def measure_once(rows: int, approach: str, csv: Path, work: Path, home: Path,
                 duckdb_settings: dict, timeout_s: float | None) -> dict:
    """One run of one approach in a fresh process and a fresh run folder, then checked."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{approach}-{rows}-", dir=work))
    prepared = prepare(approach, csv, run_dir, home, duckdb_settings)
    result = measure(prepared.command, prepared.env, str(run_dir / "run.log"), timeout_s)
    run = {"wall_s": round(result.wall_s, 3), "peak_rss_bytes": result.peak_rss_bytes,
           "status": result.status}
    if result.status == "ok":
        accounted = prepared.output_rows()
        if accounted != rows:
            run["status"] = f"wrong output: {accounted:,} of {rows:,} rows accounted for"
    if run["status"] != "ok":
        run["log_tail"] = result.output_tail
    print(f"  {rows:>12,} {approach:<9} {run['wall_s']:8.2f} s"
          f" {run['peak_rss_bytes'] / report.MIB:8,.0f} MiB  {run['status']}", file=sys.stderr)
    shutil.rmtree(run_dir, ignore_errors=True)
    return run


def measure_size(args, rows: int, approaches: list[str], csv: Path, work: Path, home: Path,
                 duckdb_settings: dict) -> list[dict]:
    """Every approach once per round, rounds repeated: a change in machine load during the
    measurement then falls on all approaches alike instead of on whichever ran last."""
    runs = {approach: [] for approach in approaches}
    for _ in range(args.repeats):
        for approach in approaches:
            runs[approach].append(measure_once(rows, approach, csv, work, home,
                                               duckdb_settings, args.timeout))
    return [report.summarize(rows, approach, runs[approach]) for approach in approaches]


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    # The platform's memory limit, given to the floor too (it does not read the platform's default).
    duckdb_settings = {"CHURN_DUCKDB_MEMORY_LIMIT": args.memory_limit
                       or os.environ.get("CHURN_DUCKDB_MEMORY_LIMIT")
                       or settings.DEFAULT_DUCKDB_MEMORY_LIMIT}
    if args.threads:
        duckdb_settings["CHURN_DUCKDB_THREADS"] = args.threads
    csvs = {rows: source_csv(args.data_dir, rows, args.seed) for rows in args.sizes}
    headless_csv = None if args.no_headless else source_csv(args.data_dir, HEADLESS_ROWS, args.seed)
    info = machine()
    started = datetime.now(timezone.utc)
    results, headless = [], None
    with tempfile.TemporaryDirectory(prefix="runs-", dir=args.data_dir) as work:
        work = Path(work)
        home = prepare_dagster_home(work / "dagster_home")
        if headless_csv:
            [headless] = measure_size(args, HEADLESS_ROWS, ["platform"], headless_csv, work,
                                      home, duckdb_settings)
        for rows in args.sizes:
            results += measure_size(args, rows, args.approaches, csvs[rows], work, home,
                                    duckdb_settings)
    info["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out = {
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started.timestamp(), 1),
        "machine": info,
        "settings": {"sizes": args.sizes, "repeats": args.repeats, "seed": args.seed,
                     "approaches": args.approaches, "duckdb": duckdb_settings,
                     "timeout_s": args.timeout},
        "headless": headless,
        "results": results,
        "ratios": report.ratios(results),
    }
    print(report.table(out))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"bench-{started:%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nresults: {path}")
    failed = [r for r in [*results, headless] if r and not r["ok"]]
    return 1 if failed else 0
