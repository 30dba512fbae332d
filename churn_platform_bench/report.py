"""Medians, ratios against the targets, and the printed table."""

import statistics

MIB = 1024 * 1024

# (ratio name, numerator, denominator, at rows, limit): from the performance issue.
TARGETS = (
    ("platform/floor", "platform", "floor", 5_000_000, 1.25),
    ("platform/floor", "platform", "floor", 1_000_000, 1.5),
)
MIN_SPEEDUP_VS_ORIGINAL = (5_000_000, 5.0, 4.0)  # rows, time, memory
# The churn model against the ELT at the same size (issue 15): (ratio, time limit, RSS limit).
MODEL_TARGETS = {"model/platform": (0.5, 1.25), "rescore/platform": (1.15, 1.25)}
MODEL_TARGET_ROWS = 5_000_000
HEADLESS_LIMIT_S = 4.0
PEAK_RSS_LIMIT_BYTES = 4 * 1024**3  # at 20M rows and above


def summarize(rows: int, approach: str, runs: list[dict]) -> dict:
    ok = [r for r in runs if r["status"] == "ok"]
    summary = {"rows": rows, "approach": approach, "runs": runs, "ok": len(ok) == len(runs)}
    if ok:
        wall = statistics.median(r["wall_s"] for r in ok)
        summary.update(
            median_wall_s=round(wall, 3),
            median_peak_rss_bytes=int(statistics.median(r["peak_rss_bytes"] for r in ok)),
            rows_per_s=round(rows / wall),
        )
    return summary


def ratios(results: list[dict]) -> list[dict]:
    """platform/floor and original/platform at every size where both sides finished."""
    by_key = {(r["rows"], r["approach"]): r for r in results if "median_wall_s" in r}
    out = []
    for rows in sorted({r["rows"] for r in results}):
        for name, top, bottom in (("platform/floor", "platform", "floor"),
                                  ("original/platform", "original", "platform"),
                                  ("model/platform", "model", "platform"),
                                  ("rescore/platform", "rescore", "platform")):
            a, b = by_key.get((rows, top)), by_key.get((rows, bottom))
            if not (a and b):
                continue
            ratio = {
                "rows": rows, "ratio": name,
                "wall": round(a["median_wall_s"] / b["median_wall_s"], 2),
                "peak_rss": round(a["median_peak_rss_bytes"] / b["median_peak_rss_bytes"], 2),
            }
            ratio["target"], ratio["met"] = _target(ratio)
            out.append(ratio)
    return out


def _target(ratio: dict) -> tuple[str | None, bool | None]:
    rows = ratio["rows"]
    if ratio["ratio"] in MODEL_TARGETS:
        if rows != MODEL_TARGET_ROWS:
            return None, None
        time_x, rss_x = MODEL_TARGETS[ratio["ratio"]]
        return (f"<= {time_x}x time, <= {rss_x}x RSS",
                ratio["wall"] <= time_x and ratio["peak_rss"] <= rss_x)
    if ratio["ratio"] == "platform/floor":
        for _, _, _, at, limit in TARGETS:
            if rows == at:
                met = ratio["wall"] <= limit and ratio["peak_rss"] <= limit
                return f"<= {limit}x time and RSS", met
    elif rows == MIN_SPEEDUP_VS_ORIGINAL[0]:
        _, time_x, memory_x = MIN_SPEEDUP_VS_ORIGINAL
        met = ratio["wall"] >= time_x and ratio["peak_rss"] >= memory_x
        return f">= {time_x}x time, >= {memory_x}x RSS", met
    return None, None


def _runs(summary: dict) -> str:
    return " ".join(f"{r['wall_s']:.2f}" if r["status"] == "ok" else r["status"]
                    for r in summary["runs"])


def table(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"churn_platform benchmark: {machine['cpus']} CPUs, {machine['memory_gib']} GiB,"
        f" load average {machine['load_before']} before / {machine['load_after']} after;"
        f" median of {report['settings']['repeats']} run(s), each in a fresh process;"
        f" DuckDB settings {report['settings']['duckdb'] or 'default'}",
        "",
        f"{'rows':>12}  {'approach':<10} {'wall s':>8} {'peak RSS MiB':>13} {'rows/s':>11}  runs (wall s)",
    ]
    for r in report["results"]:
        if "median_wall_s" in r:
            lines.append(
                f"{r['rows']:>12,}  {r['approach']:<10} {r['median_wall_s']:>8.2f}"
                f" {r['median_peak_rss_bytes'] / MIB:>13,.0f} {r['rows_per_s']:>11,}  {_runs(r)}")
        else:
            lines.append(f"{r['rows']:>12,}  {r['approach']:<10} {'-':>8} {'-':>13} {'-':>11}"
                         f"  {_runs(r)}")
    if report["ratios"]:
        lines += ["", f"{'rows':>12}  {'ratio':<18} {'time':>7} {'RSS':>7}  target"]
        for q in report["ratios"]:
            verdict = "" if q["target"] is None else f"{q['target']}: {'met' if q['met'] else 'MISSED'}"
            lines.append(f"{q['rows']:>12,}  {q['ratio']:<18} {q['wall']:>6.2f}x {q['peak_rss']:>6.2f}x"
                         f"  {verdict}")
    for r in report["results"]:
        if r["approach"] == "platform" and r["rows"] >= 20_000_000 and "median_wall_s" in r:
            met = r["median_peak_rss_bytes"] <= PEAK_RSS_LIMIT_BYTES
            lines.append(f"{r['rows']:>12,}  platform peak RSS <= 4 GiB: {'met' if met else 'MISSED'}")
    headless = report.get("headless")
    if headless:
        if "median_wall_s" in headless:
            met = headless["median_wall_s"] <= HEADLESS_LIMIT_S
            lines.append(
                f"\nheadless `dagster job execute` of churn_elt_job, {headless['rows']:,} rows:"
                f" {headless['median_wall_s']:.2f} s median ({_runs(headless)}),"
                f" {headless['median_peak_rss_bytes'] / MIB:,.0f} MiB;"
                f" target <= {HEADLESS_LIMIT_S:g} s: {'met' if met else 'MISSED'}")
        else:
            lines.append(f"\nheadless run, {headless['rows']:,} rows: {_runs(headless)}")
    return "\n".join(lines)
