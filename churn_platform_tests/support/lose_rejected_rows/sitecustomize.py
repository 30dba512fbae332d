"""Test-only, on PYTHONPATH of a test's Dagster processes: while the file named by
CHURN_TEST_LOSE_REJECTED_ROWS exists, the rejected-rows candidate comes out empty (a transform
bug that the blocking parity check must catch), in whichever process runs the step."""

import os

_FLAG = os.environ.get("CHURN_TEST_LOSE_REJECTED_ROWS")

if _FLAG:
    from churn_platform.defs.elt import assets

    _real = assets.rejected_sql

    def _rejected_sql(*args):
        sql = _real(*args)
        return f"SELECT * FROM ({sql}) WHERE false" if os.path.exists(_FLAG) else sql

    assets.rejected_sql = _rejected_sql
