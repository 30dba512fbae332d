"""dagster-duckdb-pandas' type handler, sampled: the model's training frame (issue 15).

Imported only by TrainingFrameIOManager (defs/warehouse_io.py) when a training step builds it,
since pandas costs every process that imports it 0.5 s and 50 MiB. It lives outside defs/
because the code location imports every module there.
"""

import dagster as dg
import pandas as pd
from dagster._core.storage.db_io_manager import TableSlice
from dagster_duckdb_pandas import DuckDBPandasTypeHandler

from churn_platform.core.churn_model_sql import stratified_sample_sql
from churn_platform.core.warehouse import quote_ident
from churn_platform.defs.failures import require_input


class SampledPandasTypeHandler(DuckDBPandasTypeHandler):
    """dagster-duckdb-pandas' handler, for reading frames only (model training).

    An input whose metadata holds `sample_rows` gets a reproducible stratified sample of that
    many rows (stratified_sample_sql) of its `columns` only, so a 5M-row table is never loaded
    whole and no column the asset did not ask for (the customer id) reaches pandas. Writing a
    frame is refused: the stock write is not atomic (DELETE, then INSERT); return a SqlTable.
    """

    def load_input(self, context: dg.InputContext, table_slice: TableSlice,
                   connection) -> pd.DataFrame:
        rows = (context.definition_metadata or {}).get("sample_rows")
        if rows is None:
            return super().load_input(context, table_slice, connection)
        relation = f"{quote_ident(table_slice.schema)}.{quote_ident(table_slice.table)}"
        require_input(context, connection, relation, f"{table_slice.schema}.{table_slice.table}")
        if not table_slice.columns:
            raise dg.Failure(f"a sample of {relation} needs the input's `columns` metadata",
                             allow_retries=False)
        present = {row[0] for row in connection.execute(f"DESCRIBE {relation}").fetchall()}
        columns = [c for c in table_slice.columns if c in present]
        return connection.execute(stratified_sample_sql(relation, int(rows), columns)).fetchdf()

    def handle_output(self, context, table_slice, obj, connection):
        raise dg.Failure(
            f"{table_slice.schema}.{table_slice.table}: the warehouse does not take DataFrames"
            " (its write is not atomic); return a SqlTable", allow_retries=False)
