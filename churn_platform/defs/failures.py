"""Where core errors become Dagster failures: bad input fails once, transient faults retry, and a
terminated run ends terminated."""

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import duckdb

from churn_platform.core.errors import PlatformError


def _interrupted(error: Exception) -> bool:
    """DuckDB's word for a statement stopped by a signal (SIGTERM from Terminate or a container
    stop): the signal handler's exception is swallowed and this RuntimeError raised instead."""
    return isinstance(error, duckdb.InterruptException) or (
        isinstance(error, RuntimeError) and str(error) == "Query interrupted"
    )


TERMINATED = (
    "the run was terminated (Terminate in the UI, or SIGTERM to its process) while this step ran;"
    " not retried. Each table is written in one transaction: the last good tables stay."
)


@contextmanager
def interrupts_end_the_run() -> Iterator[None]:
    """A step stopped by Terminate or SIGTERM fails without retries.

    Dagster turns SIGTERM into an interrupt, and its retry policy retries an interrupted step;
    inside a DuckDB statement the interrupt even becomes a plain "Query interrupted" error. Either
    way the step ran again and the terminated run went on to succeed.
    """
    try:
        yield
    except (dg.DagsterExecutionInterruptedError, KeyboardInterrupt):
        raise dg.Failure(description=TERMINATED, allow_retries=False) from None
    except (duckdb.InterruptException, RuntimeError) as error:
        if not _interrupted(error):
            raise
        raise dg.Failure(description=TERMINATED, allow_retries=False) from None


@contextmanager
def reported_as_failure() -> Iterator[None]:
    """Turn a `PlatformError` into a `dg.Failure` with its words, retried only if it may pass.

    Any other exception is left as it is (an interrupted statement aside): the retry policy
    treats it as transient.
    """
    try:
        with interrupts_end_the_run():
            yield
    except PlatformError as error:
        raise dg.Failure(description=error.description, allow_retries=error.retryable) from None


def require_input(context: dg.InputContext, connection: duckdb.DuckDBPyConnection,
                  relation: str, name: str) -> None:
    """An input whose table was never written (the model trained, or one table refreshed, on a new
    warehouse) fails at once, saying what to run: no retry five minutes on can make it appear."""
    try:
        connection.execute(f"SELECT * FROM {relation} LIMIT 0")
    except duckdb.CatalogException:
        raise dg.Failure(
            description=f"{name} does not exist yet in this warehouse: materialize"
                        f" {context.asset_key.to_user_string()} (and what it is built from)"
                        " first", allow_retries=False) from None
