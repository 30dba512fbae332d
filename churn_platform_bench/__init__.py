"""The benchmark: the platform beside plain DuckDB (the floor) and the original pandas pipeline.

Run it with `python -m churn_platform_bench --help`. Every measurement runs in a fresh child
process, so start-up and imports are counted and peak memory is that measurement's alone.
"""
