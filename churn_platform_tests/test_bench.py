"""The benchmark runs end to end at a tiny size: every approach, its table and its JSON.

Not a timed test: it checks that each approach ran, did the whole work (every source row
accounted for) and was reported, never how fast.
"""

import json

from churn_platform_bench.cli import main


def test_smoke_run_prints_the_table_and_writes_json(tmp_path, capsys):
    code = main(["--smoke", "--data-dir", str(tmp_path / "data"),
                 "--results-dir", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 0, out

    for approach in ("platform", "floor", "original", "model", "rescore"):
        assert f"2,000  {approach}" in out
    assert "platform/floor" in out and "original/platform" in out
    assert "headless `dagster job execute` of churn_elt_job, 1,000 rows" in out

    [path] = (tmp_path / "results").glob("bench-*.json")
    report = json.loads(path.read_text())
    assert [(r["rows"], r["approach"]) for r in report["results"]] == [
        (2000, "platform"), (2000, "floor"), (2000, "original"), (2000, "model"),
        (2000, "rescore")]
    for result in [*report["results"], report["headless"]]:
        assert result["ok"], result
        [run] = result["runs"]
        assert run["status"] == "ok" and run["wall_s"] > 0 and run["peak_rss_bytes"] > 0
        assert result["rows_per_s"] == round(result["rows"] / result["median_wall_s"])
    assert {r["ratio"] for r in report["ratios"]} == {
        "platform/floor", "original/platform", "model/platform", "rescore/platform"}
    [csv] = (tmp_path / "data").glob("customer_churn_2000_seed42_*.csv")
    assert csv.read_text().count("\n") == 2001  # the header and every generated row
